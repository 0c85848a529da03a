"""Curve figures of thousands of trials: at most a readable number of series, the rest summarised.

Above ``analysis.plots.MAX_SERIES`` trials a curve figure draws, per label (a method column, or a
learning rate), the median of the label's trials at each step and the band of their 10-90% range,
for at most that many labels in the tables' order (Figure 4's method columns with their learning rates
pooled when there are more columns than that); the figure's title says how it was drawn and how many
labels (and trials) it left out::

    summary = summarised(steps, "column", labels, limit=20)   # {"labels", "names", "note"}
    steps = pool_learning_rates(steps, "column")   # more method columns than that: lrs pooled per method
    draw_bands(ax, steps, "column", summary["labels"], "loss_forget", colors, styles)
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def summarised(steps: pd.DataFrame, label_col: str, labels: list, limit: int, spread: bool = False) -> dict:
    """The labels drawn (the first ``limit`` of ``labels``, or with ``spread`` that many evenly spread
    over them: learning rates from the smallest to the largest), their legend names with trial counts,
    and the note for the figure's title."""
    counts = steps.groupby(label_col, sort=False)["trial_dir"].nunique()
    keep = np.unique(np.linspace(0, len(labels) - 1, limit).round().astype(int)) if spread and len(labels) > limit \
        else range(min(limit, len(labels)))
    shown = [labels[i] for i in keep]
    left = [lab for lab in labels if lab not in set(shown)]
    note = (f"{steps['trial_dir'].nunique():,} trials: each line is the median of one label's trials at each step, "
            "the band their 10-90% range")
    if left:
        note += f"; {len(left)} more labels ({int(counts.reindex(left).sum()):,} trials) not drawn: see summary.md"
    return {"labels": shown, "names": {lab: f"{lab} ({counts[lab]:,})" for lab in shown}, "note": note}


def pool_learning_rates(steps: pd.DataFrame, label_col: str) -> pd.DataFrame:
    """``steps`` with the learning rate dropped from each label ("NGDiff η=0.001" -> "NGDiff (all lr)"),
    so a figure of a sweep over many rates draws one band per method over all of them."""
    pooled = steps[label_col].astype(str).str.replace(r" η=\S+$", " (all lr)", regex=True)
    return steps.assign(**{label_col: pooled})


def quantiles(d: pd.DataFrame, keys, col: str) -> pd.DataFrame:
    """10%, median and 90% of ``col`` per ``keys`` group (columns 0.1, 0.5, 0.9), finite values only."""
    if col not in d:
        return pd.DataFrame(columns=[0.1, 0.5, 0.9])
    v = pd.to_numeric(d[col], errors="coerce")
    d = d[np.isfinite(v.to_numpy(dtype=float))]
    return d.groupby(keys, sort=True)[col].quantile([0.1, 0.5, 0.9]).unstack()


def draw_bands(ax, steps: pd.DataFrame, label_col: str, labels: list, col: str, colors, styles) -> None:
    """Median line and 10-90% band of ``col`` per label over its trials, at each step (one groupby).
    A label whose values exist on under half its steps (ROUGE: evaluated steps only) gets markers."""
    if col not in steps:
        return
    d = steps[steps[label_col].isin(labels)][[label_col, "step", col]]
    q = quantiles(d, [label_col, "step"], col)
    if q.empty:
        return
    all_steps = d.groupby(label_col)["step"].nunique()
    for lab in labels:
        if lab not in q.index.get_level_values(0):
            continue
        g = q.loc[lab]
        sparse = len(g) < 0.5 * all_steps.get(lab, len(g))
        ax.plot(g.index, g[0.5], color=colors[lab], ls=styles[lab], lw=1.4, marker="o" if sparse else None, ms=3)
        ax.fill_between(g.index, g[0.1], g[0.9], color=colors[lab], alpha=0.15, lw=0)
