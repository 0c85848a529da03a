"""The registry of objectives: what the forget side ascends and what the retain side descends.

An objective is one function ``fn(f: Forward, **params) -> per-sequence values [B]`` that declares
what it needs from the forward pass (``needs``, see ``sweeper.methods.forward.NEEDS``) and the unit
its summed values are divided by (``unit``: the GLOBAL count of answer ``tokens``, of ``sequences``,
or of the alternate answers' tokens, ``alternate_tokens``), so the value is exact under any sharding.
The loop computes only what ``needs`` names::

    @forget_objective("wga", unit="tokens", needs=("tokens",), bounds={"beta": (0.0, math.inf)})
    def wga(f, *, beta: float = 1.0):
        w = f.token_logprob.detach().exp() ** beta
        return -(w * f.token_logprob).sum(-1)          # summed over a sequence's answer tokens

Forget values are ASCENDED (gradient ascent on NLL: the NLL itself; a descended loss such as UNDIAL's
enters as its negative); retain values are DESCENDED (L_R). Both sides combine with every rule.
Every keyword-only parameter needs a default; ``objective_problem`` checks grid values against them.
"""
from __future__ import annotations

import difflib
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch

#: What an objective may ask of the forward pass (the loop computes the union of what is asked):
#: sequence: summed answer log-prob and answer-token count per row (every task);
#: tokens: per-token log-probs and the answer mask; logits: the shifted logits (causal LMs);
#: hidden: one block's output (parameter ``layer``); reference: stage 1's cached sequence log-probs
#: of the forget rows (NPO); target_logits / target_hidden: the target's values at the same positions,
#: cached at the trial's start; alternate: a second answer per forget row ("I don't know"), with its
#: own forward pass; target_alternate: the target's log-prob of that answer, cached at the start.
NEEDS = ("sequence", "tokens", "logits", "hidden", "reference", "target_logits", "target_hidden",
         "alternate", "target_alternate")
UNITS = ("tokens", "sequences", "alternate_tokens")


@dataclass(frozen=True)
class Objective:
    name: str
    side: str   # "forget" (ascended) or "retain" (descended)
    unit: str
    needs: frozenset
    fn: Callable[..., torch.Tensor]
    bounds: dict = field(default_factory=dict)
    #: False when the value does not depend on the batch's own answer (idknll: only the refusal's), so
    #: that pass runs without a graph (its NLL still fills the row's loss column).
    grad_answer: bool = True

    def params(self) -> list[str]:
        return list(self.defaults())

    def defaults(self) -> dict:
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.kind == p.KEYWORD_ONLY}

    @property
    def needs_reference(self) -> bool:
        return "reference" in self.needs

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").partition("\n")[0]


#: Kept for callers of the old name: a forget objective is an Objective with side "forget".
ForgetObjective = Objective
_REGISTRY: dict[str, dict[str, Objective]] = {"forget": {}, "retain": {}}
_KEY = {"forget": "forget_loss", "retain": "retain_loss"}


def _register(side: str, name: str, unit: str, needs, bounds: dict | None, grad_answer: bool = True):
    needs = frozenset(needs) | {"sequence"}   # the NLL column of every step row needs the sequence sums
    if unit not in UNITS or not needs <= set(NEEDS):
        raise TypeError(f"objective {name!r}: unit must be one of {UNITS}, needs a subset of {NEEDS}")

    def register(fn):
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.KEYWORD_ONLY and p.default is p.empty:
                raise TypeError(f"objective {name!r}: parameter {p.name!r} needs a default value")
        _REGISTRY[side][name] = Objective(name, side, unit, needs, fn, dict(bounds or {}), grad_answer)
        return fn
    return register


def forget_objective(name: str, *, unit: str, needs=("sequence",), bounds: dict | None = None,
                     grad_answer: bool = True):
    """Register ``fn(f, **params) -> per-sequence values`` (ascended) as forget loss ``name``."""
    return _register("forget", name, unit, needs, bounds, grad_answer)


def retain_objective(name: str, *, unit: str, needs=("sequence",), bounds: dict | None = None):
    """Register ``fn(f, **params) -> per-sequence values`` (descended) as retain loss ``name``."""
    return _register("retain", name, unit, needs, bounds)


def known_objectives(side: str = "forget") -> list[str]:
    """The registered names in registration order (the built-in nll, npo first)."""
    return list(_REGISTRY[side])


def _value_problem(key: str, where: str, obj: Objective, value) -> str | None:
    default = obj.defaults()[key]
    if key == "layer":   # a block index or "auto" (7, or the middle block of a model with fewer)
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return None
        return f"{where}: layer = {value!r} must be a block index >= 0 or 'auto'"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, numbers.Real) and not is_number:
        return f"{where}: {key} = {value!r} is not a number"
    if key in obj.bounds:
        lo, hi = obj.bounds[key]
        if not lo <= value <= hi:   # also rejects nan
            if (lo, hi) == (math.ulp(0.0), math.inf):
                return f"{where}: {key} = {value!r} must be a positive number"
            return f"{where}: {key} = {value!r} is outside [{lo:g}, {hi:g}]"
    return None


def objective_problem(name: str, params: dict, side: str = "forget") -> str | None:
    """One sentence saying what is wrong with ``name``/``params`` on ``side``, or None."""
    registry, key = _REGISTRY[side], _KEY[side]
    if not isinstance(name, str) or name not in registry:
        close = difflib.get_close_matches(str(name), registry, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {key} {name!r}; known: {', '.join(known_objectives(side))}{hint}"
    obj = registry[name]
    allowed = obj.params()
    for k, value in params.items():
        if k not in allowed:
            return f"{key} {name!r} has no parameter {k!r}; its parameters are: {', '.join(allowed) or 'none'}"
        if (why := _value_problem(k, f"{key} {name!r}", obj, value)):
            return why
    return None


def get_objective(name: str, side: str = "forget") -> Objective:
    problem = objective_problem(name, {}, side)
    if problem:
        raise ValueError(problem)
    return _REGISTRY[side][name]


def positive(*names: str) -> dict:
    """Bounds (0, inf] for ``names``: a shorthand for the decorators' ``bounds``."""
    return {n: (math.ulp(0.0), math.inf) for n in names}
