"""Token-level forget objectives: weighted ascent (WGA, SatImp), CE-U and UNDIAL's self-distillation.

All are sums over a sequence's answer tokens (unit ``tokens``: the loop divides by the global count), and
all are ASCENDED: a method whose published loss is descended (CE-U, UNDIAL) enters as its negative::

    get_objective("wga").fn(f, beta=1.0)   # f from run_forward(..., needs={"tokens"})

* ``wga`` (Wang et al. 2025): weighted gradient ascent, token weight p(y_t)^beta (detached), beta 1.
* ``satimp`` (Yang et al. 2025): weight p^beta1 (1 - p)^beta2 (detached), beta1 5, beta2 1.
* ``ce_u`` (Yang 2025): cross-entropy of the model against its own (detached) distribution with the
  true token removed and the rest renormalised (its logit set to -inf).
* ``undial`` (Dong et al. 2024): KL from the target's distribution with the true token's logit lowered
  by beta = 10 to the model's; the target's logits are cached at the trial's start.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .objective_registry import forget_objective, positive

_NONNEG = (0.0, math.inf)


def _weighted_nll(f, weight: torch.Tensor) -> torch.Tensor:
    """sum_t weight_t * NLL_t per sequence (token_logprob is 0 off the answer)."""
    return -(weight.detach() * f.token_logprob).sum(-1)


@forget_objective("wga", unit="tokens", needs=("tokens",), bounds={"beta": _NONNEG})
def wga(f, *, beta: float = 1.0) -> torch.Tensor:
    """WGA: token NLL weighted by p(y_t)^beta (no gradient through the weight), summed per sequence."""
    return _weighted_nll(f, f.token_logprob.exp() ** beta)


@forget_objective("satimp", unit="tokens", needs=("tokens",), bounds={"beta1": _NONNEG, "beta2": _NONNEG})
def satimp(f, *, beta1: float = 5.0, beta2: float = 1.0) -> torch.Tensor:
    """SatImp: token NLL weighted by p^beta1 (1 - p)^beta2 (no gradient through the weight)."""
    p = f.token_logprob.exp()
    return _weighted_nll(f, p ** beta1 * (1 - p) ** beta2)


@forget_objective("ce_u", unit="tokens", needs=("logits",))
def ce_u(f) -> torch.Tensor:
    """CE-U: -CE(q, p) with q = softmax(logits, true token's logit = -inf), q detached."""
    logits, labels = f.packed(f.logits), f.packed(f.labels)
    removed = logits.detach().scatter(-1, labels.unsqueeze(-1), float("-inf"))
    q = torch.softmax(removed, dim=-1)
    ce = -(q * torch.log_softmax(logits, dim=-1)).sum(-1)
    return -f.per_sequence(ce)


@forget_objective("undial", unit="tokens", needs=("logits", "target_logits"), bounds=positive("beta"))
def undial(f, *, beta: float = 10.0) -> torch.Tensor:
    """UNDIAL: -KL(q || p) with q = softmax(target logits - beta * onehot(true token)).

    KL and the published cross-entropy differ by q's entropy, a constant: the same gradient, and at the
    target the value is the KL of the adjusted distribution from the target's."""
    logits, labels = f.packed(f.logits), f.packed(f.labels).unsqueeze(-1)
    target = f.target_logits.to(logits.dtype)
    adjusted = target.scatter(-1, labels, target.gather(-1, labels) - beta)
    log_q = torch.log_softmax(adjusted, dim=-1)
    kl = F.kl_div(torch.log_softmax(logits, dim=-1), log_q, log_target=True, reduction="none").sum(-1)
    return -f.per_sequence(kl)
