"""Grid files: read, validate completely, expand into trial specs. No Ray, no torch model loading.

A grid file (``search_spaces/<name>.yaml``) names the axes; lists multiply::

    name: smoke
    seeds: [0]
    data:    [{name: authors, source: builtin, n_authors: 20, qa_per_author: 10, forget_split: forget10}]
    models:  [{name: tiny-gpt2, workers: 1}]
    target:  {lr: 3.0e-3, batch_size: 32, max_epochs: 200, exact_match_gate: 0.9}
    methods: [{method: gdiff, c: [0.1, 0.5, 0.9]}, {method: ngdiff}, {method: npo, beta: 0.1}]
    lr_modes: [static, autolr]
    unlearn: {optimizer: adam, lr: [1.0e-3], steps: 30, batch_size: 8, autolr: {every: 10}}
    eval:    {max_questions: 20, max_new_tokens: 24, every: 10}

``include: [other.yaml, ...]`` (paths relative to the file) merges other files first, this file's keys
winning; ``plugins: [my.module]`` imports modules that register extra methods.

Every problem is collected and reported at once, each as one sentence naming the file, the key, the
value and what is allowed::

    specs = expand(load_grid("search_spaces/smoke.yaml"))

This module reads grid files (``resolve_grid_path``, ``load_grid``), expands them (``expand``,
``expand_grid``) into ``TrialSpec`` objects and hashes targets (``target_hash``, ``published_source``,
``folder_fingerprint``, ``with_fingerprints``). The checks themselves, with the key sets and defaults,
are in ``sweeper.grid.checks``; their public names (``validate``, ``DEFAULTS``, ``MODEL_DEFAULTS``, ...)
are re-exported here, so callers import everything from ``sweeper.grid.load``.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

# Validation, with the key sets and defaults it shares with expansion, lives in sweeper.grid.checks;
# the names are re-exported here so ``from sweeper.grid.load import ...`` keeps working.
from sweeper.grid.checks import (  # noqa: F401
    DEFAULTS, DTYPES, EVAL_KEYS, LR_MODES, MAX_AUTHORS, MODEL_DEFAULTS, MODEL_KEYS, PRESETS, SOURCE_KEYS,
    STRATEGIES, TARGET_KEYS, TOP_KEYS, UNLEARN_KEYS, _as_list, _method_variants, _with_defaults, data_spec,
    validate,
)
from sweeper.grid.search_settings import search_settings
from sweeper.grid.spec import (  # noqa: F401  (re-exported: the grid's public names)
    TARGET_FORMAT, GridError, TrialSpec, folder_fingerprint, published_source, target_hash, with_fingerprints,
)

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def resolve_grid_path(grid: str) -> Path:
    """``smoke`` -> search_spaces/smoke.yaml; ``paper/table1`` -> search_spaces/paper/table1.yaml; or a path."""
    path = Path(grid)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = SEARCH_SPACES / f"{grid}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(str(p.relative_to(SEARCH_SPACES).with_suffix("")) for p in SEARCH_SPACES.rglob("*.yaml"))
    close = difflib.get_close_matches(grid, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise GridError([f"grid {grid!r}: no file {candidate}; known grids: {', '.join(known)}{hint}"])


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise GridError([f"{path}: cannot be read ({e.strerror})"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GridError([f"{path}: YAML syntax error{where}: {getattr(e, 'problem', e)}"]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise GridError([f"{path}: the top level must be a mapping of keys, not a {type(doc).__name__}"])
    return doc


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_grid(path: str | Path, _seen: tuple = ()) -> dict:
    """The grid file with its includes merged in (later keys win; lists such as methods concatenate)."""
    path = Path(path)
    doc = _read_yaml(path)
    doc.setdefault("name", path.stem)
    doc["_file"] = str(path)
    includes = doc.pop("include", []) or []
    if not isinstance(includes, list):
        raise GridError([f"{path}: key 'include' = {includes!r} must be a list of file names"])
    merged: dict = {}
    for inc in includes:
        inc_path = (path.parent / inc).resolve()
        if inc_path in _seen:
            raise GridError([f"{path}: include {inc!r} is circular"])
        if not inc_path.is_file():
            raise GridError([f"{path}: include {inc!r}: no file {inc_path}"])
        part = load_grid(inc_path, _seen + (path.resolve(),))
        part_methods = merged.get("methods", []) + part.get("methods", [])
        merged = _merge(merged, part)
        merged["methods"] = part_methods
    if includes and "methods" in doc:
        doc["methods"] = merged.get("methods", []) + doc["methods"]
    return _merge(merged, doc)


def expand(doc: dict, run: str | None = None) -> list[TrialSpec]:
    """Validate ``doc`` (raising GridError with every problem) and expand it into trial specs."""
    problems = validate(doc)
    if problems:
        raise GridError(problems)
    early_stop = search_settings(doc)[0]["early_stop"]
    doc = _with_defaults(doc)
    run = run or doc["name"]
    u = doc["unlearn"]
    specs = []
    for data, model, entry, lr_mode, lr, seed in itertools.product(
            doc["data"], doc["models"], doc["methods"], _as_list(doc["lr_modes"]), _as_list(u["lr"]),
            _as_list(doc["seeds"])):
        for rule, fl, rule_params, fl_params, label, rl, rl_params in _method_variants(entry):
            specs.append(TrialSpec(
                run=run, model={**MODEL_DEFAULTS, **with_fingerprints(model, [data_spec(data)])},
                data=data_spec(data), target=doc["target"],
                method=rule, method_params=rule_params, forget_loss=fl, forget_loss_params=fl_params,
                retain_loss=rl, retain_loss_params=rl_params,
                label=label, lr_mode=lr_mode, lr=float(lr), optimizer=u["optimizer"],
                weight_decay=float(u["weight_decay"]), steps=int(u["steps"]), batch_size=int(u["batch_size"]),
                autolr=u["autolr"] if lr_mode == "autolr" else {}, eval=doc["eval"], seed=int(seed),
                max_failures=int(doc["max_failures"]), plugins=_as_list(doc.get("plugins") or []),
                search={"kind": "grid", "early_stop": early_stop} if early_stop else {},
                id_dataset=len(doc["data"]) > 1))
    ids = [s.trial_id for s in specs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise GridError([f"{doc['_file']}: the grid expands to duplicate trials {dupes}; remove the repeated entries"])
    return specs


def expand_grid(grid: str, run: str | None = None) -> list[TrialSpec]:
    """Trial specs of a grid name or path. A grid with ``parts: [a.yaml, b.yaml]`` (paths relative to it)
    is the union of its parts, each expanded on its own (one per table or figure of the paper) under
    one run name; a trial shared by two parts runs once."""
    path = resolve_grid_path(grid)
    doc = load_grid(path)
    if isinstance(doc.get("search"), dict) and doc["search"].get("kind") == "front":
        raise GridError([f"{path}: is a front search (search: {{kind: front}}); its trials come from "
                         f"sweeper.front.studies.load_search, not from expanding a grid"])
    if "parts" not in doc:
        return expand(doc, run=run)
    specs, problems = {}, []
    for part in _as_list(doc["parts"]):
        try:
            for spec in expand(load_grid(path.parent / part), run=run or doc["name"]):
                specs.setdefault(spec.trial_id, spec)
        except GridError as e:
            problems += e.problems
    if problems:
        raise GridError(problems)
    return list(specs.values())
