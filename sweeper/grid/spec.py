"""A trial as plain data (``TrialSpec``), the grid's error type, and the content hash of a target.

The lowest module of the grid side: everything that reads, plans or runs trials imports its names from
here, and it imports nothing of the sweeper's::

    spec = TrialSpec.from_dict(d)        # travels to Ray workers as a dict
    spec.trial_id, spec.config_hash, spec.target_hash
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

#: A grid's model entry, completed (``sweeper.grid.checks`` validates the keys). Here, not beside the other
#: defaults in checks: a trial spec needs it, and a process that only reads specs (a Tune trial process
#: driving its workers) should not import validation's torch-heavy modules.
MODEL_DEFAULTS = {"workers": 1, "strategy": "ddp", "cpus_per_worker": 1, "gpus_per_worker": 0,
                  "dtype": "float32", "trust_remote_code": False, "template": "auto", "checkpoint": None,
                  "tokenizer": None, "retrained_reference": None}


class GridError(ValueError):
    """Every problem of a grid file, one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class TrialSpec:
    """One trial, as plain data (it travels to Ray workers as a dict)."""
    run: str
    model: dict
    data: dict
    target: dict
    method: str                 # the combination rule
    method_params: dict
    forget_loss: str
    forget_loss_params: dict
    label: str                  # the method's name on plots: gdiff, ngdiff, npo, ...
    lr_mode: str
    lr: float
    optimizer: str
    weight_decay: float
    steps: int
    batch_size: int
    autolr: dict
    eval: dict
    seed: int
    max_failures: int = 1
    plugins: list = field(default_factory=list)
    #: A front search's settings and study (sweeper.front.studies); empty for a grid's trials.
    search: dict = field(default_factory=dict)
    #: The retain side's loss (sweeper.methods.retain): nll (the paper's L_R), kl, rmu.
    retain_loss: str = "nll"
    retain_loss_params: dict = field(default_factory=dict)
    #: The trial id names the dataset (set when a grid has several data entries). Not part of the config
    #: hash: the same trial under an older id (``legacy_id``) is the same trial, so old runs resume.
    id_dataset: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrialSpec":
        return cls(**d)

    @property
    def config_hash(self) -> str:
        d = self.to_dict()
        d.pop("run")
        d.pop("id_dataset")
        if not d["search"]:  # grid trials hash as they did before front searches existed
            d.pop("search")
        if d.get("retain_loss", "nll") == "nll" and not d.get("retain_loss_params"):
            d.pop("retain_loss", None), d.pop("retain_loss_params", None)   # ... and before retain losses
        d["data"] = hashed_data(d["data"])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def target_hash(self) -> str:
        return target_hash(self.model, self.data, self.target)

    @property
    def trial_id(self) -> str:
        c = f"-c{self.method_params['c']:g}" if "c" in self.method_params else ""
        # A front search's other searched parameters (NPO's beta, ...) are named too: they vary trial to trial.
        params = {**self.method_params, **self.forget_loss_params}
        c += "".join(f"-{k}{params[k]:g}" for k in self.search.get("searched", ()) if k in params and k != "c")
        model = self.model["name"].replace("/", "_")
        data = f"_{self.data['name']}" if self.id_dataset else ""
        return f"{model}{data}_{self.label}{c}_{self.lr_mode}_lr{self.lr:g}_s{self.seed}_{self.config_hash[:8]}"

    @property
    def legacy_id(self) -> str:
        """The id runs made before ids named the dataset gave this trial (equal to ``trial_id`` when the
        grid has one data entry)."""
        return dataclasses.replace(self, id_dataset=False).trial_id

    @property
    def c(self) -> float | None:
        return self.method_params.get("c")  # GDiff's c, or a plugin rule's parameter of that name


#: Bumped whenever the code changes what a target folder holds (data generation, tokenizer, saved files),
#: so caches built by older code are not reused.
TARGET_FORMAT = 3


def published_source(model: dict, data: dict, variant: str = "full") -> str | None:
    """The published checkpoint a target is loaded from instead of fine-tuned: the model's ``checkpoint``
    (the No-unlearn target) or ``retrained_reference`` (the retain-only model, ``{forget_split}`` and
    ``{retain_split}`` filled in from the data), or None when stage 1 fine-tunes it."""
    source = model.get("checkpoint") if variant == "full" else model.get("retrained_reference")
    if not source:
        return None
    split = str(data.get("forget_split", ""))
    retain = f"retain{100 - int(split[-2:])}" if split[-2:].isdigit() else ""
    return str(source).format(forget_split=split, retain_split=retain)


#: Data keys added after targets and trials were first hashed, with the value that does what runs did
#: before the key existed: at that value the key is left out of the hashes, so those runs keep their ids.
ADDED_DATA_KEYS = {"knowmem_in_target": False}


def hashed_data(data: dict) -> dict:
    """``data`` as the hashes see it: an added key (``ADDED_DATA_KEYS``) at its old behaviour left out."""
    return {k: v for k, v in data.items() if k not in ADDED_DATA_KEYS or v != ADDED_DATA_KEYS[k]}


def target_hash(model: dict, data: dict, recipe: dict, variant: str = "full") -> str:
    """Content hash of what determines a target: the model (with its template and, for a published
    checkpoint, its source and folder fingerprint), the data, the fine-tune recipe (unless nothing is
    fine-tuned), whether it is the No-unlearn model (``full``) or the retrained reference
    (``retain_only``), and the format."""
    m = {**MODEL_DEFAULTS, **model}
    source = published_source(m, data, variant)
    key = {"model": {k: m[k] for k in ("name", "dtype", "trust_remote_code", "template", "tokenizer")},
           "data": hashed_data(data), "format": TARGET_FORMAT}
    if source:
        key["source"] = source
        key["fingerprint"] = (m.get("fingerprints") or {}).get(source)
    else:
        key["recipe"] = recipe
    if variant != "full":
        key["variant"] = variant
        if not source:  # its fine-tune gate now measures the retain rows it trains on, not the forget rows
            key["gate"] = "trained rows"
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def wants_reference(spec: TrialSpec) -> bool:
    """A retain-only reference is built (fine-tuned) or loaded (published) for this trial's target."""
    return bool(spec.eval.get("retrained_reference") or spec.model.get("retrained_reference"))


def target_variants(spec: TrialSpec) -> list[str]:
    """The targets a trial of ``spec`` loads: the No-unlearn model, and the retain-only reference if wanted."""
    return ["full", "retain_only"] if wants_reference(spec) else ["full"]


def folder_fingerprint(path: str) -> str:
    """Names, sizes and modification times of a folder's files: a local checkpoint that changes gets a
    new target hash, while an unchanged one is reused. Computed once, in the launcher, and carried in
    the trial spec so every node agrees."""
    entries = []
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size, int(st.st_mtime)))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def with_fingerprints(model: dict, data_entries: list[dict]) -> dict:
    """The model entry plus ``fingerprints``: {local folder: fingerprint} of its published sources."""
    sources = {published_source(model, d, v) for d in data_entries for v in ("full", "retain_only")}
    sources.add(model.get("tokenizer"))
    prints = {s: folder_fingerprint(s) for s in sorted(x for x in sources if x and os.path.isdir(x))}
    return {**model, "fingerprints": prints} if prints else model
