"""Greedy decoding of continuations, batched and one prompt at a time.

Both ROUGE-based benchmarks (TOFU's ROUGE, MUSE's VerbMem / KnowMem) score the *greedy*
continuation of a prompt: at every step the arg-max token, no sampling, no beams, no repetition
penalty. A continuation ends at the first EOS token, after ``max_new_tokens`` tokens, or, if
``stop_strings`` are given, just before the first occurrence of any of them in the decoded text
(MUSE's Knowmem cuts at ``"\\n\\n"``, ``"\\nQuestion"`` and ``"Question:"``).

``greedy_generate`` batches prompts with LEFT padding so every row's next token sits in the last
column. That is only correct if the padded model sees the same positions as the unpadded one:
``transformers.generate`` (5.x) derives ``position_ids`` from ``attention_mask`` (cumsum - 1)
for models whose ``forward`` takes ``position_ids`` (GPT-2, Llama, ...), and the tests check the
batched output equals ``greedy_generate_sequential`` token for token (in float32; in bf16/fp16
the padded and unpadded matmuls round differently, so a near-tie arg-max can rarely flip).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

#: MUSE's Knowmem answer stops (``get_prefix_before_words_occur`` in MUSE's eval code).
KNOWMEM_STOP_STRINGS: list[str] = ["\n\n", "\nQuestion", "Question:"]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (no dropout) for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def eos_token_ids(model, tokenizer) -> list[int]:
    """The EOS ids a continuation stops at: the tokenizer's plus the model's generation config's."""
    ids: list[int] = []
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in (tokenizer.eos_token_id, cfg_eos):
        if x is None:
            continue
        for i in x if isinstance(x, (list, tuple)) else [x]:
            if int(i) not in ids:
                ids.append(int(i))
    return ids


def pad_token_id(tokenizer, eos_ids: Sequence[int]) -> int:
    """The id used for padding: the tokenizer's pad token, else EOS, else 0 (always masked out)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(eos_ids[0]) if eos_ids else 0


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] | None) -> str:
    """``text`` up to (excluding) the earliest occurrence of any stop string."""
    for s in stop_strings or ():
        text = text.split(s, 1)[0]
    return text


class _StopStringCriteria(StoppingCriteria):
    """Per-row stop once the decoded continuation contains a stop string.

    Only saves compute: the text is cut again afterwards, so stopping here never changes the
    result (the prefix before a stop string does not depend on later tokens).
    """

    def __init__(self, tokenizer, prompt_len: int, stop_strings: Sequence[str]):
        self.tokenizer, self.prompt_len, self.stop_strings = tokenizer, prompt_len, list(stop_strings)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        done = [any(s in t for s in self.stop_strings) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _continuation_text(tokens: Sequence[int], tokenizer, eos_ids: Sequence[int], stop_strings) -> str:
    """Decode generated ids: cut at the first EOS, drop special tokens, cut at stop strings."""
    tokens = list(tokens)
    eos = set(eos_ids)
    for j, t in enumerate(tokens):
        if t in eos:
            tokens = tokens[:j]
            break
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return cut_at_stop_strings(text, stop_strings)


def _encode(tokenizer, prompts: Sequence[str | list[int]]) -> list[list[int]]:
    # add_special_tokens=True: the prompt starts with BOS where the tokenizer adds one (Llama),
    # exactly as MUSE's and TOFU's eval code tokenise prompts. A prompt given as token ids (a QA
    # template's prompt, sweeper.data.templates) is used as it is.
    encoded = [list(p) if isinstance(p, list) else tokenizer(p, add_special_tokens=True)["input_ids"]
               for p in prompts]
    for p, ids in zip(prompts, encoded):
        if not ids:
            raise ValueError(f"prompt {p!r} tokenises to no tokens; nothing to condition on")
    return encoded


def new_token_budget(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """``max_new_tokens``, lowered so that prompt + continuation stay within the model's context (a GPT-2
    asked for position 1025 fails deep inside its embedding); one sentence when nothing fits."""
    from sweeper.models.language import context_length
    context = context_length(model)
    if context is None:
        return max_new_tokens
    if prompt_tokens >= context:
        from sweeper.data.templates import RowTooLong
        raise RowTooLong(f"a prompt of {prompt_tokens} tokens leaves no room to generate within the model's "
                         f"{context}-token context; lower the data's max_length")
    return min(max_new_tokens, context - prompt_tokens)


def _generate(model, tokenizer, input_ids, attention_mask, max_new_tokens, eos_ids, pad_id, stop_strings):
    max_new_tokens = new_token_budget(model, input_ids.shape[1], max_new_tokens)
    criteria = None
    if stop_strings:
        criteria = StoppingCriteriaList([_StopStringCriteria(tokenizer, input_ids.shape[1], stop_strings)])
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        # Pure greedy arg-max whatever the checkpoint's generation_config says (explicit kwargs
        # take priority over it): no sampling, no beams, no repetition penalties.
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids) or None,
        stopping_criteria=criteria,
    )
    return out[:, input_ids.shape[1] :].tolist()


def greedy_generate(
    model,
    tokenizer,
    prompts: list[str] | list[list[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    stop_strings: list[str] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (continuation text only), computed in left-padded batches.

    Each prompt is tokenised on its own (with the tokenizer's special tokens) unless it is given as
    token ids, prompts of similar
    length are batched together (the output keeps the input order), padded on the left by hand
    (so the tokenizer, including its ``padding_side``, is never modified), and decoded with
    ``model.generate(do_sample=False, use_cache=True)``. The model is put in eval mode for the call
    and restored afterwards. Returns the same strings as ``greedy_generate_sequential``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    encoded = _encode(tokenizer, prompts)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, eos_ids)
    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch (less padding), and a too-large batch fails
    # on the first one rather than after an hour.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[str | None] = [None] * len(prompts)
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(encoded[i])
                input_ids[row, width - n :] = torch.tensor(encoded[i], dtype=torch.long)
                attention_mask[row, width - n :] = 1
            new = _generate(
                model, tokenizer, input_ids.to(device), attention_mask.to(device),
                max_new_tokens, eos_ids, pad_id, stop_strings,
            )
            for row, i in enumerate(idx):
                results[i] = _continuation_text(new[row], tokenizer, eos_ids, stop_strings)
    return results  # type: ignore[return-value]


def greedy_generate_sequential(
    model,
    tokenizer,
    prompts: list[str] | list[list[int]],
    max_new_tokens: int,
    stop_strings: list[str] | None = None,
) -> list[str]:
    """Reference implementation of ``greedy_generate``: one prompt at a time, no padding.

    This is how MUSE's and TOFU's eval loops generate; used by tests and benchmarks to check and
    time the batched version.
    """
    encoded = _encode(tokenizer, prompts)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, eos_ids)
    device = next(model.parameters()).device
    results = []
    with eval_mode(model), torch.no_grad():
        for ids in encoded:
            input_ids = torch.tensor([ids], dtype=torch.long, device=device)
            new = _generate(
                model, tokenizer, input_ids, torch.ones_like(input_ids),
                max_new_tokens, eos_ids, pad_id, stop_strings,
            )
            results.append(_continuation_text(new[0], tokenizer, eos_ids, stop_strings))
    return results
