"""The report of one or several runs: figures, tables and an index.html to read top to bottom.

    python -m analysis.report runs/<run> [runs/<other> ...] [--out DIR] [--vocab-size N]

Writes into DIR (default ``<first run>/report``): ``index.html``, ``pareto.png``/``.svg``,
``summary.md``, ``paper_table.{md,html,tex}``, ``autolr_table.{md,html,tex}``, ``hypervolume.csv``,
``published.md`` when a No-unlearn target is a released checkpoint with published values
(``analysis.published``) and, when the run has curves, ``curves_methods``, ``curves_lr``,
``lr_sensitivity``, ``norms_lr`` (.png and .svg; with a ``_<model>`` suffix when the run holds several
models).
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.load import BASELINE, REFERENCE, RunData, load_run
from analysis.pareto import LOSS_SENSES, ROUGE_REF, ROUGE_SENSES, hypervolume_by_method, pareto_front
from analysis.published import published_table
from analysis.tables import (METHOD_NAMES, autolr_table, label_trials, model_label, paper_table, render,
                             summary_markdown, summary_table)

FORMATS = (("markdown", "md"), ("html", "html"), ("latex", "tex"))
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 6px}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555}img{max-width:100%}
.bad{color:#a00}.note{color:#555;font-size:.9em}"""


def default_out(run: str) -> Path:
    """``<run>/report`` for local runs; ``./<run name>-report`` for runs on a remote filesystem."""
    if run.startswith("file://"):
        return Path(run[len("file://"):]) / "report"
    if "://" in run:
        return Path(run.rstrip("/").rsplit("/", 1)[-1] + "-report")
    return Path(run) / "report"


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
    """Load ``runs``, write every figure and table and ``index.html`` into ``out``; return index.html."""
    runs = [str(r) for r in runs]
    data = load_run(runs)
    out = Path(out) if out else default_out(runs[0])
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = vocab_size or find_vocab_size(data.summaries)
    df = data.summaries

    figures = {"pareto": plots.plot_pareto(df, out / "pareto.png", vocab_size)}
    curves = _write_curves(data, out)
    (out / "summary.md").write_text(summary_markdown(df), encoding="utf-8")
    tables = {}
    for name, fn in (("paper_table", paper_table), ("autolr_table", autolr_table)):
        for fmt, ext in FORMATS:
            text = fn(df, fmt=fmt)
            (out / f"{name}.{ext}").write_text(text, encoding="utf-8")
            tables[(name, fmt)] = text
    hv = hypervolumes(df, vocab_size)
    hv.to_csv(out / "hypervolume.csv", index=False)
    published = published_table(df)
    if published:
        (out / "published.md").write_text(published, encoding="utf-8")
        tables[("published", "html")] = published_table(df, "html")

    index = out / "index.html"
    index.write_text(_index_html(data, runs, figures, curves, tables, hv, vocab_size), encoding="utf-8")
    return index


# ---------------------------------------------------------------- pieces


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")


def _write_curves(data: RunData, out: Path) -> list[tuple[str, str, list[Path]]]:
    """Curve figures per model: (title, why-missing, paths). Missing steps give one explanatory entry."""
    steps = data.curves()
    if steps.empty:
        return [("Curves", "no steps.parquet in the finished trials, so there are no curves to draw", [])]
    models = sorted(steps["model"].dropna().unique())
    entries = []
    for model in models:
        sub = steps[steps["model"] == model]
        sfx = "" if len(models) == 1 else f"_{_slug(model)}"
        name = model_label(model)
        for title, fn, file in (
            (f"{name}: ROUGE and losses over steps per method (Figure 4)", plots.plot_curves, "curves_methods"),
            (f"{name}: static lr vs AutoLR (Figure 5)", lambda s, p: plots.plot_curves(s, p, by="lr"), "curves_lr"),
            (f"{name}: GDiff (c = 0.5) at several static lr (Figure 6)", plots.plot_lr_sensitivity, "lr_sensitivity"),
            (f"{name}: gradient norms and learning rate (Figure 7)", plots.plot_norms_lr, "norms_lr"),
        ):
            paths = fn(sub, out / f"{file}{sfx}.png")
            entries.append((title, "" if paths else "no trials of this kind in the run", paths))
    return entries


def hypervolumes(df: pd.DataFrame, vocab_size: int | None) -> pd.DataFrame:
    """Hypervolume per (model, method, lr mode) for both panels, each against a stated reference point.

    ROUGE: reference (forget 1, retain 0), the worst corner. Losses: reference (L_F of No-unlearn,
    ln|V| or else the largest L_R seen): a method scores only by raising L_F above the target's.
    """
    ok = df[(df["status"] == "ok") & ~df["method"].isin([BASELINE, REFERENCE])] if len(df) else df
    frames = []
    for model, g in ok.groupby("model", dropna=False):
        base = df[(df["method"] == BASELINE) & (df["model"] == model)]
        lf0 = base["final_loss_forget"].mean()
        lf0 = lf0 if np.isfinite(lf0) else g["final_loss_forget"].min()
        lr_max = math.log(vocab_size) if vocab_size else g["final_loss_retain"].max()
        for panel, x, y, ref, senses in (
            ("ROUGE", "rouge_forget", "rouge_retain", ROUGE_REF, ROUGE_SENSES),
            ("loss", "final_loss_forget", "final_loss_retain", (lf0, lr_max), LOSS_SENSES),
        ):
            if not np.all(np.isfinite(np.asarray(ref, float))):
                continue
            hv = hypervolume_by_method(g.assign(method=g["method"].map(lambda m: METHOD_NAMES.get(m, m))),
                                       x, y, ref, senses, group=("model", "method", "lr_mode"))
            frames.append(hv.assign(panel=panel, reference=f"({ref[0]:.3g}, {ref[1]:.3g})"))
    cols = ["panel", "model", "method", "lr_mode", "hypervolume", "points", "front", "reference"]
    return pd.concat(frames)[cols] if frames else pd.DataFrame(columns=cols)


def _front_rows(df: pd.DataFrame) -> list[list]:
    """The Pareto-optimal points of each model and panel, as table rows."""
    rows = []
    usable = label_trials(df[df["status"] == "ok"]) if len(df) else df
    for model, g in usable.groupby("model", dropna=False):
        for x, y, _, _, panel, min_x, min_y in plots.PANELS:
            pts = plots._finite(g, x, y)
            if pts.empty:
                continue
            front = pts[pareto_front(pts, x, y, minimize_x=min_x, minimize_y=min_y)].sort_values(x)
            rows += [[model_label(model), panel, r["column"], f"{r[x]:.3f}", f"{r[y]:.3f}", r["trial_id"]]
                     for _, r in front.iterrows()]
    return rows


def _img(paths: list[Path], alt: str) -> str:
    png = next(p for p in paths if p.suffix == ".png")
    svg = next((p for p in paths if p.suffix == ".svg"), None)
    link = f' <a href="{html.escape(svg.name)}">SVG</a>' if svg else ""
    return f'<p><img src="{html.escape(png.name)}" alt="{html.escape(alt)}">{link}</p>'


def _index_html(data: RunData, runs, figures, curves, tables, hv: pd.DataFrame, vocab_size) -> str:
    df = data.summaries
    counts = data.status_counts()
    n_trials, n_targets = len(data.trials), len(data.baselines)
    versions = sorted(df["code_version"].dropna().unique()) if "code_version" in df else []
    problems = data.problems()
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Unlearning sweep report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Unlearning sweep report</h1>",
             "<p>Runs: " + ", ".join(f"<code>{esc(r)}</code>" for r in runs) + "</p>",
             "<h2>Run summary</h2>",
             f"<p>{n_trials} unlearning trials and {n_targets} No-unlearn target(s) finished (whatever their "
             f"status); {len(data.unfinished)} trial(s) unfinished. Total loop time: {data.total_wall_s():.1f} s; device time: "
             f"{data.device_seconds()['gpu'] / 3600:.3f} GPU-hours, {data.device_seconds()['cpu'] / 3600:.3f} "
             f"CPU-worker-hours.</p>",
             render(["status", "trials"], [[k, str(v)] for k, v in counts.items()], "", "html")]
    if versions:
        parts.append("<p class='note'>Code: " + ", ".join(f"<code>{esc(v)}</code>" for v in versions) + "</p>")
    if len(problems):
        parts += ["<h3 class='bad'>Failed, diverged and unfinished trials</h3>",
                  render(["trial", "status", "detail"], problems.astype(str).values.tolist(), "", "html")]
    else:
        parts.append("<p>Every trial finished with status ok.</p>")

    parts += ["<h2>Pareto fronts (Figure 1)</h2>", _img(figures["pareto"], "Pareto fronts")]
    if vocab_size:
        parts.append(f"<p class='note'>Random-guess loss ln|V| = ln {vocab_size} = {math.log(vocab_size):.3f}.</p>")
    front = _front_rows(df)
    if front:
        parts += ["<h3>Pareto-optimal trials</h3>",
                  render(["model", "panel", "method", "x", "y", "trial"], front,
                         "loss panel: x = L_F (higher better), y = L_R (lower better); ROUGE panel: "
                         "x = forget ROUGE (lower better), y = retain ROUGE (higher better).", "html")]
    if len(hv):
        parts += ["<h3>Hypervolume per method</h3>",
                  render(list(hv.columns), [[_cell(v) for v in r] for r in hv.assign(
                      model=hv["model"].map(model_label)).itertuples(index=False)],
                         "Area each method's points dominate against the reference point shown (ROUGE: the "
                         "worst corner (1, 0); loss: (L_F of No-unlearn, ln|V| or the largest L_R)).", "html")]

    parts += ["<h2>Tables</h2>", "<h3>Paper layout (Tables 1-2)</h3>", tables[("paper_table", "html")],
              _links("paper_table"), "<h3>Without → with AutoLR (Table 3)</h3>", tables[("autolr_table", "html")],
              _links("autolr_table")]
    if ("published", "html") in tables:
        parts += ["<h3>No-unlearn targets beside their published values</h3>", tables[("published", "html")],
                  "<p><a href='published.md'>published.md</a></p>"]
    parts += ["<h3>Every trial</h3>", summary_table(df, "html"), "<p><a href='summary.md'>summary.md</a></p>"]

    parts.append("<h2>Curves</h2>")
    for title, why, paths in curves:
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append(_img(paths, title) if paths else f"<p class='note'>Not drawn: {esc(why)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _links(name: str) -> str:
    return "<p>" + " · ".join(f"<a href='{name}.{ext}'>{name}.{ext}</a>" for _, ext in FORMATS) + "</p>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or URIs (e.g. runs/demo, s3://bucket/runs/x)")
    parser.add_argument("--out", help="report folder (default: <first run>/report)")
    parser.add_argument("--vocab-size", type=int, help="vocabulary size for the random-guess loss ln|V| "
                        "(default: found in the trials' params_json, else not drawn)")
    args = parser.parse_args(argv)
    try:
        index = write_report(args.runs, args.out, args.vocab_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {index.parent} (open {index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
