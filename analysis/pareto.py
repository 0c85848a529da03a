"""Pareto fronts and 2-D hypervolume (the paper's Definition 1 and Figure 1).

Definition 1 for losses: a model is better when L_F is higher and L_R is lower, so
``pareto_front(df, "final_loss_forget", "final_loss_retain", minimize_x=False, minimize_y=True)``.
For ROUGE: forget ROUGE down, retain ROUGE up, so
``pareto_front(df, "rouge_forget", "rouge_retain")`` (the defaults).

    >>> hypervolume_2d([(1, 3), (2, 2), (3, 1)], ref=(4, 4), senses=("min", "min"))
    6.0
"""
from __future__ import annotations

import numpy as np
import pandas as pd

ROUGE_AXES = ("rouge_forget", "rouge_retain")
ROUGE_SENSES = ("min", "max")
#: The worst possible ROUGE corner: everything still remembered, nothing retained.
ROUGE_REF = (1.0, 0.0)
LOSS_AXES = ("final_loss_forget", "final_loss_retain")
LOSS_SENSES = ("max", "min")


def pareto_front(df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, minimize_y: bool = False) -> pd.Series:
    """Boolean mask (aligned with ``df``) of the non-dominated rows.

    A row is dominated when another row is at least as good on both axes and strictly better on one.
    Duplicated points do not dominate each other, so all copies of a front point stay on the front.
    Rows with a missing or non-finite coordinate are never on the front and dominate nothing.
    """
    a = _as_min(df[x].to_numpy(dtype=float), minimize_x)
    b = _as_min(df[y].to_numpy(dtype=float), minimize_y)
    return pd.Series(_non_dominated(a, b), index=df.index, name="pareto")


def hypervolume_2d(points, ref, senses=("min", "min")) -> float:
    """Exact area dominated by ``points`` (n x 2) and bounded by the reference point ``ref``.

    ``senses`` says per axis whether smaller ("min") or larger ("max") is better. Points that do not
    strictly beat the reference on both axes add nothing; non-finite points are ignored.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    flips = [_sense_is_min(s) for s in senses]
    a, b = _as_min(pts[:, 0], flips[0]), _as_min(pts[:, 1], flips[1])
    ra, rb = _as_min(np.array([ref[0]], float), flips[0])[0], _as_min(np.array([ref[1]], float), flips[1])[0]
    keep = np.isfinite(a) & np.isfinite(b) & (a < ra) & (b < rb)
    a, b = a[keep], b[keep]
    front = _non_dominated(a, b)
    a, b = a[front], b[front]
    # On a minimising front sorted by a, b decreases: sum the vertical slabs up to the next point.
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    widths = np.diff(np.append(a, ra))
    return float(np.sum(widths * (rb - b)))


def hypervolume_by_method(df: pd.DataFrame, x: str, y: str, ref, senses, group=("model", "method")) -> pd.DataFrame:
    """Hypervolume of each group's points (e.g. GDiff's c-sweep) against one stated reference point.

    Returns the group columns plus ``hypervolume``, ``points`` (finite points) and ``front`` (how many
    are non-dominated within the group), sorted by hypervolume, best first.
    """
    group = [g for g in group if g in df]
    rows = []
    for key, g in df.groupby(group, dropna=False, sort=True) if group else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        finite = g[np.isfinite(g[x].astype(float)) & np.isfinite(g[y].astype(float))]
        front = pareto_front(finite, x, y, _sense_is_min(senses[0]), _sense_is_min(senses[1])) if len(finite) else []
        rows.append({**dict(zip(group, key)),
                     "hypervolume": hypervolume_2d(finite[[x, y]].to_numpy(), ref, senses),
                     "points": len(finite), "front": int(np.sum(front))})
    out = pd.DataFrame(rows, columns=[*group, "hypervolume", "points", "front"])
    return out.sort_values("hypervolume", ascending=False, kind="stable").reset_index(drop=True)


def _sense_is_min(sense) -> bool:
    if sense in ("min", "max"):
        return sense == "min"
    raise ValueError(f"a sense is 'min' or 'max', not {sense!r}.")


def _as_min(values: np.ndarray, minimize: bool) -> np.ndarray:
    """Values turned into a minimisation problem (larger-is-better axes are negated)."""
    return values if minimize else -values


def _non_dominated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of points not dominated when minimising both ``a`` and ``b`` (O(n log n) sweep)."""
    mask = np.zeros(len(a), dtype=bool)
    ok = np.flatnonzero(np.isfinite(a) & np.isfinite(b))
    if not len(ok):
        return mask
    order = ok[np.lexsort((b[ok], a[ok]))]
    sa, sb = a[order], b[order]
    # Points sharing the same a form a group; sorted by b within it, so its first b is its minimum.
    starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])
    group_min = sb[starts]
    # Best b among groups with strictly smaller a (exclusive running minimum).
    before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    gid = np.cumsum(np.r_[True, sa[1:] != sa[:-1]]) - 1
    # Dominated by a same-a point with smaller b, or by any smaller-a point with b <= ours.
    keep = (sb == group_min[gid]) & (before[gid] > sb)
    mask[order] = keep
    return mask
