"""The paper's success criteria (Tables 1-2): which cells are bold.

A cell succeeds when Verbmem < 0.1 (absolute), Knowmem < 70% of No-unlearn, Utility >= 70% of
No-unlearn, TruthRatio >= 70% of No-unlearn. Usage::

    from analysis.success import SuccessCriteria, success_flags
    flags = success_flags(data.summaries, SuccessCriteria(utility_rel_min=0.8))

Metrics whose column is absent (e.g. ``knowmem_forget`` outside MUSE) are simply skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.load import BASELINE

#: Paper metric -> (default column, arrow shown in tables). Verbmem is ROUGE-L recall on forget
#: answers and Utility on retain answers, which is what the sweep measures today.
METRICS = {
    "Verbmem": ("rouge_forget", "↓"),
    "Knowmem": ("knowmem_forget", "↓"),
    "Utility": ("rouge_retain", "↑"),
    "TruthRatio": ("truth_ratio_retain", "↑"),
}
#: Columns that identify which No-unlearn target a trial is compared with.
BASELINE_KEYS = ("model", "dataset")


@dataclass(frozen=True)
class SuccessCriteria:
    """Thresholds of the success test; relative ones are fractions of the No-unlearn value."""

    verbmem_max: float = 0.1
    knowmem_rel_max: float = 0.7
    utility_rel_min: float = 0.7
    truth_ratio_rel_min: float = 0.7
    columns: dict = field(default_factory=lambda: {m: c for m, (c, _) in METRICS.items()})

    def passes(self, metric: str, value, baseline) -> pd.arrays.BooleanArray:
        """Vectorised test of ``value`` against the criterion of ``metric`` (NaN in -> NA out)."""
        value = np.asarray(value, dtype=float)
        baseline = np.broadcast_to(np.asarray(baseline, dtype=float), value.shape)
        if metric == "Verbmem":
            ok, known = value < self.verbmem_max, np.isfinite(value)
        else:
            rel, below = {"Knowmem": (self.knowmem_rel_max, True), "Utility": (self.utility_rel_min, False),
                          "TruthRatio": (self.truth_ratio_rel_min, False)}[metric]
            ok = value < rel * baseline if below else value >= rel * baseline
            known = np.isfinite(value) & np.isfinite(baseline)
        return _masked(ok, known)


def _masked(ok: np.ndarray, known: np.ndarray) -> pd.arrays.BooleanArray:
    """Booleans with NA where the test could not be made (missing value or missing baseline)."""
    return pd.arrays.BooleanArray(np.asarray(ok, bool), ~np.asarray(known, bool))


def available_metrics(df: pd.DataFrame, criteria: SuccessCriteria = SuccessCriteria()) -> list[str]:
    """The paper metrics whose column exists in ``df`` and holds at least one value."""
    return [m for m, col in criteria.columns.items() if col in df and df[col].notna().any()]


def baseline_values(df: pd.DataFrame, baseline_rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """For each row of ``df``, the mean No-unlearn value of each column for the same model and dataset."""
    keys = [k for k in BASELINE_KEYS if k in df and k in baseline_rows]
    cols = [c for c in columns if c in baseline_rows]
    if not keys:  # one target for everything
        means = baseline_rows[cols].mean(numeric_only=True)
        return pd.DataFrame({c: means.get(c, np.nan) for c in columns}, index=df.index)
    # Several seeds of one target are averaged, the way a table cell would be.
    means = baseline_rows.groupby(keys, dropna=False)[cols].mean().reset_index()
    merged = df[keys].merge(means, on=keys, how="left")
    merged.index = df.index
    return merged.reindex(columns=columns)


def success_flags(df: pd.DataFrame, criteria: SuccessCriteria = SuccessCriteria(),
                  baseline_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per row of ``df``, one nullable boolean column per available metric plus ``success`` (all pass).

    ``baseline_rows`` are the No-unlearn rows to compare with (default: those inside ``df``). Rows that
    are themselves No-unlearn get NA: success is a property of an unlearning method.
    """
    if baseline_rows is None:
        baseline_rows = df[df["method"] == BASELINE] if "method" in df else df.iloc[:0]
    metrics = available_metrics(df, criteria)
    columns = [criteria.columns[m] for m in metrics]
    base = baseline_values(df, baseline_rows, columns)
    is_base = (df["method"] == BASELINE).to_numpy() if "method" in df else np.zeros(len(df), bool)
    out = pd.DataFrame(index=df.index)
    for metric, col in zip(metrics, columns):
        flags = criteria.passes(metric, df[col], base[col])
        flags[is_base] = pd.NA
        out[metric] = flags
    # Kleene "and": False if any test fails, True if all pass, NA when one could not be made.
    any_false = (out[metrics] == False).fillna(False).any(axis=1).to_numpy(bool)  # noqa: E712
    all_true = (out[metrics] == True).fillna(False).all(axis=1).to_numpy(bool) & bool(metrics)  # noqa: E712
    out["success"] = _masked(all_true, (any_false | all_true) & ~is_base)
    return out
