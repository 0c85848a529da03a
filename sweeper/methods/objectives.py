"""Forget objectives: what is *ascended* on the forget set, orthogonal to the combination rule.

An objective maps the per-sequence answer log-probabilities of a forget batch to per-sequence
contributions; the loop sums them over all workers and divides by the global count of the objective's
unit ("tokens" or "sequences"), so the value is exact under any sharding.

* ``nll`` (default): L_F = mean token negative log-likelihood; ascending it is gradient ascent.
* ``npo`` (the paper's Eq. 9, Zhang et al. 2024): L_NPO = -(2/beta) E_F[log sigmoid(-beta log(pi/pi_ref))]
  with sequence log-probabilities; the ascended objective is -L_NPO. pi_ref's log-probabilities come
  from the No-unlearn target, computed once before unlearning and cached (no second model in memory).

Usage::

    obj = get_objective("npo")
    values = obj.fn(seq_logprob, ref_logprob, beta=0.1)   # tensor [B], summed then / n_sequences
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ForgetObjective:
    name: str
    unit: str  # "tokens" or "sequences": the global count the summed values are divided by
    needs_reference: bool
    fn: Callable[..., torch.Tensor]

    def params(self) -> list[str]:
        return [p.name for p in inspect.signature(self.fn).parameters.values() if p.kind == p.KEYWORD_ONLY]


_OBJECTIVES: dict[str, ForgetObjective] = {}


def forget_objective(name: str, *, unit: str, needs_reference: bool = False):
    """Register ``fn(seq_logprob, ref_logprob, **params) -> per-sequence values`` under ``name``."""
    def register(fn):
        _OBJECTIVES[name] = ForgetObjective(name, unit, needs_reference, fn)
        return fn
    return register


@forget_objective("nll", unit="tokens")
def nll(seq_logprob: torch.Tensor, ref_logprob: torch.Tensor | None) -> torch.Tensor:
    """Summed token NLL per sequence; divided by the global token count it is the mean token NLL."""
    return -seq_logprob


@forget_objective("npo", unit="sequences", needs_reference=True)
def npo(seq_logprob: torch.Tensor, ref_logprob: torch.Tensor, *, beta: float = 0.1) -> torch.Tensor:
    """(2/beta) log sigmoid(-beta (log pi - log pi_ref)) per sequence, i.e. -L_NPO before the mean."""
    return (2.0 / beta) * F.logsigmoid(-beta * (seq_logprob - ref_logprob))


def known_objectives() -> list[str]:
    return sorted(_OBJECTIVES)


def objective_problem(name: str, params: dict) -> str | None:
    """One sentence saying what is wrong with ``name``/``params``, or None."""
    if name not in _OBJECTIVES:
        close = difflib.get_close_matches(name, _OBJECTIVES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown forget_loss {name!r}; known: {', '.join(known_objectives())}{hint}"
    allowed = _OBJECTIVES[name].params()
    for key, value in params.items():
        if key not in allowed:
            return f"forget_loss {name!r} has no parameter {key!r}; its parameters are: {', '.join(allowed) or 'none'}"
        if key == "beta" and not (isinstance(value, (int, float)) and value > 0):
            return f"forget_loss {name!r}: beta = {value!r} must be a positive number"
    return None


def get_objective(name: str) -> ForgetObjective:
    problem = objective_problem(name, {})
    if problem:
        raise ValueError(problem)
    return _OBJECTIVES[name]
