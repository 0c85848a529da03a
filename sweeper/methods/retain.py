"""Retain losses: what is DESCENDED on the retain set (grid key ``retain_loss``, ``nll`` by default).

* ``nll``: mean answer-token NLL (the paper's L_R);
* ``kl``: mean over answer tokens of KL(p_target || p_model), the target's logits cached at the trial's
  start for exactly the retain rows the trial visits (no second model in memory);
* ``rmu``: RMU's hidden-state distance to the target's (``sweeper.methods.rmu``).

    get_objective("kl", side="retain").fn(f)   # f with logits and target_logits
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .objective_registry import retain_objective


@retain_objective("nll", unit="tokens")
def nll(f) -> torch.Tensor:
    """Summed token NLL per sequence; / the global token count it is the paper's L_R."""
    return -f.seq_logprob


@retain_objective("kl", unit="tokens", needs=("logits", "target_logits"))
def kl(f) -> torch.Tensor:
    """sum over answer tokens of KL(p_target || p_model) per sequence."""
    log_p = torch.log_softmax(f.packed(f.logits), dim=-1)
    log_t = torch.log_softmax(f.target_logits.to(f.logits.dtype), dim=-1)
    return f.per_sequence(F.kl_div(log_p, log_t, log_target=True, reduction="none").sum(-1))
