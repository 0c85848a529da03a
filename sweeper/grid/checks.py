"""Grid validation: the allowed keys, their defaults, and every check ``validate`` runs on a loaded grid.

``sweeper.grid.load`` reads a grid file (merging its includes), calls ``validate`` here and, when the list of
problems is empty, expands the grid into trial specs. Each problem is one sentence naming the file, the
key, the value and what is allowed, so all of them can be reported at once::

    problems = validate(load_grid("search_spaces/smoke.yaml"))   # [] when the grid is valid

The key sets and defaults (``DEFAULTS``, ``MODEL_DEFAULTS``, ...) live here because both validation and
expansion need them; ``sweeper.grid.load`` imports them from this module (never the other way round) and
re-exports them, as it does ``validate`` and ``data_spec``. No Ray, no torch model loading.
"""
from __future__ import annotations

import difflib
import os

from sweeper.unlearn.autolr import AutoLRConfig
from sweeper.data.synthetic import FEMALE_FIRST, LAST, MALE_FIRST, MAX_QA_PER_AUTHOR
from sweeper.data.templates import TEMPLATE_NAMES
from sweeper.methods import import_plugins, validate_rule_params
from sweeper.methods.objectives import objective_problem
from sweeper.grid.method_entries import PRESETS, _check_methods_fit, _method_variants  # noqa: F401  (re-exported)
from sweeper.unlearn.optimizers import OPTIMIZERS
from sweeper.grid.search_settings import CURVE_OBJECTIVES, search_settings
from sweeper.models.adapters import adapter_problems
from sweeper.grid.spec import MODEL_DEFAULTS  # noqa: F401  (re-exported: the grid's key sets and defaults live here)

TOP_KEYS = {"name", "include", "parts", "plugins", "seeds", "data", "models", "target", "methods", "lr_modes",
            "unlearn", "eval", "max_failures", "description", "search"}
MODEL_KEYS = {"name", "workers", "strategy", "cpus_per_worker", "gpus_per_worker", "dtype", "trust_remote_code",
              "checkpoint", "tokenizer", "retrained_reference", "template", "adapter"}
TARGET_KEYS = {"optimizer", "lr", "batch_size", "max_epochs", "exact_match_gate", "check_every", "seed"}
UNLEARN_KEYS = {"optimizer", "lr", "steps", "batch_size", "weight_decay", "autolr"}
EVAL_KEYS = {"max_questions", "max_new_tokens", "every", "batch_size", "retrained_reference", "metrics", "keep_best"}
LR_MODES = ("static", "autolr")
STRATEGIES = ("ddp", "fsdp")
DTYPES = ("float32", "bfloat16", "float16")

DEFAULTS = {
    "seeds": [0],
    "target": {"optimizer": "adamw", "lr": 3e-3, "batch_size": 32, "max_epochs": 200,
               "exact_match_gate": 0.9, "check_every": 10, "seed": 0},
    "unlearn": {"optimizer": "adam", "lr": [1e-3], "steps": 30, "batch_size": 8, "weight_decay": 0.0,
                "autolr": {}},
    "eval": {"max_questions": 20, "max_new_tokens": 24, "every": 10, "batch_size": 32,
             "retrained_reference": False},
    "lr_modes": ["static"],
    "max_failures": 1,
}
#: Model keys naming a published checkpoint (a hub id or folder) instead of something to fine-tune.
SOURCE_KEYS = ("checkpoint", "tokenizer", "retrained_reference")
#: The most authors the built-in generator can invent (unique first/last name pairs).
MAX_AUTHORS = (len(FEMALE_FIRST) + len(MALE_FIRST)) * len(LAST)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _unknown_keys(where: str, given: dict, allowed: set) -> list[str]:
    out = []
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}{hint}")
    return out


def _positive(where: str, key: str, value, integer: bool = False) -> list[str]:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        return [f"{where}: {key} = {value!r} must be {kind}"]
    return []


def _non_negative_int(where: str, key: str, value) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return [f"{where}: {key} = {value!r} must be a non-negative integer"]
    return []


def _non_empty(where: str, key: str, value) -> list[str]:
    if isinstance(value, list) and not value:
        return [f"{where}: {key} is an empty list; it must list at least one value"]
    return []


def _check_sections(f: str, doc: dict) -> list[str]:
    problems = _unknown_keys(f, {k: v for k, v in doc.items() if not str(k).startswith("_")}, TOP_KEYS)
    if not isinstance(doc.get("name"), str) or not doc["name"] or "/" in doc["name"]:
        problems.append(f"{f}: name = {doc.get('name')!r} must be a non-empty string without '/' (it names the run)")
    for key in ("data", "models", "methods"):
        if not doc.get(key):
            problems.append(f"{f}: key {key!r} is missing or empty; it must list at least one entry")
        elif not isinstance(doc[key], list) or not all(isinstance(e, dict) for e in doc[key]):
            problems.append(f"{f}: key {key!r} must be a list of mappings")
    for key in ("target", "unlearn", "eval"):
        if key in doc and not isinstance(doc[key], dict):
            problems.append(f"{f}: key {key!r} must be a mapping, not {doc[key]!r}")
    return problems


def _check_models(f: str, models: list[dict]) -> list[str]:
    problems = []
    for i, m in enumerate(models):
        where = f"{f}: models[{i}]"
        problems += _unknown_keys(where, m, MODEL_KEYS)
        if "name" not in m:
            problems.append(f"{where}: key 'name' is missing")
        spec = {**MODEL_DEFAULTS, **m}
        problems += _positive(where, "workers", spec["workers"], integer=True)
        if spec["strategy"] not in STRATEGIES:
            problems.append(f"{where}: strategy = {spec['strategy']!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
        if spec["dtype"] not in DTYPES:
            problems.append(f"{where}: dtype = {spec['dtype']!r} is not allowed; allowed: {', '.join(DTYPES)}")
        if not isinstance(spec["cpus_per_worker"], (int, float)) or spec["cpus_per_worker"] < 0:
            problems.append(f"{where}: cpus_per_worker = {spec['cpus_per_worker']!r} must be a number >= 0")
        if not isinstance(spec["gpus_per_worker"], (int, float)) or spec["gpus_per_worker"] < 0:
            problems.append(f"{where}: gpus_per_worker = {spec['gpus_per_worker']!r} must be a number >= 0")
        if not isinstance(spec["trust_remote_code"], bool):
            problems.append(f"{where}: trust_remote_code = {spec['trust_remote_code']!r} must be true or false")
        if spec["template"] not in TEMPLATE_NAMES:
            problems.append(f"{where}: template = {spec['template']!r} is not allowed; allowed: {', '.join(TEMPLATE_NAMES)}")
        for key in SOURCE_KEYS:
            if spec[key] is not None and (why := _source_problem(spec[key], key == "retrained_reference")):
                problems.append(f"{where}: {key} = {spec[key]!r} {why}")
    return problems


def _source_problem(source, placeholders: bool) -> str | None:
    """Why ``source`` cannot name a checkpoint (an existing folder or a hub id org/name), or None."""
    if not isinstance(source, str) or not source:
        return "must be a Hugging Face id org/name or a local folder"
    text = source.replace("{forget_split}", "forget10").replace("{retain_split}", "retain90") if placeholders else source
    if "{" in text:
        return "has an unknown placeholder; allowed: {forget_split}, {retain_split}"
    if os.path.isdir(os.path.expanduser(text)):
        return None
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        return "is neither an existing folder nor a Hugging Face id of the form org/name"
    return None


def data_spec(d: dict) -> dict:
    """A data entry with its task's defaults filled in (the task is ``kind``, tofu by default)."""
    from sweeper.tasks import get_task
    kind = d.get("kind", "tofu")
    return {"kind": kind, **get_task(kind).data_defaults, **d}


def _check_data(f: str, data: list[dict]) -> list[str]:
    from sweeper.tasks import get_task, known_tasks
    problems = []
    for i, d in enumerate(data):
        where = f"{f}: data[{i}]"
        if "name" not in d:
            problems.append(f"{where}: key 'name' is missing")
        kind = d.get("kind", "tofu")
        if kind not in known_tasks():
            close = difflib.get_close_matches(str(kind), known_tasks(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: kind = {kind!r} is not allowed; allowed: {', '.join(known_tasks())}{hint}")
            continue
        task = get_task(kind)
        problems += _unknown_keys(where, d, {"name", "kind", *task.data_defaults})
        spec = data_spec(d)
        src = str(spec.get("source", "builtin"))
        if kind != "vision" and src != "builtin" and not os.path.isdir(src) and src.count("/") != 1:
            problems.append(f"{where}: source = {src!r} is neither 'builtin', an existing folder, nor a Hugging Face id org/name")
        if kind == "tofu":
            for key, most in (("n_authors", MAX_AUTHORS), ("qa_per_author", MAX_QA_PER_AUTHOR)):
                bad = _positive(where, key, spec[key], integer=True)
                if not bad and src == "builtin" and spec[key] > most:
                    bad = [f"{where}: {key} = {spec[key]!r} is more than the built-in generator has; allowed: 1..{most}"]
                problems += bad
        if "seed" in spec:
            problems += _non_negative_int(where, "seed", spec["seed"])
        problems += task.problems(spec, where)
    return problems


def _check_model_fits_task(f: str, models: list[dict], data: list[dict], fine_tunes_reference: bool) -> list[str]:
    """Each model name must be one its data's task can build (a causal LM for text, a vision net for images)."""
    from sweeper.tasks import get_task, known_tasks
    problems = []
    for d in data:
        if d.get("kind", "tofu") not in known_tasks():
            continue
        task = get_task(d.get("kind", "tofu"))
        for i, m in enumerate(models):
            if m.get("checkpoint") and task.kind == "vision":
                problems.append(f"{f}: models[{i}]: checkpoint is for causal language models (kinds tofu, muse), "
                                f"not kind 'vision'")
                continue
            # With a published checkpoint the name is a label, unless a retrained reference is fine-tuned from it.
            builds_from_name = not m.get("checkpoint") or (fine_tunes_reference and not m.get("retrained_reference"))
            if "name" in m and builds_from_name and (why := task.model_problem(str(m["name"]))):
                problems.append(f"{f}: models[{i}]: {why}")
    return list(dict.fromkeys(problems))


def _check_metrics(f: str, metrics, data: list[dict]) -> list[str]:
    """``eval.metrics`` names summary columns that every data entry's task computes."""
    from sweeper.tasks import get_task, known_tasks
    if metrics is None:
        return []
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        return [f"{f}: eval: metrics = {metrics!r} must be a non-empty list of metric names"]
    problems = []
    for d in data:
        kind = d.get("kind", "tofu")
        if kind not in known_tasks():
            continue
        task = get_task(kind)
        allowed = task.metric_columns
        for m in metrics:
            if m not in allowed:
                close = difflib.get_close_matches(m, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{f}: eval: metric {m!r} is not computed by kind {kind!r}; allowed: "
                                f"{', '.join(allowed)}{hint}")
            elif m in getattr(task, "holdout_columns", ()) and (missing := _missing_holdout(d)):
                problems.append(f"{f}: eval: metric {m!r} needs holdout rows, but data {d.get('name')!r} has no "
                                f"{missing}; drop {m!r} from eval.metrics or add the file")
    return list(dict.fromkeys(problems))


def _missing_holdout(data: dict) -> str | None:
    """The holdout file a local TOFU folder lacks for its forget split (builtin data and hub ids have it)."""
    source, split = str(data.get("source", "builtin")), str(data.get("forget_split", "forget10"))
    if source == "builtin" or not os.path.isdir(os.path.expanduser(source)):
        return None
    path = os.path.join(os.path.expanduser(source), f"holdout{split[-2:]}.json")
    return None if os.path.isfile(path) else path


def _check_methods(f: str, methods: list[dict]) -> list[str]:
    problems = []
    for i, entry in enumerate(methods):
        where = f"{f}: methods[{i}]"
        if "method" not in entry:
            problems.append(f"{where}: key 'method' is missing")
            continue
        bad = [f"{where}: {key} = {entry[key]!r} must be one name; write one methods entry per {key}"
               for key in ("method", "forget_loss", "retain_loss") if key in entry and not isinstance(entry[key], str)]
        bad += [p for key, value in entry.items() if key != "method" for p in _non_empty(where, key, value)]
        if bad:
            problems += bad
            continue
        for rule, fl, rule_params, fl_params, _, rl, rl_params in _method_variants(entry):
            if (why := objective_problem(fl, fl_params)):
                problems.append(f"{where}: {why}")
            if (why := objective_problem(rl, rl_params, side="retain")):
                problems.append(f"{where}: {why}")
            problems += [f"{where}: {p}" for p in validate_rule_params(rule, rule_params)]
    return list(dict.fromkeys(problems))


def _check_run_settings(f: str, doc: dict) -> list[str]:
    problems = []
    t, u, e = doc["target"], doc["unlearn"], doc["eval"]
    problems += _unknown_keys(f"{f}: target", t, TARGET_KEYS)
    problems += _unknown_keys(f"{f}: unlearn", u, UNLEARN_KEYS)
    problems += _unknown_keys(f"{f}: eval", e, EVAL_KEYS)
    problems += _non_empty(f"{f}: unlearn", "lr", u["lr"])
    for lr in _as_list(u["lr"]):
        problems += _positive(f"{f}: unlearn", "lr", lr)
    wd = u["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd >= 0:
        problems.append(f"{f}: unlearn: weight_decay = {wd!r} must be a number >= 0")
    problems += _positive(f"{f}: target", "lr", t["lr"])
    for where, d, key in ((f"{f}: unlearn", u, "steps"), (f"{f}: unlearn", u, "batch_size"),
                          (f"{f}: target", t, "batch_size"), (f"{f}: target", t, "max_epochs"),
                          (f"{f}: target", t, "check_every"), (f"{f}: eval", e, "max_questions"),
                          (f"{f}: eval", e, "max_new_tokens"), (f"{f}: eval", e, "batch_size")):
        problems += _positive(where, key, d[key], integer=True)
    problems += _non_negative_int(f"{f}: eval", "every", e["every"])   # 0: evaluate only at the end
    problems += _non_negative_int(f"{f}: target", "seed", t["seed"])
    problems += _non_negative_int(f, "max_failures", doc["max_failures"])
    for where, d in ((f"{f}: unlearn", u), (f"{f}: target", t)):
        if d["optimizer"] not in OPTIMIZERS:
            problems.append(f"{where}: optimizer = {d['optimizer']!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
    if not (isinstance(t["exact_match_gate"], (int, float)) and 0 <= t["exact_match_gate"] <= 1):
        problems.append(f"{f}: target: exact_match_gate = {t['exact_match_gate']!r} must be in [0, 1]")
    problems += _non_empty(f, "lr_modes", doc["lr_modes"])
    for mode in _as_list(doc["lr_modes"]):
        if mode not in LR_MODES:
            problems.append(f"{f}: lr_modes: {mode!r} is not allowed; allowed: {', '.join(LR_MODES)}")
    if not isinstance(u["autolr"], dict):
        problems.append(f"{f}: unlearn: autolr must be a mapping of AutoLR settings")
    else:
        allowed = set(AutoLRConfig.__dataclass_fields__)
        problems += _unknown_keys(f"{f}: unlearn.autolr", u["autolr"], allowed)
        if not set(u["autolr"]) - allowed:
            problems += [f"{f}: unlearn.{p}" for p in AutoLRConfig(**u["autolr"]).problems()]
    problems += _non_empty(f, "seeds", doc["seeds"])
    for seed in _as_list(doc["seeds"]):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            problems.append(f"{f}: seeds: {seed!r} must be a non-negative integer")
    return problems


def _with_defaults(doc: dict) -> dict:
    out = {**DEFAULTS, **{k: v for k, v in doc.items()}}
    for key in ("target", "unlearn", "eval"):
        out[key] = {**DEFAULTS[key], **(doc.get(key) or {})} if isinstance(doc.get(key, {}), dict) else doc[key]
    return out


def validate(doc: dict) -> list[str]:
    """All problems of a loaded grid (empty when it is valid). Imports the grid's plugins first."""
    f = doc.get("_file", "<grid>")
    problems = []
    plugins = _as_list(doc.get("plugins") or [])
    if not all(isinstance(m, str) for m in plugins):
        problems.append(f"{f}: plugins = {doc['plugins']!r} must be a list of module names (strings)")
    else:
        try:
            import_plugins(plugins)
        except ValueError as e:
            problems.append(f"{f}: plugins: {e}")
    problems += _check_sections(f, doc)
    if problems:
        return problems
    doc = _with_defaults(doc)
    problems += _check_models(f, doc["models"])
    problems += _check_data(f, doc["data"])
    problems += _check_model_fits_task(f, doc["models"], doc["data"], bool(doc["eval"].get("retrained_reference")))
    kinds = [d.get("kind", "tofu") for d in doc["data"]]
    problems += [p for i, m in enumerate(doc["models"]) for p in
                 adapter_problems(f"{f}: models[{i}]", m, kinds)]
    problems += _check_metrics(f, doc["eval"].get("metrics"), doc["data"])
    problems += _check_methods(f, doc["methods"])
    problems += _check_methods_fit(f, doc["methods"], doc["models"], doc["data"])
    problems += _check_run_settings(f, doc)
    problems += _check_keep_best(f, doc)
    problems += search_settings(doc)[1]
    return problems


def _check_keep_best(f: str, doc: dict) -> list[str]:
    """``eval.keep_best``: a curve metric (rouge_forget, rouge_retain) or a weight w in [0, 1] of the
    trade-off w * retain + (1 - w) * (1 - forget); not with FSDP (rank 0 holds no full model)."""
    keep = doc["eval"].get("keep_best")
    if keep is None:
        return []
    is_weight = isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 <= keep <= 1
    if not is_weight and keep not in CURVE_OBJECTIVES:
        return [f"{f}: eval: keep_best = {keep!r} must be a metric measured at every evaluation "
                f"({', '.join(CURVE_OBJECTIVES)}) or a weight w in [0, 1] of w * retain + (1 - w) * (1 - forget)"]
    if any({**MODEL_DEFAULTS, **m}.get("strategy") == "fsdp" for m in doc["models"]):
        return [f"{f}: eval: keep_best is not supported with strategy fsdp (no rank holds the whole model); "
                f"use strategy ddp or drop keep_best"]
    return []
