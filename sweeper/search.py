"""Front search: a grid file's ``search`` section, its ranges, and the studies a search runs. No Ray.

A grid lists values and every combination is a trial. A front search declares ranges instead and lets a
sampler propose the trials, under a budget, where the Pareto front of the two objectives is still open::

    search: {kind: front, budget: 8, sampler: gap}        # objectives: [rouge_forget, rouge_retain]
    methods: [{method: gdiff, c: {range: [0, 1]}}]          # continuous c
    unlearn: {lr: {log_range: [1.0e-4, 1.0e-2]}}            # log-uniform learning rate

Every combination of the grid's remaining lists (data x models x method entries x lr modes) is one
*study*; each study gets ``budget`` trials (each seed of a configuration is one trial) and its own
sampler. ``load_search(path)`` returns the studies; ``sweeper.front_searcher`` runs them under Ray Tune.
``search: {kind: grid}`` (the default) is the plain grid of ``sweeper.grid``.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field

KINDS = ("grid", "front")
SAMPLERS = ("gap", "optuna", "gp")
SEARCH_KEYS = {"kind", "budget", "sampler", "objectives", "early_stop", "seed", "initial"}
EARLY_STOP_KEYS = {"min_steps", "margin"}
DEFAULT_SEARCH = {"kind": "grid", "budget": 12, "sampler": "gap", "objectives": ["rouge_forget", "rouge_retain"],
                  "early_stop": {"min_steps": None, "margin": 0.05}, "seed": 0, "initial": 3}

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
    if stop_given is False or (stop_given is None and s["kind"] == "grid"):
        s["early_stop"] = None  # early stopping is on by default for a front search only
    elif stop_given is None or isinstance(stop_given, dict):  # a copy: the defaults are never modified
        s["early_stop"] = {**DEFAULT_SEARCH["early_stop"], **(stop_given or {})}
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
    return s, problems


def split_ranges(doc: dict, endpoint: float = 0.5) -> tuple[dict, dict, list[str]]:
    """(the grid with every range replaced by its value at ``endpoint`` (0 low, 1 high, 0.5 middle),
    {method entry index or "lr": [Range, ...]}, problems). The placeholder grid expands and validates
    like any grid; validating it at both endpoints checks the ranges against the methods' bounds."""
    f = doc.get("_file", "<grid>")
    out, ranges, problems = copy.deepcopy(doc), {}, []
    for i, entry in enumerate(out.get("methods") or []):
        if not isinstance(entry, dict):
            continue
        for key, value in list(entry.items()):
            if is_range(value):
                r, bad = parse_range(f"{f}: methods[{i}]", key, value)
                problems += bad
                if r:
                    ranges.setdefault(i, []).append(r)
                    entry[key] = r.value(endpoint)
    lr = (out.get("unlearn") or {}).get("lr") if isinstance(out.get("unlearn"), dict) else None
    if is_range(lr):
        r, bad = parse_range(f"{f}: unlearn", "lr", lr)
        problems += bad
        if r:
            ranges["lr"] = [r]
            out["unlearn"]["lr"] = r.value(endpoint)
    return out, ranges, problems


@dataclass
class Study:
    """One study of a front search: a fixed (data, model, method entry, lr mode) and the ranges it searches.

    ``template`` is a trial spec dict with every searched value at a placeholder; ``spec(values, seed)``
    is the trial of one proposal and seed. ``configs`` is how many configurations the budget buys.
    """
    id: str
    template: dict
    ranges: list[Range]
    seeds: list[int]
    configs: int
    search: dict = field(default_factory=dict)

    def spec(self, values: dict[str, float], seed: int):
        from sweeper.grid import TrialSpec
        d = copy.deepcopy(self.template)
        for name, value in values.items():
            if name == "lr":
                d["lr"] = value
            elif name in d["forget_loss_params"]:
                d["forget_loss_params"][name] = value
            else:
                d["method_params"][name] = value
        d["seed"] = seed
        d["search"] = {**self.search, "study": self.id, "searched": [r.name for r in self.ranges]}
        return TrialSpec.from_dict(d)

    def values(self, unit: list[float]) -> dict[str, float]:
        return {r.name: r.value(u) for r, u in zip(self.ranges, unit)}

    def unit(self, values: dict[str, float]) -> list[float]:
        return [r.unit(values[r.name]) for r in self.ranges]


@dataclass
class FrontSearch:
    """A grid file's front search: its settings and studies (see ``load_search``)."""
    settings: dict
    studies: list[Study]

    @property
    def senses(self) -> tuple[str, str]:
        return tuple(SENSES[o] for o in self.settings["objectives"])

    @property
    def budget(self) -> int:
        """Trials the search may run in all."""
        return sum(s.configs * len(s.seeds) for s in self.studies)

    def budget_specs(self) -> list:
        """One placeholder spec per trial the budget allows (for concurrency and device-time estimates)."""
        return [st.spec({}, seed) for st in self.studies for _ in range(st.configs) for seed in st.seeds]

    def planning_specs(self) -> list:
        """One spec per study and seed, at the placeholder values: enough to plan resources and build targets."""
        return [s.spec({}, seed) for s in self.studies for seed in s.seeds]


def load_search(path, run: str | None = None) -> FrontSearch | None:
    """The front search of a grid file, or None when its search kind is ``grid``.

    Raises ``GridError`` with every problem: the search section's, the ranges', and the grid's own checked
    at both ends of every range."""
    from sweeper.grid import GridError, expand, load_grid
    doc = load_grid(path)
    settings, problems = search_settings(doc)
    mid, ranges, range_problems = split_ranges(doc)
    problems += range_problems
    if settings["kind"] == "grid":
        if ranges:
            problems.append(f"{doc['_file']}: ranges such as {{range: [0, 1]}} need search: {{kind: front}}; "
                            f"a grid lists values")
        if problems:
            raise GridError(problems)
        return None
    if "parts" in doc:
        problems.append(f"{doc['_file']}: search: kind front is not supported in a grid with parts; "
                        f"give each part its own search")
    if problems:
        raise GridError(problems)
    for end in (0.0, 1.0):  # the methods' own bounds, at both ends of each range
        try:
            expand(split_ranges(doc, end)[0], run=run)
        except GridError as e:
            problems += [p for p in e.problems if p not in problems]
    if problems:
        raise GridError(problems)
    seeds = [int(s) for s in (doc.get("seeds") or [0])]
    search = {"kind": "front", "sampler": settings["sampler"], "objectives": settings["objectives"],
              "early_stop": settings["early_stop"]}
    studies = []
    for i, entry in enumerate(mid["methods"]):
        entry_ranges = ranges.get(i, []) + ranges.get("lr", [])
        by_config: dict[str, dict] = {}
        for spec in expand({**mid, "methods": [entry], "seeds": [seeds[0]]}, run=run):
            by_config.setdefault(spec.config_hash, spec.to_dict())
        for template in by_config.values():
            configs = max(1, settings["budget"] // len(seeds)) if entry_ranges else 1
            studies.append(Study(_study_id(template), template, entry_ranges, seeds, configs, search))
    if any(s.ranges and settings["budget"] < len(s.seeds) for s in studies):
        raise GridError([f"{doc['_file']}: search: budget = {settings['budget']} is fewer trials than the "
                         f"{len(seeds)} seeds one configuration takes"])
    return FrontSearch(settings, studies)


def _study_id(template: dict) -> str:
    key = {k: v for k, v in template.items() if k not in ("seed", "run")}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return f"{template['model']['name'].replace('/', '_')}_{template['data']['name']}_{template['label']}_" \
           f"{template['lr_mode']}_{h}"
