"""Refusal objectives: the forget rows' answers replaced by "I don't know"-style refusals.

The loop builds the alternate batch from the same forget rows with each answer replaced by a refusal
(``sweeper.data.refusals``) and runs its forward pass as ``f.alt``; both are ASCENDED objectives::

    get_objective("idknll").fn(f)             # log-prob of the refusal, / its global token count
    get_objective("idkdpo").fn(f, beta=0.1)   # DPO: refusal preferred over the true answer

* ``idknll``: the refusal's NLL, descended (so its log-likelihood is ascended).
* ``idkdpo`` (Rafailov et al. 2023 as used by TOFU): -L_DPO = (2/beta) log sigmoid(beta ((log pi(idk) -
  log pi_ref(idk)) - (log pi(y) - log pi_ref(y)))), beta 0.1; pi_ref is the No-unlearn target, whose
  log-probs are cached (the true answer's by stage 1, the refusal's at the trial's start).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .objective_registry import forget_objective, positive


@forget_objective("idknll", unit="alternate_tokens", needs=("alternate",), grad_answer=False)
def idknll(f) -> torch.Tensor:
    """IdkNLL: summed log-prob of the refusal per sequence (minus its NLL), / the refusals' tokens."""
    return f.alt.seq_logprob


@forget_objective("idkdpo", unit="sequences", needs=("alternate", "reference", "target_alternate"),
                  bounds=positive("beta"))
def idkdpo(f, *, beta: float = 0.1) -> torch.Tensor:
    """IdkDPO: (2/beta) log sigmoid(beta (refusal's log-ratio - true answer's log-ratio)), i.e. -L_DPO."""
    preferred = f.alt.seq_logprob - f.alt.ref_logprob
    rejected = f.seq_logprob - f.ref_logprob
    return (2.0 / beta) * F.logsigmoid(beta * (preferred - rejected))
