"""Load TOFU (or its offline twin) as plain lists of dict rows.

    from sweeper.data.tofu import load_tofu
    data = load_tofu("data/tofu", forget_split="forget10")   # a folder written by write_tofu_layout
    data = load_tofu("locuslab/TOFU")                          # the hub dataset (needs network)
    data.forget, data.retain, data.full                        # [{"question", "answer"}, ...]
    data.retain_perturbed[0]["perturbed_answer"]               # list of wrong answers

A folder holds one ``<config>.json`` per TOFU config (JSON lines, or a JSON array); see
``sweeper.data.synthetic`` for the list. ``forget``/``retain`` files are required; the perturbed,
``real_authors`` and ``world_facts`` files are optional (empty lists when missing); ``full`` falls back to
retain + forget, which is what TOFU's full set is (the forget split is its last rows).
``holdout01/05/10`` (rows about authors never trained on, for membership inference) is loaded to match
the forget split when present. A missing optional file that disables metrics is named in one line.
A source that is not an existing folder is taken as a hub id and loaded with
``datasets.load_dataset(source, name=config, split="train")`` for each config.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Allowed forget splits and the retain split that matches each (together they make up ``full``).
FORGET_TO_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}

QA_KEYS = ("question", "answer")
PERTURBED_KEYS = ("question", "answer", "paraphrased_answer", "perturbed_answer")
OPTION_KEYS = ("question", "answer", "perturbed_answer")


@dataclass
class TofuData:
    """The rows one unlearning run needs. ``retain`` is the split matched to ``forget_split``."""

    forget_split: str
    forget: list[dict]
    retain: list[dict]
    full: list[dict]
    forget_perturbed: list[dict] = field(default_factory=list)
    retain_perturbed: list[dict] = field(default_factory=list)
    real_authors: list[dict] = field(default_factory=list)
    world_facts: list[dict] = field(default_factory=list)
    holdout: list[dict] = field(default_factory=list)
    source: str = ""


def read_json_rows(path: str | Path) -> list:
    """Rows of a JSON-lines file or of a file holding one JSON array (both occur in the wild)."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg}).") from None
    return rows


def validate_rows(rows: list, keys: tuple[str, ...], where: str) -> list[dict]:
    """Check every row is a dict with ``keys`` (``perturbed_answer`` a list, others strings)."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: row {i} is a {type(row).__name__}; rows must be JSON objects "
                             f"with keys {', '.join(keys)}.")
        for k in keys:
            if k not in row:
                raise ValueError(f"{where}: row {i} lacks key '{k}'; rows need keys {', '.join(keys)}.")
            want = list if k == "perturbed_answer" else str
            if not isinstance(row[k], want):
                raise ValueError(f"{where}: row {i} key '{k}' is a {type(row[k]).__name__}; "
                                 f"expected a {want.__name__}.")
    return rows


def resolve_source(source: str) -> Path | None:
    """The local folder ``source`` names, or None when it is a hub id; errors for bad paths."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"data source {source!r} is a file; expected a folder or a hub id.")
    if str(source).startswith(("/", ".", "~")) or str(source).count("/") != 1:
        raise ValueError(f"data source {source!r} does not exist; expected a folder or a hub id.")
    return None


def hub_rows(source: str, config: str, split: str = "train") -> list[dict]:
    """Rows of one config/split of a Hugging Face hub dataset (needs network or a warm HF cache)."""
    import datasets  # imported here: local folders must not need it (and it is slow to import)

    try:
        return datasets.load_dataset(source, name=config, split=split).to_list()
    except Exception as e:  # say which source, config and split; the cause stays chained
        raise RuntimeError(f"could not load config {config!r} split {split!r} of {source!r} from the "
                           f"Hugging Face hub, and {source!r} is not a local folder: {e}") from e


def load_tofu(source: str, forget_split: str = "forget10") -> TofuData:
    """Load the forget split, its matched retain split and the evaluation splits from ``source``."""
    if forget_split not in FORGET_TO_RETAIN:
        raise ValueError(f"forget_split={forget_split!r} is not a TOFU forget split; "
                         f"allowed: {', '.join(FORGET_TO_RETAIN)}.")
    retain_split = FORGET_TO_RETAIN[forget_split]
    folder = resolve_source(source)
    if folder is None:
        def load(config: str, keys: tuple[str, ...], required: bool) -> list[dict]:
            # every config exists on the hub, so "required" only matters for folders
            return validate_rows(hub_rows(source, config), keys, f"{source} config {config}")
    else:
        def load(config: str, keys: tuple[str, ...], required: bool) -> list[dict]:
            path = folder / f"{config}.json"
            if not path.is_file():
                if required:
                    raise FileNotFoundError(f"{path} is missing; a TOFU folder needs {config}.json "
                                            f"for forget_split={forget_split!r}.")
                return []
            return validate_rows(read_json_rows(path), keys, str(path))

    forget = load(forget_split, QA_KEYS, True)
    retain = load(retain_split, QA_KEYS, True)
    full = load("full", QA_KEYS, False) or retain + forget
    data = TofuData(
        forget_split=forget_split, forget=forget, retain=retain, full=full,
        forget_perturbed=load(f"{forget_split}_perturbed", PERTURBED_KEYS, False),
        retain_perturbed=load("retain_perturbed", PERTURBED_KEYS, False),
        real_authors=load("real_authors_perturbed", OPTION_KEYS, False),
        world_facts=load("world_facts_perturbed", OPTION_KEYS, False),
        holdout=load(holdout_split(forget_split), QA_KEYS, False),
        source=str(source),
    )
    if folder is not None:
        for config, rows, metrics in disabled_metrics(data):
            print(f"note: {folder / (config + '.json')} is missing, so {metrics} will be blank for this data")
    return data


def holdout_split(forget_split: str) -> str:
    """The holdout config that matches a forget split (``forget05`` -> ``holdout05``)."""
    return "holdout" + forget_split[-2:]


def disabled_metrics(data: TofuData) -> list[tuple[str, list, str]]:
    """(config, its rows, the metrics it disables) for each optional config the data lacks."""
    wants = [(f"{data.forget_split}_perturbed", data.forget_perturbed, "truth_ratio_forget and forget_quality"),
             ("retain_perturbed", data.retain_perturbed, "truth_ratio_retain and model_utility"),
             ("real_authors_perturbed", data.real_authors, "model_utility"),
             ("world_facts_perturbed", data.world_facts, "model_utility"),
             (holdout_split(data.forget_split), data.holdout, "the mia_* columns and privleak")]
    return [w for w in wants if not w[1]]
