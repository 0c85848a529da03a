"""The registry of combination rules: how a step's two gradients are weighted.

Every method updates along ``g = w_R * g_R - w_F * g_F`` (the paper's Eq. 5 up to scale), where
``g_R`` is the gradient of the retain loss and ``g_F`` the gradient of the ascended forget objective.
A rule maps the step's scalars (and its own per-trial state) to ``(w_R, w_F)``::

    from sweeper.methods import StepScalars, make_rule

    rule = make_rule("gdiff", {"c": 0.7}, seed=0)
    w = rule.weights(StepScalars(step=1, loss_retain=2.0, loss_forget=3.0,
                                 sq_norm_retain=4.0, sq_norm_forget=9.0, dot=1.0))
    w.w_retain, w.w_forget, w.c          # 0.7, 0.3, 0.7
    ckpt = rule.state_dict()             # JSON-serialisable; rule.load_state_dict(ckpt) on resume

A new rule is one decorated function; its keyword-only parameters (all with defaults) are its
grid parameters, checked by ``validate_rule_params`` before any training starts::

    @combination_rule("half_ngdiff", summary="NGDiff at half the step", bounds={"eps": (0.0, 1.0)})
    def half_ngdiff(s: StepScalars, state: dict, *, eps: float = 1e-12) -> tuple[float, float]:
        return 0.5 / (s.norm_retain + eps), 0.5 / (s.norm_forget + eps)

A grid file's ``plugins: [mypkg.my_methods]`` is passed to ``import_plugins`` so such modules
register before the grid is validated.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

RuleFn = Callable[..., tuple[float, float]]


@dataclass(frozen=True)
class StepScalars:
    """The five numbers of one step every rule may use (norms are global over workers)."""

    step: int  # 1-based step index
    loss_retain: float  # L_R
    loss_forget: float  # L_F, the forget objective's value
    sq_norm_retain: float  # ||g_R||^2
    sq_norm_forget: float  # ||g_F||^2
    dot: float  # g_R . g_F

    @property
    def norm_retain(self) -> float:
        # max(): an all-reduced sum of float shards is never meaningfully negative, but sqrt must not fail
        return math.sqrt(max(self.sq_norm_retain, 0.0))

    @property
    def norm_forget(self) -> float:
        return math.sqrt(max(self.sq_norm_forget, 0.0))


@dataclass(frozen=True)
class Weights:
    """The weights of ``g = w_retain * g_R - w_forget * g_F``."""

    w_retain: float
    w_forget: float

    @property
    def c(self) -> float:
        """The paper's c_t = w_R / (w_R + w_F); nan when the weights sum to 0 (e.g. both 0)."""
        total = self.w_retain + self.w_forget
        return self.w_retain / total if total != 0 else math.nan


@dataclass(frozen=True)
class _Spec:
    fn: RuleFn
    summary: str
    defaults: dict  # keyword-only parameter -> default
    bounds: dict = field(default_factory=dict)  # parameter -> (lo, hi), inclusive


_RULES: dict[str, _Spec] = {}


class UnknownMethodError(ValueError):
    """A method name that no registered rule has."""


def combination_rule(name: str, *, summary: str = "", bounds: dict | None = None) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn(s, state, *, params...) -> (w_R, w_F)`` under ``name``.

    ``summary`` defaults to the first line of the docstring; ``bounds`` maps parameter names to
    inclusive ``(lo, hi)`` ranges that ``validate_rule_params`` enforces.
    """

    def register(fn: RuleFn) -> RuleFn:
        defaults = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not p.KEYWORD_ONLY:
                continue
            if p.default is p.empty:
                # Grid files may omit any parameter, so each one needs a default.
                raise TypeError(f"method {name!r}: parameter {p.name!r} needs a default value")
            defaults[p.name] = p.default
        unknown = sorted(set(bounds or {}) - set(defaults))
        if unknown:
            raise TypeError(f"method {name!r}: bounds given for {unknown}, which are not its parameters")
        old = _RULES.get(name)
        # Re-importing (or reloading) the same module is fine; a second definition elsewhere is a clash.
        if old is not None and _where(old.fn) != _where(fn):
            raise ValueError(f"method {name!r} is already registered by {_where(old.fn)}")
        text = summary or (inspect.getdoc(fn) or "").partition("\n")[0]
        _RULES[name] = _Spec(fn, text, defaults, dict(bounds or {}))
        return fn

    return register


def _where(fn: RuleFn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def known_rules() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_RULES)


def rule_summaries() -> dict[str, str]:
    """Method name -> one-line summary, for listings and the README."""
    return {name: _RULES[name].summary for name in known_rules()}


def _unknown_message(name: str) -> str:
    msg = f"unknown method {name!r}; known methods: {', '.join(known_rules())}"
    close = difflib.get_close_matches(name, known_rules(), n=1)
    return msg + (f"; did you mean {close[0]!r}?" if close else "")


def validate_rule_params(name: str, params: dict) -> list[str]:
    """Every problem with ``params`` for method ``name``, one sentence each; [] when valid."""
    spec = _RULES.get(name)
    if spec is None:
        return [_unknown_message(name)]
    problems = []
    for key, value in params.items():
        if key not in spec.defaults:
            allowed = ", ".join(spec.defaults) or "(none)"
            problems.append(f"method {name!r} has no parameter {key!r}; its parameters are: {allowed}")
            continue
        default = spec.defaults[key]
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if isinstance(default, numbers.Real) and not isinstance(default, bool) and not is_number:
            problems.append(f"method {name!r}: {key} = {value!r} is not a number")
            continue
        if key in spec.bounds:
            lo, hi = spec.bounds[key]
            if not lo <= value <= hi:  # also rejects nan
                problems.append(f"method {name!r}: {key} = {value!r} is outside [{lo:g}, {hi:g}]")
    return problems


class CombinationRule:
    """One trial's instance of a rule: resolved parameters plus checkpointable state."""

    def __init__(self, name: str, params: dict, state: dict):
        self.name = name
        self.params = params
        self._fn = _RULES[name].fn
        self._state = state

    def weights(self, s: StepScalars) -> Weights:
        """The step's weights. Stateful rules advance their state, so call this once per step."""
        w_retain, w_forget = self._fn(s, self._state, **self.params)
        return Weights(float(w_retain), float(w_forget))

    def state_dict(self) -> dict:
        return copy.deepcopy(self._state)

    def load_state_dict(self, d: dict) -> None:
        self._state = copy.deepcopy(d)

    def __repr__(self) -> str:
        return f"CombinationRule({self.name!r}, {self.params!r})"


def make_rule(name: str, params: dict | None = None, seed: int = 0) -> CombinationRule:
    """Build the rule ``name`` with ``params`` over its defaults; ``seed`` goes to ``state["seed"]``."""
    if name not in _RULES:
        raise UnknownMethodError(_unknown_message(name))
    params = dict(params or {})
    problems = validate_rule_params(name, params)
    if problems:
        raise ValueError("; ".join(problems))
    # numpy's SeedSequence (used by rlw) accepts only non-negative integers.
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"method {name!r}: seed must be a non-negative integer, got {seed!r}")
    return CombinationRule(name, {**_RULES[name].defaults, **params}, {"seed": int(seed)})


def import_plugins(modules: list[str]) -> None:
    """Import each module so the rules it decorates register; a missing one is a ValueError."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise ValueError(
                f"plugin module {module!r} could not be imported ({e}); is it installed or on PYTHONPATH?"
            ) from e
