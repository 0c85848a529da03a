"""Evaluated points, each trial's best points, seed means, and what the front cost.

A trial is evaluated every ``eval.every`` steps and at its last step, so on the ROUGE panel it is a
path of points, not only its final one. A front search (summary ``search`` = "front:gap" or
"front:optuna") also records when each trial finished, which orders its trials for hypervolume
against trials and device-seconds::

    from analysis.load import load_run
    from analysis import front
    data = load_run("runs/front")
    pts = front.evaluation_points(data)                  # one row per (trial, evaluated step)
    best = front.best_points(pts, "rouge_forget", "rouge_retain", ("min", "max"))
    means = front.seed_means(pts, "rouge_forget", "rouge_retain")   # one row per (configuration, step)
    trace = front.hypervolume_trace(data, "rouge_forget", "rouge_retain", (1.0, 0.0), ("min", "max"))
    costs = front.front_costs(data)                      # front points, with the step and device-s of each

Device-seconds of a trial up to step t: ``wall_s`` at t x workers x GPUs per worker (1 on CPU).
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd

from analysis.load import BASELINE, REFERENCE, RunData, devices
from analysis.pareto import ROUGE_REF, ROUGE_SENSES, _non_dominated, _sense_is_min, pareto_front
from analysis.tables import label_trials, t_half_width
from sweeper.store.results import STEP_SCHEMA

#: A configuration: every setting of a trial but its seed. The seeds of one configuration are averaged.
#: ``config`` (from params_json) tells apart what the named columns do not, such as NPO's beta.
CONFIG = ["model", "dataset", "method", "c", "forget_loss", "lr_mode", "lr", "config"]
#: What each evaluated point carries of its trial.
TRIAL_COLUMNS = ["trial_id", "trial_dir", *CONFIG, "seed", "search", "study", "status"]
#: The search kind of trials without a ``search`` value (every run from before front searches).
GRID = "grid"
#: Rows that are not unlearning trials: one point each, at step 0, costing nothing.
TARGETS = (BASELINE, REFERENCE)


def search_kind(summaries: pd.DataFrame) -> pd.Series:
    """How each trial was chosen: its ``search`` value ("grid", "front:gap", ...), "grid" when null."""
    kind = summaries["search"] if "search" in summaries else pd.Series(None, index=summaries.index, dtype=object)
    return kind.astype(object).where(kind.notna(), GRID)


# ---------------------------------------------------------------- points


def evaluation_points(data: RunData, x: str = "rouge_forget", y: str = "rouge_retain") -> pd.DataFrame:
    """One row per (trial, evaluated step) where ``x`` and ``y`` are both finite.

    Points come from the steps when both columns are per-step metrics (ROUGE: every ``eval.every``
    steps and the last step); otherwise (losses), and for a trial without an evaluated step (a run
    without steps.parquet), from the summary's final point at ``step`` = the trial's steps.
    No-unlearn and retrained-reference rows are one point at step 0 costing nothing; failed trials
    have none. Columns: ``TRIAL_COLUMNS`` (``search`` "grid" when null), ``step``, ``x``, ``y``,
    ``device_s`` (what the trial had spent up to that step) and ``final`` (its last evaluation)::

        pts = evaluation_points(load_run("runs/demo"))
        pts[pts["final"]]                # the summaries' points; the other rows: earlier evaluations
    """
    trials = _normalised(data.summaries)
    trials = trials[trials["status"] != "failed"]
    per_step = _step_points(data.steps, trials, x, y)
    rest = trials[~trials["trial_dir"].isin(per_step["trial_dir"].unique())]   # unique: 30x faster at 10k trials
    frames = [f for f in (per_step, _summary_points(rest, x, y)) if len(f)]
    columns = [*TRIAL_COLUMNS, "step", x, y, "device_s", "final"]
    if not frames:
        return pd.DataFrame(columns=columns)
    pts = pd.concat(frames, ignore_index=True)
    pts = pts[np.isfinite(pts[x].astype(float)) & np.isfinite(pts[y].astype(float))]
    pts = pts.astype({"step": "Int64", "final": bool})
    return pts.sort_values(["trial_dir", "step"], kind="stable").reset_index(drop=True)[columns]


def best_points(points: pd.DataFrame, x: str = "rouge_forget", y: str = "rouge_retain",
                senses=ROUGE_SENSES, by="trial_dir") -> pd.DataFrame:
    """Each trial's non-dominated evaluated points (per ``by`` group: pass ``CONFIG`` for seed means).

    A trial that goes on after its best moment (forget ROUGE still falling, retain ROUGE falling
    faster) ends dominated by one of its own earlier evaluations; that evaluation is kept here::

        best = best_points(evaluation_points(data), "rouge_forget", "rouge_retain", ("min", "max"))
        best[~best["final"]]             # better moments that the final points do not show
    """
    if points.empty:
        return points
    min_x, min_y = (_sense_is_min(s) for s in senses)
    keys = [k for k in ([by] if isinstance(by, str) else by) if k in points]
    if not keys:
        return points[pareto_front(points, x, y, min_x, min_y)]
    masks = [pareto_front(g, x, y, min_x, min_y) for _, g in points.groupby(keys, dropna=False, sort=False)]
    return points[pd.concat(masks).reindex(points.index, fill_value=False)]


def seed_means(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """One point per configuration (``CONFIG``: everything but the seed) and ``step``, when present.

    ``x`` and ``y`` become the means over the seeds, with the 95% t half-widths in ``<x>_err`` and
    ``<y>_err`` (NaN for one seed) and ``seeds`` (how many points were averaged); ``device_s`` is the
    seeds' mean (what one trial had spent); other columns are the first seed's. ``final`` becomes
    the configuration's last evaluated step. One seed per configuration leaves the points as they are::

        means = seed_means(evaluation_points(data), "rouge_forget", "rouge_retain")
    """
    extra = [f"{x}_err", f"{y}_err", "seeds"]
    if points.empty:
        return points.reindex(columns=[*points.columns, *extra])
    keys = [k for k in (*CONFIG, "step") if k in points]
    groups = points.groupby(keys, dropna=False, sort=False)
    out = points.copy()
    n = groups[x].transform("size")
    for col in (x, y):
        out[col] = groups[col].transform("mean")
        out[f"{col}_err"] = t_half_width(groups[col].transform("std"), n)
    if "device_s" in out:
        out["device_s"] = groups["device_s"].transform("mean")
    out["seeds"] = n
    out = out.drop_duplicates(keys)  # the same groups as above: drop_duplicates also matches NaN to NaN
    if "final" in out and "step" in keys:
        config = [k for k in keys if k != "step"]
        out["final"] = out["step"] == out.groupby(config, dropna=False)["step"].transform("max")
    return out


# ---------------------------------------------------------------- cost

#: Metrics bounded in [0, 1]: their worst value is the reference corner (1 when lower is better, else 0).
BOUNDED = {"rouge_forget", "rouge_retain", "exact_forget", "exact_retain", "rouge_f1_forget", "rouge_f1_retain",
           "prob_forget", "prob_retain", "model_utility", "forget_quality", "knowmem_forget", "knowmem_retain",
           "verbmem_forget", "accuracy_forget", "accuracy_retain", "truth_ratio_retain"}


def search_axes(data: RunData):
    """(x, y, senses, reference) to cost a run's searches on: the objectives its front search declared
    (one pair for the whole run), else Figure 1's ROUGE axes. The reference is the worst corner for
    metrics bounded in [0, 1], else the worst value any trial reached (stated in the report)::

        x, y, senses, ref = search_axes(data)
        trace = hypervolume_trace(data, x, y, ref, senses)
    """
    from sweeper.grid.search_settings import SENSES
    pairs = set()
    for text in data.summaries.get("params_json", pd.Series(dtype=object)).dropna():
        objectives = ((json.loads(text).get("search") or {}).get("objectives")) if isinstance(text, str) else None
        if objectives:
            pairs.add(tuple(objectives))
    if len(pairs) != 1 or not set(next(iter(pairs))) <= set(SENSES):
        return "rouge_forget", "rouge_retain", ROUGE_SENSES, ROUGE_REF
    x, y = next(iter(pairs))
    senses = (SENSES[x], SENSES[y])
    pts = evaluation_points(data, x, y)
    pts = pts[~pts["method"].isin(TARGETS)]
    ref = tuple((1.0 if s == "min" else 0.0) if m in BOUNDED else
                float(pts[m].max() if s == "min" else pts[m].min()) if len(pts) else float("nan")
                for m, s in zip((x, y), senses))
    return x, y, senses, ref



def hypervolume_trace(data: RunData, x: str = "rouge_forget", y: str = "rouge_retain",
                      ref=ROUGE_REF, senses=ROUGE_SENSES) -> pd.DataFrame:
    """Hypervolume against cost, per (model, dataset, search kind): one row after each trial.

    Trials count in the order they finished (``finished_at``; by ``trial_id`` where it is null, as in
    runs from before front searches). After the k-th: ``trials`` = k, ``trial_id`` (the k-th),
    ``device_s`` = device-seconds of those k whole trials (failed ones included: they cost too) and
    ``hypervolume`` of all evaluated points of the k trials (seed means per configuration and step)
    against ``ref``. Without seeds it never decreases; with seeds a new seed can move a mean either
    way. No-unlearn and reference rows are not part of any search::

        trace = hypervolume_trace(data, "rouge_forget", "rouge_retain", (1.0, 0.0), ("min", "max"))
        trace.groupby(["model", "search"]).last()      # what each search reached, and at what cost
    """
    trials = _normalised(data.summaries)
    trials = trials[~trials["method"].isin(TARGETS)]
    group = ["model", "dataset", "search"]
    columns = [*group, "trials", "trial_id", "device_s", "hypervolume"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    trials = trials.assign(device_s=pd.to_numeric(trials["wall_s"], errors="coerce").fillna(0) * trials["devices"])
    pts = evaluation_points(data, x, y)
    rows = []
    for key, g in trials.groupby(group, dropna=False, sort=True):
        g = g.sort_values(["finished_at", "trial_id"], na_position="last", kind="stable")
        order = pd.Series(np.arange(len(g)), index=g["trial_dir"].to_numpy())
        mine = pts[pts["trial_dir"].isin(order.index)]
        volumes = _prefix_hypervolumes(mine.assign(order=mine["trial_dir"].map(order)), len(g), x, y, ref, senses)
        rows += [{**dict(zip(group, key)), "trials": k, "trial_id": tid, "device_s": float(cost), "hypervolume": hv}
                 for k, tid, cost, hv in zip(range(1, len(g) + 1), g["trial_id"], g["device_s"].cumsum(), volumes)]
    return pd.DataFrame(rows, columns=columns)


def front_costs(data: RunData, x: str = "rouge_forget", y: str = "rouge_retain",
                senses=ROUGE_SENSES) -> pd.DataFrame:
    """The front of each model and dataset, each point with what reaching it cost.

    Points are the seed means (``seed_means``) of every evaluated point of the unlearning trials
    (No-unlearn and the reference are where unlearning starts and aims, not points it reached); the
    non-dominated ones per (model, dataset) come back sorted by ``x``, with ``label`` / ``column``
    (the method's name in the tables), ``step`` (the evaluated step), ``device_s`` (what the point's
    trial had spent up to that step; the mean over its seeds), ``seeds``, the 95% half-widths and
    ``search`` (how the trial was chosen)::

        front_costs(data)[["label", "c", "step", "device_s", "search"]]
    """
    pts = evaluation_points(data, x, y)
    means = seed_means(pts[~pts["method"].isin(TARGETS)], x, y)
    front = label_trials(best_points(means, x, y, senses, by=["model", "dataset"]))
    columns = ["model", "dataset", "method", "label", "column", "c", "lr", "lr_mode", "forget_loss", "step", x, y,
               f"{x}_err", f"{y}_err", "seeds", "device_s", "search", "study", "trial_id", "final"]
    return front.sort_values(["model", "dataset", x], kind="stable").reset_index(drop=True).reindex(columns=columns)


def table_trials(data: RunData) -> tuple[pd.DataFrame, str]:
    """The summaries the success tables show, and a sentence saying what was left out.

    A grid's trials are all shown. A front search proposes a new configuration per trial (continuous c
    and lr), so a table column per trial would bury the answer; of each study only the configurations
    (every seed of each) with a point on that study's own front, on its own objectives, are shown::

        shown, note = table_trials(load_run("runs/front_demo"))
        paper_table(shown)          # summary.md still lists every trial
    """
    s = _normalised(data.summaries)
    searched = (s["search"] != GRID) & ~s["method"].isin(TARGETS)
    if not searched.any():
        return data.summaries, ""
    x, y, senses, _ = search_axes(data)
    pts = evaluation_points(data, x, y)
    pts = pts[(pts["search"] != GRID) & ~pts["method"].isin(TARGETS)]
    best = best_points(seed_means(pts, x, y), x, y, senses, by=["model", "dataset", "study"])
    on_front = {_key(r) for _, r in best.iterrows()}
    keep = ~searched | s.apply(lambda r: _key(r) in on_front, axis=1)
    studies = s.loc[searched, "study"].nunique(dropna=False)
    shown = s.loc[searched & keep].groupby(CONFIG, dropna=False).ngroups
    total = s.loc[searched].groupby(CONFIG, dropna=False).ngroups
    note = (f"Front search: the tables show the {shown} of {total} searched configuration(s) on their study's "
            f"front ({x}, {y}; {studies} stud{'y' if studies == 1 else 'ies'}); summary.md lists every trial.")
    return data.summaries[keep.to_numpy()], note


# ---------------------------------------------------------------- helpers


def _key(row) -> tuple:
    """A configuration (``CONFIG``) as a hashable tuple, missing values as None."""
    return tuple(None if _missing(row[c]) else row[c] for c in CONFIG)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _prefix_hypervolumes(pts: pd.DataFrame, n: int, x: str, y: str, ref, senses) -> list[float]:
    """Hypervolume of the seed means (per configuration and step) of the points of the first k trials,
    for k = 1..n; ``pts["order"]`` is each point's trial's place (0..n-1).

    Same numbers as ``seed_means`` of each prefix, but one pass: a running mean per (configuration,
    step) that moves as its seeds arrive, and the area is recomputed only when a trial moves a point
    on the current front or adds one that no front point covers (otherwise it cannot change), so a
    grid or search of thousands of trials stays cheap.
    """
    if pts.empty:
        return [0.0] * n
    cell = [k for k in (*CONFIG, "step") if k in pts]
    pts = pts.sort_values("order", kind="stable")
    cells = pts.groupby(cell, dropna=False, sort=False)
    arrived = cells.cumcount() + 1
    ids = cells.ngroup().to_numpy()
    flips = [_sense_is_min(sv) for sv in senses]
    # minimising coordinates; a point that does not beat the reference (or is not finite) counts as +inf
    a, b = ((cells[c].cumsum() / arrived).to_numpy(float) * (1 if f else -1) for c, f in zip((x, y), flips))
    ra, rb = (r * (1 if f else -1) for r, f in zip(ref, flips))
    ok = np.isfinite(a) & np.isfinite(b) & (a < ra) & (b < rb)
    a, b = np.where(ok, a, np.inf), np.where(ok, b, np.inf)
    cur_a, cur_b = np.full(ids.max() + 1, np.inf), np.full(ids.max() + 1, np.inf)
    on_front = np.zeros(len(cur_a), bool)
    ends = np.searchsorted(pts["order"].to_numpy(), np.arange(1, n + 1))  # rows of the first k trials
    volumes, hv, start = [], 0.0, 0
    for end in ends:
        rows = np.arange(start, end)
        start = end
        if len(rows):
            changed = ids[rows]
            fa, fb = cur_a[on_front], cur_b[on_front]
            covered = all(not np.isfinite(a[r]) or ((fa <= a[r]) & (fb <= b[r])).any() for r in rows)
            for r in rows:   # in order, so a cell's last row this trial wins
                cur_a[ids[r]], cur_b[ids[r]] = a[r], b[r]
            if on_front[changed].any() or not covered:
                hv, on_front = _area(cur_a, cur_b, ra, rb)
        volumes.append(hv)
    return volumes


def _area(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> tuple[float, np.ndarray]:
    """Area dominated by the finite points (minimising both) up to (ra, rb), and the mask of the front."""
    finite = np.isfinite(a) & np.isfinite(b)
    front = np.zeros(len(a), bool)
    if not finite.any():
        return 0.0, front
    idx = np.flatnonzero(finite)
    front[idx[_non_dominated(a[idx], b[idx])]] = True
    fa, fb = a[front], b[front]
    order = np.lexsort((fb, fa))
    fa, fb = fa[order], fb[order]
    return float(np.sum(np.diff(np.append(fa, ra)) * (rb - fb))), front


def _normalised(summaries: pd.DataFrame) -> pd.DataFrame:
    """Summaries with every column the points need (missing ones null, as in older runs), ``search``
    filled with "grid", and ``devices`` (workers x GPUs per worker)."""
    s = summaries.copy()
    if "trial_dir" not in s:  # a bare summaries frame, not from load_run: a row is a trial
        s["trial_dir"] = s["trial_id"] if "trial_id" in s else s.index.astype(str)
    for col in [*TRIAL_COLUMNS, "steps", "wall_s", "finished_at"]:
        if col not in s:
            s[col] = None
    s["search"] = search_kind(s)
    s["devices"] = devices(s)
    s["config"] = s["params_json"].map(_config_key) if "params_json" in s else None
    return s


def _config_key(params_json) -> str | None:
    """A trial's full configuration without its seed (and run name), as one string."""
    if not isinstance(params_json, str):
        return None
    return _config_of(params_json)


@functools.lru_cache(maxsize=1 << 16)   # the report asks for the points of the same trials several times
def _config_of(params_json: str) -> str | None:
    try:
        params = json.loads(params_json)
    except ValueError:
        return None
    return json.dumps({k: v for k, v in params.items() if k not in ("seed", "run")}, sort_keys=True)


def _step_points(steps: pd.DataFrame | None, trials: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Evaluated steps of the unlearning trials (both metrics set), with their trial's columns."""
    per_step = x in STEP_SCHEMA.names and y in STEP_SCHEMA.names
    if steps is None or not per_step or not {"trial_dir", "step", x, y} <= set(steps.columns):
        return pd.DataFrame(columns=["trial_dir"])
    evaluated = steps.loc[steps[x].notna() & steps[y].notna()].reindex(columns=["trial_dir", "step", x, y, "wall_s"])
    # No-unlearn and reference rows stay one summary point each, even if they ever get curves.
    unlearning = trials.loc[~trials["method"].isin(TARGETS), [*TRIAL_COLUMNS, "devices"]]
    pts = evaluated.merge(unlearning, on="trial_dir", how="inner")
    pts["device_s"] = pd.to_numeric(pts["wall_s"], errors="coerce") * pts["devices"]
    pts["final"] = pts["step"] == pts.groupby("trial_dir")["step"].transform("max")
    return pts


def _summary_points(trials: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Each trial's final point from its summary (its only point): step = steps run, device_s = the
    whole trial; No-unlearn and reference rows at step 0 costing nothing."""
    if x not in trials or y not in trials or trials.empty:
        return pd.DataFrame(columns=["trial_dir"])
    target = trials["method"].isin(TARGETS)
    pts = trials[[*TRIAL_COLUMNS, x, y]].copy()
    pts["step"] = pd.to_numeric(trials["steps"], errors="coerce").mask(target, 0)
    pts["device_s"] = (pd.to_numeric(trials["wall_s"], errors="coerce") * trials["devices"]).mask(target, 0.0)
    pts["final"] = True
    return pts
