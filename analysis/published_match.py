"""What matches a summary row to a published value: which rows are compared, and the checkpoint's
published split (shared by ``analysis.published``, the targets, and ``analysis.published_methods``)."""
from __future__ import annotations

import json

from analysis.load import BASELINE

#: Summary rows that can be compared: the No-unlearn target and the retrained (retain-only) reference.
COMPARED_METHODS = (BASELINE, "retrained_reference")
#: MUSE data sources (lower case) -> the published split.
MUSE_SPLITS = {"muse-bench/muse-news": "news", "muse-bench/muse-books": "books"}


def _params(text) -> dict:
    try:
        params = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}


def _split(data: dict) -> str | None:
    """The published split a row's data entry corresponds to: a TOFU forget split, "news" / "books",
    or None (MUSE without a named source: any split of the checkpoint)."""
    if data.get("kind", "tofu") == "tofu":
        return data.get("forget_split")
    return MUSE_SPLITS.get(str(data.get("source", "")).rstrip("/").lower())
