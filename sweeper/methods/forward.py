"""One forward pass, computing only what an objective needs (``objective_registry.NEEDS``).

Token-level fields are aligned with the causal shift: position t of ``token_logprob``, ``logits``,
``mask``, ``hidden`` and the target's values is the prediction of label t + 1, so every token-level
objective sums over the same answer positions and divides by the same global token count as NLL::

    f = run_forward(model, batch, {"sequence", "tokens"}, logprobs=task.logprobs)
    f.seq_logprob, f.n_tokens          # [B], [B]: what task.logprobs returns (every task)
    f.token_logprob, f.mask            # [B, T-1]: 0 / False outside the answer (causal LMs only)

When only ``sequence`` (and cached ``reference``) is needed, the task's own ``logprobs`` runs, exactly
as before objectives could ask for more, so NLL and NPO keep their numbers and vision tasks work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sweeper.metrics.likelihood import IGNORE_INDEX, forward_logits

#: Needs that require the causal-LM path (logits over the vocabulary).
TOKEN_NEEDS = frozenset({"tokens", "logits", "hidden", "target_logits", "target_hidden"})
#: RMU's published layer; models with at most this many blocks use their middle block instead.
DEFAULT_LAYER = 7


@dataclass
class Forward:
    """What one batch's forward pass gave; fields an objective did not ask for stay None."""

    seq_logprob: torch.Tensor                   # [B] summed answer log-probs
    n_tokens: torch.Tensor                      # [B] answer tokens (counts of the shifted labels)
    token_logprob: torch.Tensor | None = None   # [B, T-1], 0 outside the mask
    mask: torch.Tensor | None = None            # [B, T-1] bool, the answer positions
    labels: torch.Tensor | None = None          # [B, T-1] shifted labels, -100 replaced by 0
    logits: torch.Tensor | None = None          # [B, T-1, V] float32
    hidden: torch.Tensor | None = None          # [B, T-1, d] float32, output of block ``layer``
    ref_logprob: torch.Tensor | None = None     # [B] stage 1's cached pi_ref log-probs (NPO)
    target_logits: torch.Tensor | None = None   # [N, V] the target's, at the N answer positions (packed)
    target_hidden: torch.Tensor | None = None   # [N, d] the target's, at the N answer positions (packed)
    alt: "Forward | None" = None                # the alternate ("I don't know") answers' pass
    seed: int = 0                               # the trial's seed (RMU's random direction)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T-1, ...] -> [N, ...]: the answer positions only, row by row (the target values' order).
        Objectives over the vocabulary work on these N rows, not on every padded position."""
        return x[self.mask]

    def per_sequence(self, per_token: torch.Tensor) -> torch.Tensor:
        """[N] values at the answer positions -> [B] sums per sequence."""
        rows = self.mask.nonzero(as_tuple=True)[0]
        return torch.zeros(self.mask.shape[0], dtype=per_token.dtype, device=per_token.device).index_add(0, rows, per_token)


def blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's transformer blocks: the ModuleList whose length is the config's layer count."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"{type(model).__name__} has no list of {n} transformer blocks to take a layer's "
                     f"hidden states from; objectives that need 'hidden' work with causal LMs only")


def resolve_layer(layer, n_blocks: int) -> int:
    """``"auto"``: block 7 (RMU's published layer) when the model has more than 7 blocks, else its
    middle block ``n_blocks // 2`` (the tiny twins' 2 blocks: block 1). An explicit index must exist."""
    if layer == "auto":
        return DEFAULT_LAYER if n_blocks > DEFAULT_LAYER else n_blocks // 2
    if not isinstance(layer, int) or not 0 <= layer < n_blocks:
        raise ValueError(f"layer = {layer!r} is not a block of this model, which has {n_blocks} "
                         f"(0..{n_blocks - 1}); use one of those or 'auto'")
    return layer


def run_forward(model, batch: dict, needs, *, logprobs, layer="auto") -> Forward:
    """The fields ``needs`` asks for, from one forward pass of ``model`` on ``batch``.

    Differentiable; wrap in ``torch.no_grad()`` for cached values. ``logprobs`` is the task's
    ``(model, batch) -> (seq_logprob, n_tokens)``, used when nothing token-level is needed.
    """
    if not set(needs) & TOKEN_NEEDS:
        seq, n = logprobs(model, batch)
        return Forward(seq_logprob=seq, n_tokens=n)
    captured = {}
    handle = None
    if "hidden" in needs or "target_hidden" in needs:
        block_list = blocks(model)
        block = block_list[resolve_layer(layer, len(block_list))]
        handle = block.register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    try:
        logits = forward_logits(model, batch["input_ids"], batch["attention_mask"])
    finally:
        if handle is not None:
            handle.remove()
    # The same float32 cross-entropy as sweeper.metrics.likelihood.sequence_logprobs.
    shift_logits, shift_labels = logits[:, :-1, :].float(), batch["labels"][:, 1:]
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    mask = shift_labels != IGNORE_INDEX
    f = Forward(seq_logprob=-nll.sum(-1), n_tokens=mask.sum(-1), token_logprob=-nll, mask=mask,
                labels=shift_labels.clamp(min=0), logits=shift_logits)
    if "h" in captured:
        f.hidden = captured["h"][:, :-1, :].float()
    return f
