"""The report of one or several runs: figures, tables and an index.html to read top to bottom.

    python -m analysis.report runs/<run> [runs/<other> ...] [--out DIR] [--vocab-size N]

Writes into DIR (default ``<first run>/report``): ``index.html``, ``pareto.png``/``.svg``,
``summary.md``, ``paper_table.{md,html,tex}``, ``autolr_table.{md,html,tex}``, ``hypervolume.csv``,
``published.md`` when a No-unlearn target is a released checkpoint with published values, or a trial
matches a published method result (``analysis.published``, ``analysis.published_methods``) and,
when the run has curves, ``curves_methods``, ``curves_lr``, ``lr_sensitivity``, ``norms_lr`` (.png and
.svg; with a ``_<model>`` suffix when the run holds several models) and, when the run holds a front
search (a ``search`` other than grid, or ``finished_at`` times),
``search_cost.png``/``.svg``, ``search_cost.csv`` (per model and search kind: trials, device-seconds,
final hypervolume) and ``search_cost_trace.csv`` (the hypervolume after each trial); ``field_table.*`` and
``answers/<trial>.html`` (``analysis.answers.write_field_outputs``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from analysis import front, plots
from analysis.load import BASELINE, REFERENCE, RunData, load_run
from analysis.pareto import LOSS_AXES, LOSS_SENSES, ROUGE_AXES, ROUGE_REF, ROUGE_SENSES, hypervolume_by_method
from analysis.answers import write_field_outputs
from analysis.published import published_table
from analysis.report_html import FORMATS, _index_html
from analysis.tables import METHOD_NAMES, autolr_table, model_label, paper_table, summary_markdown
# sweeper.store.storage imports only pyarrow: the analysis still imports neither torch nor ray.
from sweeper.store.storage import Storage, redact


def default_out(run: str) -> Path:
    """``<run>/report`` for local runs; ``./<run name>-report`` for runs on a remote filesystem (the
    report is then also written into the run's storage, ``<run>/report/``: see :func:`write_report`)."""
    if run.startswith("file://"):
        return Path(urlsplit(run).path) / "report"
    if "://" in run:
        return Path(urlsplit(run).path.rstrip("/").rsplit("/", 1)[-1] + "-report")
    return Path(run) / "report"


def store_copy(runs: list[str]) -> str | None:
    """Where the report of ``runs`` is also written: ``<run>/report`` in the store for one run on remote
    storage, else None (a local run's default report folder is already inside it)."""
    storage = Storage(runs[0]) if len(runs) == 1 else None
    return storage.url("report") if storage and not storage.is_local else None


def find_vocab_size(summaries: pd.DataFrame) -> int | None:
    """The first ``vocab_size`` found anywhere in the trials' ``params_json`` (for ln|V|), else None."""
    def search(obj):
        if isinstance(obj, dict):
            if isinstance(obj.get("vocab_size"), (int, float)) and obj["vocab_size"] > 1:
                return int(obj["vocab_size"])
            obj = list(obj.values())
        if isinstance(obj, list):
            return next((v for v in map(search, obj) if v), None)
        return None
    for text in summaries.get("params_json", pd.Series(dtype=str)).dropna():
        try:
            found = search(json.loads(text))
        except (ValueError, TypeError):
            continue
        if found:
            return found
    return None


def write_report(runs: list[str], out=None, vocab_size: int | None = None) -> Path:
    """Load ``runs``, write every figure and table and ``index.html`` into ``out``; return index.html.

    The report of one run on remote storage (``s3://...``) lives with the run: it is written to ``out``
    (default ``./<run name>-report``) and copied into ``<run>/report/`` in the store."""
    runs = [str(r) for r in runs]
    data = load_run(runs)
    out = Path(out) if out else default_out(runs[0])
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = vocab_size or find_vocab_size(data.summaries)
    df = data.summaries

    finish_curves = start_curves(data, out)   # in other processes while this one draws Figure 1 and the tables
    figures = {"pareto": plots.plot_pareto(df, out / "pareto.png", vocab_size, steps=data.steps)}
    (out / "summary.md").write_text(summary_markdown(df), encoding="utf-8")
    tables = {}
    shown, tables["note"] = front.table_trials(data)
    for name, fn in (("paper_table", paper_table), ("autolr_table", autolr_table)):
        for fmt, ext in FORMATS:
            text = fn(shown, fmt=fmt)
            if tables["note"] and fmt == "markdown":
                text += f"\n{tables['note']}\n"
            (out / f"{name}.{ext}").write_text(text, encoding="utf-8")
            tables[(name, fmt)] = text
    hv = hypervolumes(data, vocab_size)
    hv.to_csv(out / "hypervolume.csv", index=False)
    search = _write_search_cost(data, out, figures)
    published = published_table(df)
    if published:
        (out / "published.md").write_text(published, encoding="utf-8")
        tables[("published", "html")] = published_table(df, "html")
    tables.update(write_field_outputs(data, shown, out, FORMATS))

    curves = finish_curves()
    index = out / "index.html"
    index.write_text(_index_html(data, runs, figures, curves, tables, hv, search, vocab_size), encoding="utf-8")
    if store_copy(runs):
        Storage(runs[0]).upload_dir(str(out), "report")
    return index


# ---------------------------------------------------------------- pieces


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")


#: The curve figures of one model: (title template, plots function, keyword arguments, file stem).
CURVE_FIGURES = [
    ("{}: ROUGE and losses over steps per method (Figure 4)", "plot_curves", {}, "curves_methods"),
    ("{}: static lr vs AutoLR (Figure 5)", "plot_curves", {"by": "lr"}, "curves_lr"),
    ("{}: GDiff (c = 0.5) at several static lr (Figure 6)", "plot_lr_sensitivity", {}, "lr_sensitivity"),
    ("{}: gradient norms and learning rate (Figure 7)", "plot_norms_lr", {}, "norms_lr"),
]


@contextlib.contextmanager
def _no_main_for_children():
    """While drawing processes start: a spawned child imports its parent's ``__main__`` first, which under
    ``python -m sweeper.launch`` is the whole launcher with torch (~1.4 s per child, on the report's
    critical path), though it runs only a function of ``analysis.plots``. Hiding the main module's name and path
    for that moment makes the children skip it; both are restored."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            del main.__spec__


def start_curves(data: RunData, out: Path, workers: int | None = None):
    """Start drawing the curve figures (four per model), in ``workers`` processes beside this one when
    the machine has cores to spare: drawing is most of a report's time, and the figures are independent.
    Returns a function that waits and gives (title, why-missing, paths) per figure."""
    steps = data.curves()
    if steps.empty:
        return lambda: [("Curves", "no steps.parquet in the finished trials, so there are no curves to draw", [])]
    models = sorted(steps["model"].dropna().unique())
    jobs = []
    for model in models:
        sub = steps[steps["model"] == model]
        sfx = "" if len(models) == 1 else f"_{_slug(model)}"
        jobs += [(title.format(model_label(model)), fn, sub, out / f"{stem}{sfx}.png", kwargs)
                 for title, fn, kwargs, stem in CURVE_FIGURES]
    workers = min(len(jobs), workers if workers is not None else (os.cpu_count() or 1))
    if workers < 2:
        done = [(title, getattr(plots, fn)(sub, path, **kw)) for title, fn, sub, path, kw in jobs]
        return lambda: [(t, "" if p else "no trials of this kind in the run", p) for t, p in done]
    # spawn, not fork: the launcher calls this with Ray's threads running, which a forked child must not inherit
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        with _no_main_for_children():  # the processes start here, at the first submits
            # analysis.plots' own functions: a function of this module would be __main__'s under
            # ``python -m analysis.report``, which the children (main hidden) cannot unpickle
            futures = [(title, pool.submit(getattr(plots, fn), sub, path, **kw)) for title, fn, sub, path, kw in jobs]
    except BrokenProcessPool:   # the pool broke before the last job was in (see finish): draw them all here
        futures = []

    def finish() -> list[tuple[str, str, list[Path]]]:
        try:
            if not futures:
                raise BrokenProcessPool("no job was submitted")
            done = [(t, f.result()) for t, f in futures]
        except BrokenProcessPool:  # a main module spawn cannot re-import (python - < script): draw here
            done = [(title, getattr(plots, fn)(sub, path, **kw)) for title, fn, sub, path, kw in jobs]
        finally:
            pool.shutdown()
        return [(t, "" if p else "no trials of this kind in the run", p) for t, p in done]
    return finish


def hypervolumes(data: RunData | pd.DataFrame, vocab_size: int | None) -> pd.DataFrame:
    """Hypervolume per (model, method, lr mode) for both panels, each against a stated reference point.

    ROUGE: every configuration's best evaluated points (seed means; from the steps, so a trial that
    was better before its end counts with that moment), against the worst corner (forget 1,
    retain 0). Losses: final points, against (L_F of No-unlearn, ln|V| or else the largest L_R seen):
    a method scores only by raising L_F above the target's. Every trial but failed ones counts, as on
    Figure 1 (a diverged trial's evaluations before it diverged are models the run produced; a trial
    stopped early as dominated is a normal one); ``data`` may be bare summaries (final points only)::

        hypervolumes(load_run("runs/demo"), vocab_size=50257)
    """
    data = data if isinstance(data, RunData) else RunData(data, pd.DataFrame())
    df = data.summaries
    usable = df[(df["status"] != "failed") & ~df["method"].isin([BASELINE, REFERENCE])] if len(df) else df
    rouge = _best_means(RunData(usable, data.steps), *ROUGE_AXES, ROUGE_SENSES)
    frames = []
    for model, g in usable.groupby("model", dropna=False):
        base = df[(df["method"] == BASELINE) & (df["model"] == model)]
        lf0 = base["final_loss_forget"].mean()
        lf0 = lf0 if np.isfinite(lf0) else g["final_loss_forget"].min()
        lr_max = math.log(vocab_size) if vocab_size else g["final_loss_retain"].max()
        for panel, points, (x, y), ref, senses in (
            ("ROUGE", rouge[rouge["model"] == model] if len(rouge) else rouge, ROUGE_AXES, ROUGE_REF, ROUGE_SENSES),
            ("loss", g, LOSS_AXES, (lf0, lr_max), LOSS_SENSES),
        ):
            if points.empty or not np.all(np.isfinite(np.asarray(ref, float))):
                continue
            hv = hypervolume_by_method(points.assign(method=points["method"].map(lambda m: METHOD_NAMES.get(m, m))),
                                       x, y, ref, senses, group=("model", "method", "lr_mode"))
            frames.append(hv.assign(panel=panel, reference=f"({ref[0]:.3g}, {ref[1]:.3g})"))
    cols = ["panel", "model", "method", "lr_mode", "hypervolume", "points", "front", "reference"]
    return pd.concat(frames)[cols] if frames else pd.DataFrame(columns=cols)


def _best_means(data: RunData, x: str, y: str, senses) -> pd.DataFrame:
    """Each configuration's non-dominated evaluated points, as seed means."""
    means = front.seed_means(front.evaluation_points(data, x, y), x, y)
    return front.best_points(means, x, y, senses, by=front.CONFIG)


def has_search(df: pd.DataFrame) -> bool:
    """Whether the run holds a search worth costing: a ``search`` other than grid, or finish times."""
    kinds = df["search"].dropna() if "search" in df else pd.Series(dtype=object)
    timed = "finished_at" in df and df["finished_at"].notna().any()
    return bool((kinds != front.GRID).any() or timed)


def search_cost_table(trace: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, search kind): ``trials``, ``device_s`` and the ``hypervolume`` reached
    after all of them (the last row of ``trace``), and ``front_points``: how many points of the
    model's front (``front.front_costs``) that search's trials reached::

        search_cost_table(front.hypervolume_trace(data), front.front_costs(data))
    """
    keys = ["model", "dataset", "search"]
    last = trace.groupby(keys, dropna=False, sort=True).tail(1)[[*keys, "trials", "device_s", "hypervolume"]]
    found = costs.groupby(keys, dropna=False).size().rename("front_points").reset_index()
    out = last.merge(found, on=keys, how="left")
    return out.assign(front_points=out["front_points"].fillna(0).astype(int)).reset_index(drop=True)


def _write_search_cost(data: RunData, out: Path, figures: dict) -> pd.DataFrame | None:
    """The search-cost figure and CSVs when the run holds a search (else None): the table per model
    and search kind, also added to ``figures`` as ``search_cost``."""
    if not has_search(data.summaries):
        return None
    x, y, senses, ref = front.search_axes(data)  # the search's own objectives, else ROUGE
    trace = front.hypervolume_trace(data, x, y, ref, senses)
    table = search_cost_table(trace, front.front_costs(data, x, y, senses))
    trace.to_csv(out / "search_cost_trace.csv", index=False)
    table.to_csv(out / "search_cost.csv", index=False)
    figures["search_cost"] = plots.plot_search_cost(trace, out / "search_cost.png")
    return table.assign(axes=f"{x} ({senses[0]}) × {y} ({senses[1]}), reference ({ref[0]:.3g}, {ref[1]:.3g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or URIs (e.g. runs/demo, s3://bucket/runs/x)")
    parser.add_argument("--out", help="report folder (default: <first run>/report; for a run on remote storage "
                        "./<run name>-report, and a copy goes into <run>/report/ in the store)")
    parser.add_argument("--vocab-size", type=int, help="vocabulary size for the random-guess loss ln|V| "
                        "(default: found in the trials' params_json, else not drawn)")
    args = parser.parse_args(argv)
    try:
        index = write_report(args.runs, args.out, args.vocab_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    copy = store_copy(args.runs)
    print(f"report written to {index.parent}" + (f" and {redact(copy)}" if copy else "") + f" (open {index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
