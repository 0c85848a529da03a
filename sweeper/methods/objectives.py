"""Forget objectives: what is *ascended* on the forget set, orthogonal to the combination rule.

Each objective maps one forward pass (``sweeper.methods.forward.Forward``, holding only what the
objective declared it needs) to per-sequence values; the loop sums them over all workers and divides by
the global count of the objective's unit, so the value is exact under any sharding (the registry and
its rules: ``sweeper.methods.objective_registry``).

* ``nll`` (default): L_F = mean token negative log-likelihood; ascending it is gradient ascent.
* ``npo`` (the paper's Eq. 9, Zhang et al. 2024): L_NPO = -(2/beta) E_F[log sigmoid(-beta log(pi/pi_ref))]
  with sequence log-probabilities; the ascended objective is -L_NPO. pi_ref's log-probabilities come
  from the No-unlearn target, computed once before unlearning and cached (no second model in memory).
* ``simnpo`` (Fan et al. 2024), reference-free and length-normalised, ascended
  gamma (2/beta) log sigmoid(beta (NLL/|y| - delta)); beta 4.5, gamma 0.125, delta 0 as published.
* token-weighted and distillation objectives (``wga``, ``satimp``, ``ce_u``, ``undial``):
  ``sweeper.methods.token_objectives``; refusals (``idknll``, ``idkdpo``): ``sweeper.methods.idk``;
  ``rmu``: ``sweeper.methods.rmu``; retain losses (``nll``, ``kl``, ``rmu``): ``sweeper.methods.retain``.

Usage::

    obj = get_objective("npo")
    values = obj.fn(Forward(seq_logprob, n_tokens, ref_logprob=ref), beta=0.1)   # [B], / n_sequences
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .objective_registry import (  # noqa: F401  (the public API of objectives)
    NEEDS, ForgetObjective, Objective, forget_objective, get_objective, known_objectives, objective_problem,
    positive, retain_objective)


@forget_objective("nll", unit="tokens")
def nll(f) -> torch.Tensor:
    """Summed token NLL per sequence; divided by the global token count it is the mean token NLL."""
    return -f.seq_logprob


@forget_objective("npo", unit="sequences", needs=("reference",), bounds=positive("beta"))
def npo(f, *, beta: float = 0.1) -> torch.Tensor:
    """(2/beta) log sigmoid(-beta (log pi - log pi_ref)) per sequence, i.e. -L_NPO before the mean."""
    return (2.0 / beta) * F.logsigmoid(-beta * (f.seq_logprob - f.ref_logprob))


@forget_objective("simnpo", unit="sequences", bounds={**positive("beta"), "gamma": (0.0, float("inf"))})
def simnpo(f, *, beta: float = 4.5, gamma: float = 0.125, delta: float = 0.0) -> torch.Tensor:
    """SimNPO: gamma (2/beta) log sigmoid(beta (NLL/|y| - delta)) per sequence (-L_SimNPO; no reference).

    NLL/|y| is the sequence's mean answer-token NLL. delta is the paper's margin gamma_paper / beta;
    gamma weighs the forget term as in the field's common framework (gamma L_F + alpha L_R)."""
    mean_nll = -f.seq_logprob / f.n_tokens.clamp(min=1)
    return gamma * (2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta))


# The other objectives register on import (after nll and npo, so messages list those two first).
from . import idk, retain, rmu, token_objectives  # noqa: E402,F401
