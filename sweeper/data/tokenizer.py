"""A small byte-level BPE tokenizer trained offline, for the tiny models of the demo grids.

    from sweeper.data.tokenizer import train_tokenizer
    tok = train_tokenizer(texts, vocab_size=1024)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text            # byte-level: every string round-trips exactly
    tok.save_pretrained("out/tok")             # AutoTokenizer.from_pretrained("out/tok") loads it back

Special tokens: ``<|pad|>`` (id 0, the pad token) and ``<|eos|>`` (id 1, eos and bos, as in GPT-2).
Training is deterministic: the same texts and vocab size give the same vocabulary and merges.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS = "<|pad|>", "<|eos|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, padding_side: str = "right",
                    model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r} is not allowed; allowed: left, right.")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"vocab_size={vocab_size} is too small; allowed: >= {len(alphabet) + 2} "
                         "(256 byte symbols plus the two special tokens).")
    tok = Tokenizer(models.BPE())
    # No prefix space: it would make decode(encode(x)) differ from x by a leading space.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=EOS,
        padding_side=padding_side, model_max_length=model_max_length,
        # transformers would otherwise "clean up" spaces before punctuation when decoding
        clean_up_tokenization_spaces=False,
    )
