"""The paper's figures from a sweep: Pareto panels (Figure 1), curves (Figures 4-7), search cost.

Every function writes ``out_path`` (a .png) and the same figure as .svg beside it, and returns the
paths written (empty when there is nothing to draw)::

    from analysis.load import load_run
    from analysis import front, plots
    data = load_run("runs/demo")
    plots.plot_pareto(data.summaries, "report/pareto.png", vocab_size=32000, steps=data.steps)
    plots.plot_curves(data.curves(), "report/curves_methods.png")               # Figure 4
    plots.plot_curves(data.curves(), "report/curves_lr.png", by="lr")           # Figure 5
    plots.plot_lr_sensitivity(data.curves(), "report/lr_sensitivity.png")       # Figure 6
    plots.plot_norms_lr(data.curves(), "report/norms_lr.png")                   # Figure 7
    plots.plot_search_cost(front.hypervolume_trace(data), "report/search_cost.png")

Figures are built on ``matplotlib.figure.Figure`` (Agg canvas) without pyplot, so nothing touches
the global backend or leaks figures in a long-running process.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.front import CONFIG, best_points, evaluation_points, seed_means
from analysis.load import BASELINE, REFERENCE, RunData
from analysis.pareto import pareto_front
from analysis.series import draw_bands, pool_learning_rates, quantiles, summarised
from analysis.tables import label_trials, model_label

MARKERS = {"ngdiff": "D", "lossnorm": "s", "npo": "^", "rlw": "v", "pcgrad": "P", "imtlg": "X",
           "gradnorm": "h", "ga": "<", "gd": ">", "gdiff": "o"}
COLORS = {"ngdiff": "tab:red", "lossnorm": "tab:green", "npo": "tab:purple", "rlw": "tab:brown",
          "pcgrad": "tab:pink", "imtlg": "tab:olive", "gradnorm": "tab:cyan", "ga": "tab:gray",
          "gd": "tab:orange", "gdiff": "tab:blue"}
#: (x, y, x label, y label, title, x sense, y sense) of Figure 1's two panels.
PANELS = [
    ("final_loss_forget", "final_loss_retain", r"$L_F$ forget loss (higher: forgotten)",
     r"$L_R$ retain loss (lower: retained)", "loss", False, True),
    ("rouge_forget", "rouge_retain", "ROUGE-L forget (lower: forgotten)",
     "ROUGE-L retain (higher: retained)", "ROUGE", True, False),
]
#: At most about this many c labels on one GDiff line (a front search proposes many continuous c).
MAX_C_LABELS = 12
#: At most this many series on a curve figure, else medians and bands per label (``analysis.series``).
MAX_SERIES = 20
CURVES = [("rouge_forget", "ROUGE-L forget"), ("loss_forget", r"$L_F$ forget loss"),
          ("rouge_retain", "ROUGE-L retain"), ("loss_retain", r"$L_R$ retain loss")]


def _save(fig: Figure, out_path) -> list[Path]:
    """Write the figure as PNG and SVG (same stem); return both paths."""
    png = Path(out_path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    canvas = FigureCanvasAgg(fig)
    # The tight bounding box (legends sit outside the axes), computed once and shared by both files:
    # bbox_inches="tight" would lay the figure out again for each format (the report's main cost). The
    # layout pass draws nothing (a full Agg draw here cost ~10% of a figure).
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox(canvas.get_renderer()).padded(0.1)
    paths = []
    for path in (png, png.with_suffix(".svg")):
        fig.savefig(path, dpi=130, bbox_inches=bbox)
        paths.append(path)
    return paths


def _finite(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    if not all(c in df for c in cols):
        return df.iloc[:0]
    ok = np.ones(len(df), bool)
    for c in cols:
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float))
    return df[ok]


def _method_key(method) -> str:
    return str(method) if method in MARKERS else "other"


# ---------------------------------------------------------------- Figure 1


def plot_pareto(df: pd.DataFrame, out_path, vocab_size: int | None = None,
                steps: pd.DataFrame | None = None) -> list[Path]:
    """Figure 1: per model, L_F vs L_R (left) and ROUGE forget vs retain (right).

    GDiff's c-sweep is a dashed line through the final points sorted by c and annotated with c (one
    line for static lr, one for AutoLR); other methods are markers, filled for static lr and hollow
    for AutoLR; No-unlearn is a star; the grey line is the random-guess loss ln|V| when
    ``vocab_size`` is given; the thin black line joins the Pareto front of the panel. Seeds of one
    configuration are drawn as their mean with 95% error bars.

    With ``steps`` (``RunData.steps``) the ROUGE panel also shows each configuration's earlier
    evaluations that none of its own evaluations dominates, as small markers of the method's colour,
    and the front runs over them too. The loss panel is final-only (losses are evaluated at the end)::

        plot_pareto(data.summaries, "report/pareto.png", vocab_size, steps=data.steps)
    """
    df = label_trials(df[df["status"] != "failed"] if "status" in df else df)
    models = sorted(df["model"].dropna().unique()) if "model" in df and len(df) else [None]
    run = RunData(df, steps if steps is not None else pd.DataFrame())
    points = [_panel_points(run, panel) for panel in PANELS]
    fig = Figure(figsize=(11, 4.3 * len(models)))
    axes = fig.subplots(len(models), 2, squeeze=False)
    for row, model in zip(axes, models):
        for ax, panel, pts in zip(row, PANELS, points):
            _pareto_panel(ax, pts if model is None else pts[pts["model"] == model], panel, vocab_size)
            ax.set_title(f"{model_label(model)}: {panel[4]}" if model is not None else panel[4])
    earlier = any((~p["final"].astype(bool)).any() for p in points if len(p))
    fig.legend(handles=_pareto_legend(df, vocab_size, earlier), loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def _panel_points(run: RunData, panel) -> pd.DataFrame:
    """A panel's points: every configuration's final point (seed means) plus its earlier evaluations
    that none of its own evaluations dominates (only the ROUGE panel has evaluations before the end)."""
    x, y, _, _, _, min_x, min_y = panel
    means = seed_means(evaluation_points(run, x, y), x, y)
    if means.empty:
        return means
    senses = ("min" if min_x else "max", "min" if min_y else "max")
    best = best_points(means, x, y, senses, by=CONFIG)
    return pd.concat([means[means["final"]], best[~best["final"]]])


def _pareto_panel(ax, pts: pd.DataFrame, panel, vocab_size) -> None:
    x, y, xlabel, ylabel, _, min_x, min_y = panel
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if pts.empty:
        ax.text(0.5, 0.5, "no finished trial with these metrics", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        return
    front = pts[pareto_front(pts, x, y, minimize_x=min_x, minimize_y=min_y)].sort_values(x)
    ax.plot(front[x], front[y], color="black", lw=0.7, alpha=0.5, zorder=1)
    final, earlier = pts[pts["final"]], pts[~pts["final"]]
    gdiff = final[final["method"] == "gdiff"]
    for (mode, lr), g in gdiff.groupby([gdiff["lr_mode"].fillna("static"), gdiff["lr"].fillna(0)]):
        g = g.sort_values("c")
        auto = mode == "autolr"
        ax.plot(g[x], g[y], ls="-." if auto else "--", color="tab:blue", lw=1.1, alpha=0.8, zorder=2)
        ax.scatter(g[x], g[y], marker="o", s=28, zorder=3, edgecolors="tab:blue",
                   facecolors="none" if auto else "tab:blue")
        _annotate_c(ax, g, x, y)
    others = final[~final["method"].isin(["gdiff", BASELINE, REFERENCE])]
    for (method, mode), g in others.groupby(["method", others["lr_mode"].fillna("static")]):
        color = COLORS.get(method, "black")
        ax.scatter(g[x], g[y], marker=MARKERS.get(method, "p"), s=40, zorder=4, edgecolors=color,
                   facecolors="none" if mode == "autolr" else color, linewidths=1.2)
    for method, g in earlier.groupby("method"):  # a trial's better moments before its end
        ax.scatter(g[x], g[y], marker=MARKERS.get(method, "p"), s=10, zorder=3, color=COLORS.get(method, "black"),
                   alpha=0.6, linewidths=0)
    base = final[final["method"] == BASELINE]
    ax.scatter(base[x], base[y], marker="*", s=160, color="gold", edgecolors="black", zorder=5)
    ref = final[final["method"] == REFERENCE]  # the retrained model: where an ideal unlearner would land
    ax.scatter(ref[x], ref[y], marker="*", s=160, color="silver", edgecolors="black", zorder=5)
    seeded = pts[pts[f"{x}_err"].notna() | pts[f"{y}_err"].notna()]
    if len(seeded):  # configurations with several seeds: 95% intervals as error bars
        ax.errorbar(seeded[x], seeded[y], xerr=seeded[f"{x}_err"].fillna(0), yerr=seeded[f"{y}_err"].fillna(0),
                    fmt="none", ecolor="grey", elinewidth=0.8, capsize=2, zorder=2)
    if vocab_size and x == "final_loss_forget":
        ax.axvline(math.log(vocab_size), color="grey", ls="--", lw=1)


def _annotate_c(ax, g: pd.DataFrame, x: str, y: str) -> None:
    """Label a GDiff line's points (sorted by c) with c to 2 significant digits; on a long line only
    about ``MAX_C_LABELS`` evenly spread ones, so that the labels stay legible."""
    every = max(1, math.ceil(len(g) / MAX_C_LABELS))
    for _, r in g.iloc[::every].iterrows():
        if pd.notna(r["c"]):
            ax.annotate(f"{r['c']:.2g}", (r[x], r[y]), xytext=(3, 3), textcoords="offset points",
                        fontsize=7, color="tab:blue")


def _pareto_legend(df: pd.DataFrame, vocab_size, earlier: bool = False) -> list:
    handles = [Line2D([], [], marker="*", ls="", ms=12, color="gold", mec="black", label="No-unlearn")]
    methods = df["method"].dropna().unique() if "method" in df else []
    if "gdiff" in methods:
        handles += [Line2D([], [], ls="--", marker="o", color="tab:blue", label="GDiff c-sweep, static lr"),
                    Line2D([], [], ls="-.", marker="o", mfc="none", color="tab:blue", label="GDiff c-sweep, AutoLR")]
    if REFERENCE in methods:
        handles.append(Line2D([], [], marker="*", ls="", ms=12, color="silver", mec="black",
                              label="Retrained reference (retain only)"))
    for m in sorted(set(methods) - {"gdiff", BASELINE, REFERENCE}):
        label = df.loc[df["method"] == m, "label"].iloc[0]
        handles.append(Line2D([], [], marker=MARKERS.get(m, "p"), ls="", color=COLORS.get(m, "black"), label=label))
    handles += [Line2D([], [], marker="o", ls="", color="black", label="filled: static lr"),
                Line2D([], [], marker="o", ls="", mfc="none", color="black", label="hollow: AutoLR"),
                Line2D([], [], color="black", lw=0.7, alpha=0.5, label="Pareto front")]
    if earlier:
        handles.append(Line2D([], [], marker="o", ls="", ms=4, color="grey", alpha=0.6,
                              label="small: an earlier evaluation on the trial's own front"))
    if vocab_size:
        handles.append(Line2D([], [], color="grey", ls="--", label=f"random guess ln|V| = {math.log(vocab_size):.2f}"))
    return handles


# ---------------------------------------------------------------- search cost


def plot_search_cost(trace: pd.DataFrame, out_path) -> list[Path]:
    """Hypervolume against trials finished (left) and device-seconds spent (right): one line per
    (model, search kind), colour by model, line style by search kind; how fast each search finds
    the front. ``trace`` is ``front.hypervolume_trace(data)``::

        plot_search_cost(front.hypervolume_trace(data), "report/search_cost.png")
    """
    if trace.empty:
        return []
    several = "dataset" in trace and trace["dataset"].nunique() > 1
    keys = ["model", "dataset", "search"] if several else ["model", "search"]
    models = list(dict.fromkeys(trace["model"].astype(str)))
    kinds = list(dict.fromkeys(sorted(trace["search"].astype(str), key=lambda k: (k != "grid", k))))
    styles = ["--", "-", ":", "-."]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for key, g in trace.groupby(keys, sort=True, dropna=False):
        model, kind = str(key[0]), str(key[-1])
        label = " · ".join([model_label(model), *map(str, key[1:])])
        for ax, col in zip(axes, ("trials", "device_s")):
            # The front only changes when a trial finishes, so the hypervolume is a step function.
            ax.plot(g[col], g["hypervolume"], drawstyle="steps-post", marker="o", ms=3, lw=1.3, label=label,
                    color=f"C{models.index(model) % 10}", ls=styles[kinds.index(kind) % len(styles)])
    for ax, xlabel in zip(axes, ("trials finished", "device-seconds (wall s × workers × GPUs per worker)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("hypervolume")
        ax.set_title(f"hypervolume vs {xlabel.split(' (')[0]}")
    axes[0].legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    return _save(fig, out_path)


# ---------------------------------------------------------------- Figures 4-7


def _with_config(steps: pd.DataFrame, summaries: pd.DataFrame | None) -> pd.DataFrame:
    """Steps carrying their trial's config: as given (``RunData.curves()``) or joined with ``summaries``."""
    if "method" in steps:
        return steps
    if summaries is None:
        raise ValueError("the steps need the trials' config columns; pass RunData.curves() or summaries=.")
    config = summaries[["trial_dir", "model", "method", "c", "forget_loss", "lr_mode", "lr"]]
    return steps.merge(config.rename(columns={"lr": "initial_lr"}), on="trial_dir", how="inner")


def _curve_grid(steps: pd.DataFrame, label_col: str, title: str, out_path) -> list[Path]:
    """One panel per curve metric (ROUGE forget, L_F, ROUGE retain, L_R), one line per trial; above
    ``MAX_SERIES`` trials, one median line and 10-90% band per label instead (``analysis.series``)."""
    if steps.empty:
        return []
    fig, many = Figure(figsize=(16, 3.8)), steps["trial_dir"].nunique() > MAX_SERIES
    axes = fig.subplots(1, len(CURVES))
    if many and label_col == "column" and steps[label_col].nunique() > MAX_SERIES:
        steps = pool_learning_rates(steps, label_col)   # one band per method column across its lrs
    labels = list(dict.fromkeys(steps.sort_values("order", kind="stable")[label_col]))
    summary = summarised(steps, label_col, labels, MAX_SERIES, spread=label_col == "lr_label") if many else None
    labels = summary["labels"] if summary else labels
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    styles = {lab: ["-", "--", ":", "-."][(i // 10) % 4] for i, lab in enumerate(labels)}
    evaluated = steps.groupby("trial_dir", sort=False)["step"].nunique()  # steps each trial ran
    for ax, (col, name) in zip(axes, CURVES):
        ax.set_title(name)
        ax.set_xlabel("step")
        if summary:
            draw_bands(ax, steps, label_col, labels, col, colors, styles)
            continue
        for trial, g in steps.groupby("trial_dir", sort=False):
            g = _finite(g, "step", col).sort_values("step")  # ROUGE is only set on evaluation steps
            if g.empty:
                continue
            lab = g[label_col].iloc[0]
            sparse = len(g) < 0.5 * evaluated[trial]
            ax.plot(g["step"], g[col], color=colors[lab], ls=styles[lab], lw=1.2,
                    marker="o" if sparse else None, ms=3)
    names = summary["names"] if summary else {lab: lab for lab in labels}
    fig.legend(handles=[Line2D([], [], color=colors[lab], ls=styles[lab], label=names[lab]) for lab in labels],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(6, len(labels)), frameon=False, fontsize=8)
    fig.suptitle(title + (f"\n{summary['note']}" if summary else ""), fontsize=None if not summary else 10)
    fig.tight_layout()
    return _save(fig, out_path)


def _default_method(steps: pd.DataFrame, preferred: str) -> str | None:
    methods = steps["method"].dropna()
    methods = methods[~methods.isin([BASELINE, REFERENCE])]
    if methods.empty:
        return None
    return preferred if preferred in set(methods) else methods.value_counts().index[0]


def _labelled(steps: pd.DataFrame) -> pd.DataFrame:
    """Steps plus each trial's ``label``, ``column``, ``order`` and ``lr_label``, computed once per trial
    (from its initial lr, since under AutoLR the per-step ``lr`` moves)."""
    trials = steps.drop_duplicates("trial_dir").drop(columns=["lr"]).rename(columns={"initial_lr": "lr"})
    trials = label_trials(trials)
    trials["lr_label"] = [f"AutoLR from η={lr:g}" if mode == "autolr" else f"η={lr:g}"
                          for mode, lr in zip(trials["lr_mode"], trials["lr"])]
    cols = ["trial_dir", "label", "column", "order", "lr_label"]
    return steps.merge(trials[cols], on="trial_dir", how="left")


def plot_curves(steps: pd.DataFrame, out_path, by: str = "method", method: str | None = None,
                summaries: pd.DataFrame | None = None) -> list[Path]:
    """Figure 4 (``by="method"``: one line per trial, labelled by method) or Figure 5 (``by="lr"``:
    one method, default NGDiff, at each static lr and under AutoLR). ``steps`` is ``RunData.curves()``,
    or ``RunData.steps`` together with ``summaries=``."""
    steps = _with_config(steps, summaries)
    if by == "method":
        df = _labelled(steps[~steps["method"].isin([BASELINE, REFERENCE])])
        return _curve_grid(df, "column", "Unlearning curves per method", out_path)
    if by == "lr":
        method = method or _default_method(steps, "ngdiff")
        df = _labelled(steps[steps["method"] == method])
        name = df["label"].iloc[0] if len(df) else method
        return _curve_grid(df, "lr_label", f"{name}: static lr vs AutoLR", out_path)
    raise ValueError(f"by is 'method' or 'lr', not {by!r}.")


def plot_lr_sensitivity(steps: pd.DataFrame, out_path, method: str = "gdiff", c: float | None = 0.5,
                        summaries: pd.DataFrame | None = None) -> list[Path]:
    """Figure 6: one method (default vanilla GDiff, c = 0.5) at several static learning rates."""
    steps = _with_config(steps, summaries)
    df = steps[(steps["method"] == method) & (steps["lr_mode"] != "autolr")]
    if method == "gdiff" and c is not None:
        df = df[np.isclose(pd.to_numeric(df["c"], errors="coerce"), c)]
    if df.empty:
        return []
    df = _labelled(df)
    return _curve_grid(df, "lr_label", f"{df['label'].iloc[0]}: sensitivity to the learning rate", out_path)


def plot_norms_lr(steps: pd.DataFrame, out_path, method: str | None = None,
                  summaries: pd.DataFrame | None = None) -> list[Path]:
    """Figure 7: ||g_R||, ||g_F||, the learning rate, and the effective step sizes lr*w_R, lr*w_F."""
    steps = _with_config(steps, summaries)
    method = method or _default_method(steps, "ngdiff")
    df = _labelled(steps[steps["method"] == method])
    df = df.assign(lr_retain=df["lr"] * df.get("w_retain", np.nan), lr_forget=df["lr"] * df.get("w_forget", np.nan))
    if _finite(df, "step", "norm_retain").empty and _finite(df, "step", "lr").empty:
        return []
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    titles = ["gradient norms", "learning rate", "step size on each gradient"]
    series = [[("norm_retain", r"$\|g_R\|$", "-"), ("norm_forget", r"$\|g_F\|$", "--")],
              [("lr", "lr", "-")],
              [("lr_retain", r"lr$\cdot w_R$", "-"), ("lr_forget", r"lr$\cdot w_F$", "--")]]
    labels = list(dict.fromkeys(df.sort_values("order", kind="stable")["lr_label"]))
    # two series per label on a panel, and legends inside the panels: a quarter of MAX_SERIES labels
    summary = summarised(df, "lr_label", labels, MAX_SERIES // 4, True) if df["trial_dir"].nunique() > MAX_SERIES // 4 else None
    labels = summary["labels"] if summary else labels
    shown = df[df["lr_label"].isin(labels)]
    for ax, title, cols in zip(axes, titles, series):
        ax.set_title(title)
        ax.set_xlabel("step")
        positive = True
        for i, lab in enumerate(labels):
            if summary:
                for col, name, ls in cols:
                    q = quantiles(shown[shown["lr_label"] == lab], "step", col)
                    if q.empty:
                        continue
                    positive &= bool((q[0.1] > 0).all())
                    ax.plot(q.index, q[0.5], color=f"C{i % 10}", ls=ls, lw=1.2, label=f"{name}, {lab}")
                    ax.fill_between(q.index, q[0.1], q[0.9], color=f"C{i % 10}", alpha=0.15, lw=0)
                continue
            for trial, g in df[df["lr_label"] == lab].groupby("trial_dir", sort=False):
                for col, name, ls in cols:
                    g2 = _finite(g, "step", col).sort_values("step")
                    if g2.empty:
                        continue
                    positive &= bool((g2[col] > 0).all())
                    ax.plot(g2["step"], g2[col], color=f"C{i % 10}", ls=ls, lw=1.2, label=f"{name}, {lab}")
        if "autolr_status" in df and title == "learning rate":
            _mark_probes(ax, shown)
        if positive and ax.lines:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"{df['label'].iloc[0] if len(df) else method}: gradient norms and learning rate"
                 + (f"\n{summary['note']}" if summary else ""), fontsize=10 if summary else None)
    fig.tight_layout()
    return _save(fig, out_path)


def _mark_probes(ax, df: pd.DataFrame) -> None:
    """AutoLR probe steps on the lr panel: dots where the new rate was accepted, crosses where rejected."""
    status = df["autolr_status"].astype("string")
    for kind, marker in (("accepted", "o"), ("rejected", "x")):
        hit = _finite(df[status.str.startswith(kind).fillna(False).to_numpy(bool)], "step", "lr")
        if not hit.empty:
            ax.scatter(hit["step"], hit["lr"], marker=marker, s=14, color="black", zorder=5,
                       label=f"AutoLR probe {kind}")
