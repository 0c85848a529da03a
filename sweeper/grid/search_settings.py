"""A grid file's ``search`` section: its keys and defaults, the metrics' directions, and ranges. No Ray.

Read by grid validation (``sweeper.grid.checks``) and by the front search (``sweeper.front.studies``)::

    settings, problems = search_settings(doc)     # defaults filled in, problems one sentence each
    Range("lr", 1e-4, 1e-2, log=True).value(0.5)  # 0.001
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

KINDS = ("grid", "front")
SAMPLERS = ("gap", "optuna", "gp")
SEARCH_KEYS = {"kind", "budget", "sampler", "objectives", "early_stop", "seed", "initial", "fidelity", "repeatable"}
EARLY_STOP_KEYS = {"min_steps", "margin"}
FIDELITY_KEYS = {"rungs", "keep", "margin"}
#: fidelity: successive halving over the front at the rung steps (sweeper.front.promotion); ``auto`` rungs
#: are the evaluation steps before the last. Off (None) without early stop, whose stop marker it uses.
DEFAULT_SEARCH = {"kind": "grid", "budget": 12, "sampler": "gap", "objectives": ["rouge_forget", "rouge_retain"],
                  "early_stop": {"min_steps": None, "margin": 0.05}, "seed": 0, "initial": 3,
                  "fidelity": {"rungs": "auto", "keep": 0.5, "margin": 0.02}, "repeatable": False}
#: ``repeatable: true`` keeps this many configurations in flight (an integer sets another number).
REPEATABLE_WINDOW = 2

#: Which way each summary metric is better: the two objectives of a front need a known direction.
SENSES = {
    "rouge_forget": "min", "exact_forget": "min", "rouge_f1_forget": "min", "prob_forget": "min",
    "verbmem_forget": "min", "knowmem_forget": "min", "accuracy_forget": "min", "final_loss_retain": "min",
    "rouge_retain": "max", "exact_retain": "max", "rouge_f1_retain": "max", "prob_retain": "max",
    "model_utility": "max", "forget_quality": "max", "knowmem_retain": "max", "accuracy_retain": "max",
    "final_loss_forget": "max", "truth_ratio_retain": "max",
}
#: Objectives measured at every evaluation step (steps.parquet), not only at the end: each evaluation is
#: a candidate front point, and early stopping needs them.
CURVE_OBJECTIVES = ("rouge_forget", "rouge_retain")


@dataclass(frozen=True)
class Range:
    """A searched parameter: ``c: {range: [0, 1]}`` (uniform) or ``lr: {log_range: [1e-5, 1e-2]}``.

    ``value(u)`` maps a unit coordinate u in [0, 1] to the parameter (rounded to 4 significant digits, so
    trial ids stay readable and a proposal is reproducible from its id); ``unit(value)`` inverts it.
    """
    name: str
    low: float
    high: float
    log: bool = False

    def value(self, u: float) -> float:
        u = min(1.0, max(0.0, float(u)))
        v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))) if self.log \
            else self.low + u * (self.high - self.low)
        return float(f"{v:.4g}")

    def unit(self, value: float) -> float:
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


def is_range(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("range", "log_range")


def parse_range(where: str, name: str, value: dict) -> tuple[Range | None, list[str]]:
    """The Range of ``{range: [lo, hi]}`` / ``{log_range: [lo, hi]}``, or the problem in one sentence."""
    kind, bounds = next(iter(value.items()))
    ok = (isinstance(bounds, list) and len(bounds) == 2
          and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds))
    if not ok or not bounds[0] < bounds[1] or (kind == "log_range" and bounds[0] <= 0):
        need = "two numbers 0 < low < high" if kind == "log_range" else "two numbers low < high"
        return None, [f"{where}: {name} = {value!r} must be {{{kind}: [low, high]}} with {need}"]
    return Range(name, float(bounds[0]), float(bounds[1]), kind == "log_range"), []


def search_settings(doc: dict) -> tuple[dict, list[str]]:
    """The grid's ``search`` section with defaults filled in, and its problems (one sentence each)."""
    f = doc.get("_file", "<grid>")
    given = doc.get("search") or {}
    if not isinstance(given, dict):
        return dict(DEFAULT_SEARCH), [f"{f}: key 'search' must be a mapping such as {{kind: front, budget: 12}}"]
    problems = [f"{f}: search: unknown key {k!r}; allowed: {', '.join(sorted(SEARCH_KEYS))}"
                for k in given if k not in SEARCH_KEYS]
    s = {**DEFAULT_SEARCH, **given}
    stop_given = given.get("early_stop")
    problems += _repeatable_problems(f, s, given)
    if s["repeatable"] and stop_given is None:
        stop_given = False  # its stops depend on how far other trials have got: off in a repeatable search
    if stop_given is False or (stop_given is None and s["kind"] == "grid"):
        s["early_stop"] = None  # early stopping is on by default for a front search only
    elif stop_given is None or isinstance(stop_given, dict):  # a copy: the defaults are never modified
        s["early_stop"] = {**DEFAULT_SEARCH["early_stop"], **(stop_given or {})}
    fid_given = given.get("fidelity")
    if fid_given is False or s["kind"] == "grid" or s["early_stop"] is None:
        s["fidelity"] = None  # rungs stop trials through early stop's marker: off with it, and in a grid
    elif fid_given is None or isinstance(fid_given, dict):
        s["fidelity"] = {**DEFAULT_SEARCH["fidelity"], **(fid_given or {})}
    if s["kind"] not in KINDS:
        problems.append(f"{f}: search: kind = {s['kind']!r} is not allowed; allowed: {', '.join(KINDS)}")
    if s["sampler"] not in SAMPLERS:
        problems.append(f"{f}: search: sampler = {s['sampler']!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    elif s["sampler"] in ("optuna", "gp") and s["kind"] == "front" and importlib.util.find_spec("optuna") is None:
        problems.append(f"{f}: search: sampler {s['sampler']} needs the optuna package, which is not installed: "
                        f"pip install 'unlearning-sweeper[search]' (or use sampler: gap)")
    for key in ("budget", "initial"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
            problems.append(f"{f}: search: {key} = {s[key]!r} must be a positive integer")
    if isinstance(s["seed"], bool) or not isinstance(s["seed"], int) or s["seed"] < 0:
        problems.append(f"{f}: search: seed = {s['seed']!r} must be a non-negative integer")
    obj = s["objectives"]
    if not (isinstance(obj, list) and len(obj) == 2 and all(o in SENSES for o in obj) and obj[0] != obj[1]):
        problems.append(f"{f}: search: objectives = {obj!r} must be two different metrics with a known direction; "
                        f"allowed: {', '.join(sorted(SENSES))}")
    stop = s["early_stop"]
    if stop is not None:
        if not isinstance(stop, dict) or set(stop) - EARLY_STOP_KEYS:
            problems.append(f"{f}: search: early_stop = {given.get('early_stop')!r} must be false or a mapping "
                            f"with keys {', '.join(sorted(EARLY_STOP_KEYS))}")
        elif isinstance(obj, list) and not set(obj) <= set(CURVE_OBJECTIVES):
            problems.append(f"{f}: search: early_stop needs objectives measured during training "
                            f"({', '.join(CURVE_OBJECTIVES)}); set early_stop: false for {obj!r}")
        else:
            if stop["min_steps"] is None:  # default: half the steps, so a dip that recovers is not cut short
                steps = (doc.get("unlearn") or {}).get("steps", 30)
                stop["min_steps"] = max(1, -(-steps // 2)) if isinstance(steps, int) and steps > 0 else 1
            if (isinstance(stop["min_steps"], bool) or not isinstance(stop["min_steps"], int) or stop["min_steps"] < 1
                    or isinstance(stop["margin"], bool) or not isinstance(stop["margin"], (int, float))
                    or stop["margin"] < 0):
                problems.append(f"{f}: search: early_stop = {given.get('early_stop')!r} needs min_steps a positive "
                                f"integer and margin a number >= 0")
    problems += _fidelity_problems(f, s["fidelity"], fid_given)
    return s, problems


def _repeatable_problems(f: str, s: dict, given: dict) -> list[str]:
    """Check ``repeatable`` and set it to the number of configurations in flight (None when off)."""
    value = s["repeatable"]
    if value is False or value is None:
        s["repeatable"] = None
        return []
    window = REPEATABLE_WINDOW if value is True else value
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        s["repeatable"] = None
        return [f"{f}: search: repeatable = {value!r} must be true, false or a positive integer (configurations "
                f"in flight)"]
    s["repeatable"] = window
    if s["sampler"] != "gap":
        return [f"{f}: search: repeatable needs sampler: gap (Optuna's samplers learn in completion order)"]
    clash = [k for k in ("early_stop", "fidelity") if given.get(k) not in (None, False)]
    return [f"{f}: search: repeatable needs {k}: false (its stops depend on how far other trials have got "
            f"when a trial reports)" for k in clash]


def _fidelity_problems(f: str, fid, given) -> list[str]:
    if fid is None:
        return []
    if not isinstance(fid, dict) or set(fid) - FIDELITY_KEYS:
        return [f"{f}: search: fidelity = {given!r} must be false or a mapping with keys "
                f"{', '.join(sorted(FIDELITY_KEYS))}"]
    rungs, keep, margin = fid["rungs"], fid["keep"], fid["margin"]
    ok = rungs == "auto" or (isinstance(rungs, list) and rungs and all(
        isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rungs))
    ok = ok and isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1
    ok = ok and isinstance(margin, (int, float)) and not isinstance(margin, bool) and margin >= 0
    return [] if ok else [f"{f}: search: fidelity = {given!r} needs rungs 'auto' or a list of positive step "
                          f"numbers, keep a fraction in (0, 1] and margin a number >= 0"]
