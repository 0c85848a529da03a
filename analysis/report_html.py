"""The report's ``index.html``: every figure and table of a run on one page, as ``analysis.report`` writes
it (``_index_html(data, runs, figures, curves, tables, hv, search, vocab_size)``), with the run's
counts, its failed and stopped trials, the front search's cost and links to each table's formats.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import front, plots
from analysis.answers import field_outputs_html
from analysis.load import RunData
from analysis.tables import model_label, render, summary_table
from sweeper.store.storage import redact

FORMATS = (("markdown", "md"), ("html", "html"), ("latex", "tex"))
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 6px}
caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555}img{max-width:100%}
.bad{color:#a00}.note{color:#555;font-size:.9em}"""



def _front_rows(data: RunData, with_search: bool) -> list[list]:
    """The Pareto-optimal points of each model and panel, as on Figure 1 (seed means; ROUGE over every
    evaluated step), as table rows."""
    rows = []
    for x, y, _, _, panel, min_x, min_y in plots.PANELS:
        costs = front.front_costs(data, x, y, ("min" if min_x else "max", "min" if min_y else "max"))
        for _, r in costs.iterrows():
            more = f" (+{int(r['seeds']) - 1} seeds)" if r["seeds"] > 1 else ""
            step = "–" if pd.isna(r["step"]) else str(int(r["step"]))
            cost = "–" if pd.isna(r["device_s"]) else f"{r['device_s']:.1f}"
            rows.append([model_label(r["model"]), panel, r["column"], _pm(r[x], r[f"{x}_err"]), _pm(r[y], r[f"{y}_err"]),
                         step, cost, *([r["search"]] if with_search else []), r["trial_id"] + more])
    return sorted(rows, key=lambda row: (row[0], row[1] != "loss"))


def _pm(value: float, half: float) -> str:
    return f"{value:.3f} ± {half:.3f}" if np.isfinite(half) else f"{value:.3f}"


def _img(paths: list[Path], alt: str) -> str:
    png = next(p for p in paths if p.suffix == ".png")
    svg = next((p for p in paths if p.suffix == ".svg"), None)
    link = f' <a href="{html.escape(svg.name)}">SVG</a>' if svg else ""
    return f'<p><img src="{html.escape(png.name)}" alt="{html.escape(alt)}">{link}</p>'


def _index_html(data: RunData, runs, figures, curves, tables, hv: pd.DataFrame, search: pd.DataFrame | None,
                vocab_size) -> str:
    df = data.summaries
    counts = data.status_counts()
    n_trials, n_targets = len(data.trials), len(data.baselines)
    versions = sorted(df["code_version"].dropna().unique()) if "code_version" in df else []
    problems = data.problems()
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Unlearning sweep report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Unlearning sweep report</h1>",
             "<p>Runs: " + ", ".join(f"<code>{esc(redact(r))}</code>" for r in runs) + "</p>",
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
        parts.append("<p>Every trial finished with status ok"
                     + (" or was stopped early as dominated.</p>" if len(data.stopped()) else ".</p>"))
    parts += _stopped_note(data.stopped())

    parts += ["<h2>Pareto fronts (Figure 1)</h2>", _img(figures["pareto"], "Pareto fronts")]
    if vocab_size:
        parts.append(f"<p class='note'>Random-guess loss ln|V| = ln {vocab_size} = {math.log(vocab_size):.3f}.</p>")
    front_rows = _front_rows(data, search is not None)
    if front_rows:
        parts += ["<h3>Pareto-optimal trials</h3>",
                  render(["model", "panel", "method", "x", "y", "step", "device-s",
                          *(["search"] if search is not None else []), "trial"], front_rows,
                         "loss panel: x = L_F (higher better), y = L_R (lower better); ROUGE panel: "
                         "x = forget ROUGE (lower better), y = retain ROUGE (higher better), over every "
                         "evaluated step. step: the evaluated step; device-s: what the trial had spent up "
                         "to it (wall s × workers × GPUs per worker; mean over seeds). No-unlearn is left out.",
                         "html")]
    if len(hv):
        parts += ["<h3>Hypervolume per method</h3>",
                  render(list(hv.columns), [[_cell(v) for v in r] for r in hv.assign(
                      model=hv["model"].map(model_label)).itertuples(index=False)],
                         "Area each method's points dominate against the reference point shown (ROUGE: the "
                         "worst corner (1, 0), over each configuration's best evaluated points, seed means; "
                         "loss: final points against (L_F of No-unlearn, ln|V| or the largest L_R)).", "html")]

    if search is not None:
        parts += _search_section(search, figures.get("search_cost", []))

    parts += ["<h2>Tables</h2>"] + ([f"<p class='note'>{esc(tables['note'])}</p>"] if tables["note"] else [])
    parts += ["<h3>Paper layout (Tables 1-2)</h3>", tables[("paper_table", "html")],
              _links("paper_table"), "<h3>Without → with AutoLR (Table 3)</h3>", tables[("autolr_table", "html")],
              _links("autolr_table")]
    if ("published", "html") in tables:
        parts += ["<h3>No-unlearn targets beside their published values, and published method results beside "
                  "the matching trials</h3>", tables[("published", "html")],
                  "<p><a href='published.md'>published.md</a></p>"]
    parts += field_outputs_html(tables, "table")
    parts += ["<h3>Every trial</h3>", summary_table(df, "html"), "<p><a href='summary.md'>summary.md</a></p>"]
    parts += field_outputs_html(tables, "answers")

    parts.append("<h2>Curves</h2>")
    for title, why, paths in curves:
        parts.append(f"<h3>{esc(title)}</h3>")
        parts.append(_img(paths, title) if paths else f"<p class='note'>Not drawn: {esc(why)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _stopped_note(stopped: pd.DataFrame) -> list[str]:
    """A short, collapsed note on the trials a front search stopped early (not a problem)."""
    if stopped.empty:
        return []
    rows = [[t, "–" if pd.isna(n) else str(int(n)), "" if pd.isna(why) else str(why)]
            for t, n, why in stopped.itertuples(index=False)]
    return [f"<details class='note'><summary>{len(stopped)} trial(s) stopped early as dominated (by the front "
            "search's scheduler; a normal outcome)</summary>",
            render(["trial", "steps run", "stop reason"], rows, "", "html"), "</details>"]


def _search_section(table: pd.DataFrame, paths: list[Path]) -> list[str]:
    """The "Search cost" section: hypervolume against trials and device-seconds, and the table."""
    several = table["dataset"].nunique(dropna=False) > 1
    header = ["model", *(["dataset"] if several else []), "search", "trials", "device-s", "hypervolume",
              "front points"]
    rows = [[model_label(r.model), *([str(r.dataset)] if several else []), r.search, str(r.trials),
             f"{r.device_s:.1f}", f"{r.hypervolume:.4f}", str(r.front_points)] for r in table.itertuples()]
    parts = ["<h2>Search cost</h2>"]
    parts.append(_img(paths, "Hypervolume against trials and device-seconds") if paths else
                 "<p class='note'>Not drawn: no unlearning trial.</p>")
    parts += [render(header, rows, "Per model and search kind: trials run, their device-seconds (wall s × workers "
                     "× GPUs per worker), the hypervolume of all their evaluated points at the end (seed means; "
                     f"axes: {table['axes'].iloc[0] if 'axes' in table and len(table) else 'ROUGE'}), and how many "
                     "points of the model's Pareto front they reached.", "html"),
              "<p><a href='search_cost.csv'>search_cost.csv</a> · "
              "<a href='search_cost_trace.csv'>search_cost_trace.csv</a> (the hypervolume after each trial)</p>"]
    return parts


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _links(name: str) -> str:
    return "<p>" + " · ".join(f"<a href='{name}.{ext}'>{name}.{ext}</a>" for _, ext in FORMATS) + "</p>"


