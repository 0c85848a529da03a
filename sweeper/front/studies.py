"""Front search: a grid file's ``search`` section, its ranges, and the studies a search runs. No Ray.

A grid lists values and every combination is a trial. A front search declares ranges instead and lets a
sampler propose the trials, under a budget, where the Pareto front of the two objectives is still open::

    search: {kind: front, budget: 8, sampler: gap}        # objectives: [rouge_forget, rouge_retain]
    methods: [{method: gdiff, c: {range: [0, 1]}}]          # continuous c
    unlearn: {lr: {log_range: [1.0e-4, 1.0e-2]}}            # log-uniform learning rate

Every combination of the grid's remaining lists (data x models x method entries x lr modes) is one
*study*; each study gets ``budget`` trials (each seed of a configuration is one trial) and its own
sampler. ``load_search(path)`` returns the studies; ``sweeper.front.searcher`` runs them under Ray Tune.
``search: {kind: grid}`` (the default) is the plain grid of ``sweeper.grid.load``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field

from sweeper.grid.load import GridError, TrialSpec, expand, load_grid
from sweeper.grid.search_settings import SENSES, Range, is_range, parse_range, search_settings

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
