"""Models: offline tiny twins of the paper's five architectures, and real checkpoints by id or folder.

A model is named in a grid file by one of:

* ``tiny-gpt2``, ``tiny-phi``, ``tiny-falcon``, ``tiny-llama``, ``tiny-mistral``: built from a
  transformers config with random weights (a few hundred thousand parameters), fully offline;
* a Hugging Face id (``microsoft/phi-1_5``, ``tiiuae/falcon-rw-1b``, ``openai-community/gpt2-xl``,
  ``meta-llama/Llama-2-7b-hf``, ``mistralai/Mistral-7B-v0.1``) or a local folder: loaded with
  ``from_pretrained`` from safetensors only, ``trust_remote_code`` off unless the grid turns it on.

Usage::

    model = build_model("tiny-gpt2", vocab_size=len(tokenizer), seed=0)
    model = build_model("microsoft/phi-1_5", dtype="bfloat16")          # where the hub is reachable
"""
from __future__ import annotations

import contextlib
import os

import torch
import transformers

# The sweeper's own lines say what a target or trial is doing; transformers' per-load and per-save
# progress bars ("Loading weights", "Writing model shards") and advice only repeat it, in every Ray worker
# and in-process alike. SWEEPER_VERBOSE=1 keeps them.
if not os.environ.get("SWEEPER_VERBOSE"):
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

# Shapes shared by all tiny twins: large enough to memorise a few hundred QA pairs in seconds on a CPU,
# small enough that a step costs milliseconds. Dropout is 0 so train and eval forward passes agree
# (AutoLR's probes can then reuse the training loss at theta).
_TINY = dict(hidden=128, layers=2, heads=4, intermediate=256, positions=256)

#: The paper's five models (Section 5.1) and the architecture of each one's tiny twin.
PAPER_MODELS = {
    "microsoft/phi-1_5": "tiny-phi",
    "tiiuae/falcon-rw-1b": "tiny-falcon",
    "openai-community/gpt2-xl": "tiny-gpt2",
    "meta-llama/Llama-2-7b-hf": "tiny-llama",
    "mistralai/Mistral-7B-v0.1": "tiny-mistral",
}


def _tiny_config(arch: str, vocab_size: int, pad_id: int, eos_id: int,
                 positions: int | None = None) -> transformers.PretrainedConfig:
    h, n, a, i, p = (_TINY[k] for k in ("hidden", "layers", "heads", "intermediate", "positions"))
    p = positions or p
    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=h, n_layer=n, n_head=a, n_inner=i, n_positions=p,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if arch == "phi":
        return transformers.PhiConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                      intermediate_size=i, max_position_embeddings=p, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attention_dropout=0.0, **common)
    if arch == "falcon":
        return transformers.FalconConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                         max_position_embeddings=p, hidden_dropout=0.0, attention_dropout=0.0,
                                         new_decoder_architecture=False, multi_query=True, alibi=False,
                                         parallel_attn=True, **common)
    if arch in ("llama", "mistral"):
        cls = transformers.LlamaConfig if arch == "llama" else transformers.MistralConfig
        return cls(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, num_key_value_heads=a,
                   intermediate_size=i, max_position_embeddings=p, tie_word_embeddings=True, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; allowed: gpt2, phi, falcon, llama, mistral")


TINY_MODELS = tuple(f"tiny-{a}" for a in ("gpt2", "phi", "falcon", "llama", "mistral"))


def tiny_layers(name: str) -> int | None:
    """The number of transformer blocks of tiny twin ``name`` (None for other models: known only once loaded)."""
    return _TINY["layers"] if is_tiny(name) else None


def is_tiny(name: str) -> bool:
    return name in TINY_MODELS


def model_problem(name: str) -> str | None:
    """One sentence saying why ``name`` cannot be a model, or None when it can (no loading, no network)."""
    if is_tiny(name) or os.path.isdir(name) or name in PAPER_MODELS:
        return None
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        return None  # looks like a hub id; whether it exists is only known where the hub is reachable
    return (f"model {name!r} is neither a tiny twin ({', '.join(TINY_MODELS)}), nor an existing local "
            f"folder, nor a Hugging Face id of the form org/name")


def build_model(name: str, *, vocab_size: int | None = None, pad_id: int = 0, eos_id: int = 1,
                seed: int = 0, dtype: str = "float32", trust_remote_code: bool = False,
                attn_implementation: str | None = None, positions: int | None = None) -> transformers.PreTrainedModel:
    """A causal LM: a tiny twin built from its config (``positions``: its context, 256 by default), or
    ``from_pretrained`` (safetensors only)."""
    torch_dtype = getattr(torch, dtype)
    if is_tiny(name):
        if vocab_size is None:
            raise ValueError(f"model {name!r} is built from a config and needs the tokenizer's vocab_size")
        torch.manual_seed(seed)
        config = _tiny_config(name.removeprefix("tiny-"), vocab_size, pad_id, eos_id, positions)
        return transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    kwargs = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return transformers.AutoModelForCausalLM.from_pretrained(name, **kwargs)


def compute_precision(dtype: str, device) -> contextlib.AbstractContextManager:
    """Mixed precision for a grid's ``dtype``: parameters, gradients and optimizer state stay float32 and
    the forward pass runs under ``torch.autocast`` in ``dtype`` (bfloat16/float16).

    Why not cast the model: an Adam step is ~lr per weight, below bf16's resolution (8 bits of mantissa)
    for most weights at the paper's lr 1e-5, so a pure-bf16 model mostly does not move, and AutoLR's
    probes at theta +- xi*d would measure rounding. Run under this context::

        with compute_precision("bfloat16", "cuda"):
            loss = -sequence_logprobs(model, batch)[0].sum()
    """
    if dtype == "float32":
        return contextlib.nullcontext()
    # cache_enabled=False: autocast otherwise keeps each weight's bf16 copy until the outermost block
    # exits, so a block around a training loop would keep computing with the weights of step 1 (the
    # optimizer and AutoLR's probes change them in place). One cast per forward pass is the price.
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, dtype), cache_enabled=False)


def context_length(model_or_config) -> int | None:
    """The positions a causal LM can attend over (``n_positions`` / ``max_position_embeddings``), or None
    when its config does not say. Accepts a model or a config."""
    cfg = getattr(model_or_config, "config", model_or_config)
    for attr in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
