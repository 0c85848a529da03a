"""Load MUSE-NEWS (or its offline twin) as plain Python lists.

    from sweeper.data.muse import load_muse
    data = load_muse("data/muse")              # a folder written by write_muse_layout
    data = load_muse("muse-bench/MUSE-News")   # the hub dataset (needs network)
    data.forget, data.retain                   # raw article texts: the unlearning forget / retain sets
    data.train_texts()                         # what the No-unlearn target is fine-tuned on
    data.verbmem_forget[0]                     # {"prompt": ..., "gt": ...}
    data.knowmem_retain[0]                     # {"question": ..., "answer": ...}

Sources, as ``(config, split)`` on the hub and ``<config>/<split>.json`` in a folder (JSON lines or a
JSON array; text rows may be ``{"text": ...}`` objects or bare strings)::

    raw/forget, raw/retain1            required   forget / retain article texts
    raw/retain2, raw/holdout           optional   more retain texts (in the target, not in unlearning) /
                                                  never-trained texts
    verbmem/forget                     required   {"prompt", "gt"}
    knowmem/forget_qa, retain_qa       required   {"question", "answer"}
    knowmem/forget_qa_icl, retain_qa_icl  optional   in-context examples for the two QA sets
    privleak/forget, retain, holdout   optional   texts for membership-inference AUC

Assumption (checked against the dataset card of ``muse-bench/MUSE-News`` in 2025; the card has renamed
splits before, e.g. ``retain2_qa`` -> ``retain_qa``): every config/split above exists on the hub, so a
hub source loads all of them and a missing one is an error that names it.
MUSE trained its target on a larger ``train`` config (it repeats the forget set); this sweeper fine-tunes
its targets on ``train_texts()`` = raw forget + retain1 + retain2 instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sweeper.data.tofu import hub_rows, read_json_rows, resolve_source, validate_rows

TEXT, PROMPT, QA = "text", ("prompt", "gt"), ("question", "answer")

#: attribute -> (config, split, row kind, required)
FILES: dict[str, tuple[str, str, object, bool]] = {
    "forget": ("raw", "forget", TEXT, True),
    "retain": ("raw", "retain1", TEXT, True),
    "retain2": ("raw", "retain2", TEXT, False),
    "holdout": ("raw", "holdout", TEXT, False),
    "verbmem_forget": ("verbmem", "forget", PROMPT, True),
    "knowmem_forget": ("knowmem", "forget_qa", QA, True),
    "knowmem_retain": ("knowmem", "retain_qa", QA, True),
    "knowmem_forget_icl": ("knowmem", "forget_qa_icl", QA, False),
    "knowmem_retain_icl": ("knowmem", "retain_qa_icl", QA, False),
    "privleak_forget": ("privleak", "forget", TEXT, False),
    "privleak_retain": ("privleak", "retain", TEXT, False),
    "privleak_holdout": ("privleak", "holdout", TEXT, False),
}


@dataclass
class MuseData:
    """Text splits are ``list[str]``; verbmem and knowmem splits are lists of dict rows."""

    forget: list[str]
    retain: list[str]
    verbmem_forget: list[dict]
    knowmem_forget: list[dict]
    knowmem_retain: list[dict]
    retain2: list[str] = field(default_factory=list)
    holdout: list[str] = field(default_factory=list)
    knowmem_forget_icl: list[dict] = field(default_factory=list)
    knowmem_retain_icl: list[dict] = field(default_factory=list)
    privleak_forget: list[str] = field(default_factory=list)
    privleak_retain: list[str] = field(default_factory=list)
    privleak_holdout: list[str] = field(default_factory=list)
    source: str = ""

    def train_texts(self) -> list[str]:
        """The target's fine-tuning texts: everything the unlearning later forgets or keeps."""
        return self.forget + self.retain + self.retain2


def _texts(rows: list, where: str) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        text = row.get("text") if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise ValueError(f"{where}: row {i} has no text; text rows must be strings or "
                             "objects with a string 'text' key.")
        out.append(text)
    return out


def load_muse(source: str) -> MuseData:
    """Load every MUSE-NEWS split listed in the module docstring from a folder or a hub id."""
    folder = resolve_source(source)
    parts: dict = {}
    for attr, (config, split, kind, required) in FILES.items():
        if folder is None:
            where, rows = f"{source} config {config} split {split}", hub_rows(source, config, split)
        else:
            path = folder / config / f"{split}.json"
            where = str(path)
            if not path.is_file():
                if required:
                    raise FileNotFoundError(f"{path} is missing; a MUSE folder needs "
                                            f"{config}/{split}.json (see sweeper.data.muse).")
                continue
            rows = read_json_rows(path)
        parts[attr] = _texts(rows, where) if kind == TEXT else validate_rows(rows, kind, where)
    return MuseData(source=str(source), **parts)
