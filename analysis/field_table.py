"""The field's privacy and memorisation metrics as a table: one row per model x method column, as the
open-unlearning framework reports them beside TOFU's own metrics.

    from analysis.field_table import field_table
    print(field_table(data.summaries, fmt="html"))     # "markdown" | "html" | "latex"

Cells are means over seeds ("m ± h" with the 95% t-interval when several); a metric a trial could not
compute (no holdout rows, no retrained reference) is a blank cell ("–"), never an error.
"""
from __future__ import annotations

import pandas as pd

from analysis.load import BASELINE, REFERENCE
from analysis.tables import DASH, _row_groups, _stat, _usable, label_trials, render

#: (summary column, header, better): the field's columns (sweeper/store/results.py defines each).
FIELD_COLUMNS = [
    ("mia_loss", "MIA LOSS", "→0.5"), ("mia_zlib", "MIA zlib", "→0.5"), ("mia_min_k", "MIA Min-K%", "→0.5"),
    ("mia_min_k_plus_plus", "MIA Min-K%++", "→0.5"), ("privleak", "PrivLeak", "→0"),
    ("exact_mem_forget", "EM forget", "↓"), ("extraction_strength_forget", "ES forget", "↓"),
    ("exact_mem_retain", "EM retain", "↑"), ("extraction_strength_retain", "ES retain", "↑"),
]


def has_field_metrics(df: pd.DataFrame) -> bool:
    """Whether any trial has any of the field's columns (else the report leaves the table out)."""
    return any(c in df and pd.to_numeric(df[c], errors="coerce").notna().any() for c, _, _ in FIELD_COLUMNS)


def field_table(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """Rows: model x method column (No-unlearn and the retrained reference first); columns: the field's
    metrics with the direction that is better."""
    df = label_trials(_usable(df))
    cols = [(c, h, b) for c, h, b in FIELD_COLUMNS if c in df]
    rows, seeds = [], False
    for title, g in _row_groups(df):
        first = True
        ref_first = g.assign(_ref=~g["method"].isin([BASELINE, REFERENCE]))
        for column, cell in sorted(ref_first.groupby("column"), key=lambda kv: (kv[1]["_ref"].min(), kv[1]["order"].min())):
            row = [title if first else "", column]
            first = False
            for c, _, _ in cols:
                values = pd.to_numeric(cell[c], errors="coerce")
                seeds |= values.notna().sum() > 1
                row.append(_stat(values)[0] if values.notna().any() else DASH)
            rows.append(row)
    caption = ("MIA: ROC AUC of telling holdout from forget answers (1 = forget looks memorised, 0.5 = like "
               "never-seen). PrivLeak: MUSE's (AUC - AUC_retrained) / AUC_retrained × 100. EM: exact "
               "memorisation; ES: extraction strength. – : not computed (no holdout rows or no retrained "
               "reference; the trial's log says which).")
    if seeds:
        caption += " m ± h: mean and 95% t-interval over seeds."
    return render(["Model", "Method", *[f"{h} ({b})" for _, h, b in cols]], rows, caption, fmt)
