"""Method entries of a grid file: presets, the expansion of one entry into (rule, objectives, parameters),
and the checks of objectives against the data and models. ``sweeper.grid.checks`` re-exports them::

    list(_method_variants({"method": "rmu", "layer": 1}))
    # [("gdiff", "rmu", {"c": 0.5}, {"layer": 1}, "rmu", "rmu", {"layer": 1})]
"""
from __future__ import annotations

import itertools

from sweeper.methods.objectives import get_objective, objective_problem


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


#: Method presets: a name that fixes the forget objective (and retain loss, and the rule's published
#: weights) as well as the rule. A grid entry's own keys override the preset's params. Published forget
#: and retain weights gamma, alpha become gdiff's c = alpha / (alpha + gamma).
PRESETS = {
    "npo": {"method": "ga", "forget_loss": "npo"},
    "simnpo": {"method": "gdiff", "forget_loss": "simnpo", "params": {"c": 0.5}},
    "rmu": {"method": "gdiff", "forget_loss": "rmu", "retain_loss": "rmu", "params": {"c": 0.5}},
    "undial": {"method": "ga", "forget_loss": "undial"},
    "idknll": {"method": "gdiff", "forget_loss": "idknll", "params": {"c": 0.5}},
    "idkdpo": {"method": "gdiff", "forget_loss": "idkdpo", "params": {"c": 0.5}},
    "wga": {"method": "gdiff", "forget_loss": "wga", "params": {"c": 0.5}},
    "satimp": {"method": "gdiff", "forget_loss": "satimp", "params": {"c": round(1 / 1.1, 6)}},
    "ce_u": {"method": "gdiff", "forget_loss": "ce_u", "params": {"c": 0.5}},
}


def _objective_names(name: str, side: str) -> set:
    try:
        return set(get_objective(name, side).params())
    except ValueError:
        return set()


def _method_variants(entry: dict):
    """(rule, forget_loss, rule_params, forget_loss_params, label, retain_loss, retain_loss_params) for
    each combination of list values. A key goes to every objective that declares it (RMU's ``layer``:
    forget and retain), else to the rule."""
    entry = dict(entry)
    label = entry.pop("method")
    preset = PRESETS.get(label, {"method": label})
    rule = preset["method"]
    fl = entry.pop("forget_loss", preset.get("forget_loss", "nll"))
    rl = entry.pop("retain_loss", preset.get("retain_loss", "nll"))
    if preset.get("forget_loss") is None and fl != "nll":
        label = f"{label}+{fl}"
    if rl != preset.get("retain_loss", "nll"):
        label = f"{label}+retain_{rl}"
    entry = {**preset.get("params", {}), **entry}
    keys = list(entry)
    fl_names, rl_names = _objective_names(fl, "forget"), _objective_names(rl, "retain")
    for values in itertools.product(*(_as_list(entry[k]) for k in keys)):
        params = dict(zip(keys, values))
        fl_params = {k: v for k, v in params.items() if k in fl_names}
        rl_params = {k: v for k, v in params.items() if k in rl_names}
        rule_params = {k: v for k, v in params.items() if k not in fl_names | rl_names}
        yield rule, fl, rule_params, fl_params, label, rl, rl_params


def _check_methods_fit(f: str, methods: list[dict], models: list[dict], data: list[dict]) -> list[str]:
    """Objectives against what the data and models offer: IDK answers need QA rows (TOFU), token-level
    objectives a causal LM, RMU's ``layer`` a block the (tiny) model has."""
    from sweeper.methods.forward import resolve_layer
    from sweeper.models.language import tiny_layers
    from sweeper.tasks import get_task, known_tasks
    problems = []
    for i, entry in enumerate(methods):
        if not all(isinstance(entry.get(k, ""), str) for k in ("method", "forget_loss", "retain_loss")) \
                or "method" not in entry:
            continue   # _check_methods names the problem
        for _, fl, _, fl_params, _, rl, rl_params in _method_variants(entry):
            for side, name, params in (("forget", fl, fl_params), ("retain", rl, rl_params)):
                if objective_problem(name, params, side):
                    continue
                obj, key = get_objective(name, side), f"{side}_loss"
                for d in data:
                    kind = d.get("kind", "tofu")
                    if kind not in known_tasks():
                        continue
                    lacking = sorted(obj.needs - get_task(kind).offers)
                    if lacking:
                        problems.append(f"{f}: methods[{i}]: {key} {name!r} needs {', '.join(lacking)}, which data "
                                        f"kind {kind!r} ({d.get('name')}) does not offer")
                for m in models if "layer" in params else []:
                    n = tiny_layers(str(m.get("name"))) if not m.get("checkpoint") else None
                    try:
                        n is not None and resolve_layer(params["layer"], n)
                    except ValueError as e:
                        problems.append(f"{f}: methods[{i}]: {key} {name!r}: model {m.get('name')!r}: {e}")
    return list(dict.fromkeys(problems))
