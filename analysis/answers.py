"""One HTML page per trial with its worst-scored answers, read back from the trial's ``samples.parquet``.

A surprising ROUGE in a table can be read back to the answers that caused it: the page lists the
forget questions the model still answers best (highest ROUGE-L recall: what it did not forget) and the
retain questions it answers worst (lowest: what it lost), each with the question, the reference and
the model's greedy answer, at the trial's final evaluation; then the mean ROUGE of every evaluated step.

    pages = write_answer_pages(load_run("runs/demo"), Path("runs/demo/report"))   # {trial_dir: "answers/x.html"}

``write_field_outputs`` / ``field_outputs_html`` are what the report (``analysis.report``) calls: these pages
and the field's metrics table (``analysis.field_table``).
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from analysis.field_table import field_table, has_field_metrics
from analysis.load import RunData, _filesystem, read_answer_rows

#: Per-sample ROUGE metrics, by task: TOFU's answers, MUSE's VerbMem (forget) and KnowMem (retain).
ROUGE_METRICS = ("rouge_recall", "verbmem_rouge_recall", "knowmem_rouge_recall")
WORST = 10
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}td,th{border:1px solid #ccc;padding:2px 6px;
vertical-align:top}.note{color:#555;font-size:.9em}"""


def read_samples(data: RunData, trial_dir: str) -> pd.DataFrame | None:
    """The trial's ``samples.parquet`` as a DataFrame, or None when it has none (or it cannot be read)."""
    for source in data.sources or [trial_dir.rsplit("/trials/", 1)[0]]:
        shown = source.split("?", 1)[0].rstrip("/")
        if not trial_dir.startswith(shown + "/"):
            continue
        fs, root = _filesystem(source)
        try:
            return pq.read_table(f"{root}{trial_dir[len(shown):]}/samples.parquet", filesystem=fs).to_pandas()
        except (FileNotFoundError, OSError):
            return None
    return None


def final_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last evaluation (the highest ``step``; all rows when no step is recorded)."""
    if "step" not in samples or samples["step"].isna().all():
        return samples
    return samples[samples["step"] == samples["step"].max()]


def worst_answers(samples: pd.DataFrame, n: int = WORST) -> dict[str, pd.DataFrame]:
    """``{"forget": n highest-ROUGE forget answers, "retain": n lowest-ROUGE retain answers}`` of the final
    evaluation (per split, the first ROUGE metric of ``ROUGE_METRICS`` it has)."""
    final = final_samples(samples)
    out = {}
    for split, highest in (("forget", True), ("retain", False)):
        rows = final[final["split"] == split]
        metric = next((m for m in ROUGE_METRICS if (rows["metric"] == m).any()), None)
        if metric is None:
            continue
        rows = rows[rows["metric"] == metric].sort_values(["value", "index"], ascending=[not highest, True])
        out[split] = rows.head(n).assign(metric=metric)
    return out


def _esc(x) -> str:
    return "–" if x is None or (not isinstance(x, str) and pd.isna(x)) else html.escape(str(x))


def _answers_table(rows) -> str:
    """``rows``: a DataFrame or a list of row dicts."""
    head = "<tr><th>#</th><th>ROUGE-L recall</th><th>question</th><th>reference</th><th>model's greedy answer</th></tr>"
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    body = [f"<tr><td>{int(r['index'])}</td><td>{r['value']:.3f}</td><td>{_esc(r.get('question'))}</td>"
            f"<td>{_esc(r.get('reference_answer'))}</td><td>{_esc(r.get('generated_answer'))}</td></tr>"
            for r in records]
    return "<table>" + head + "".join(body) + "</table>"


def _by_step(samples: pd.DataFrame) -> str:
    """Mean ROUGE of each evaluated step, per split: how the answers moved during unlearning."""
    rouge = samples[samples["metric"].isin(ROUGE_METRICS) & samples["split"].isin(["forget", "retain"])]
    if "step" not in rouge or rouge["step"].isna().all():
        return ""
    return _by_step_html(rouge.groupby(["step", "split"])["value"].mean().unstack("split").sort_index())


def _by_step_html(table: pd.DataFrame) -> str:
    rows = "".join(f"<tr><td>{int(s)}</td>" + "".join(f"<td>{v:.3f}</td>" for v in r) + "</tr>"
                   for s, r in table.iterrows())
    head = "<tr><th>step</th>" + "".join(f"<th>{html.escape(c)} ROUGE</th>" for c in table.columns) + "</tr>"
    return "<h2>Mean ROUGE at each evaluation</h2><table>" + head + rows + "</table>"


def trial_page(row: pd.Series, samples: pd.DataFrame | None, n: int = WORST) -> str:
    """The HTML page of one trial (``row``: its summary row)."""
    if samples is None or samples.empty:
        return _page(row, None, "", "")
    step = final_samples(samples)["step"].max() if "step" in samples else None
    when = f" at step {int(step)}" if step is not None and pd.notna(step) else ""
    return _page(row, worst_answers(samples, n), when, _by_step(samples))


def _page(row, worst: dict | None, when: str, by_step: str) -> str:
    """A trial's page from its parts: ``worst`` per split (None: the trial wrote no samples)."""
    title = f"{row.get('trial_id')} ({row.get('method')}, {row.get('model')} on {row.get('dataset')})"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{CSS}</style>"
             f"</head><body><p><a href='../index.html'>← report</a></p><h1>{_esc(title)}</h1>"]
    if worst is None:
        parts.append("<p class='note'>This trial wrote no samples.parquet (an older run, or a failed trial).</p>")
        return "\n".join(parts + ["</body></html>"]) + "\n"
    for split, what in (("forget", "forget questions answered best (highest ROUGE: not forgotten)"),
                        ("retain", "retain questions answered worst (lowest ROUGE: lost)")):
        if split in worst:
            parts += [f"<h2>The {len(worst[split])} {what}{when}</h2>", _answers_table(worst[split])]
    parts.append(by_step)
    parts.append("<p class='note'>Every score of every evaluated question, with its step: the trial's "
                 "samples.parquet (columns step, split, metric, index, value, question, reference_answer, "
                 "generated_answer).</p></body></html>")
    return "\n".join(parts) + "\n"


def page_name(trial_dir: str) -> str:
    return "answers/" + re.sub(r"[^A-Za-z0-9._-]+", "_", trial_dir.rstrip("/").rsplit("/", 1)[-1]) + ".html"


def write_answer_pages(data: RunData, out: Path, n: int = WORST) -> dict[str, str]:
    """Write one page per finished trial (No-unlearn rows included) under ``out/answers/``; return
    ``{trial_dir: page path relative to out}`` for the trials that have samples.

    A run loaded by ``load_run`` knows which trials have a samples.parquet: their ROUGE rows are read
    in one pass (``analysis.load.read_answer_rows``) and every page is cut from them at once; otherwise
    (a hand-made ``RunData``) each trial's file is read in turn."""
    rows = read_answer_rows(data) if data.sample_files or data.answer_rows is not None else None
    if rows is None:
        return _pages_one_by_one(data, out, n)
    pages = _pages_at_once(rows, n)
    links = {}
    for row in data.summaries.to_dict("records"):
        if row["trial_dir"] not in pages:
            continue
        name = page_name(row["trial_dir"])
        if not links:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
        worst, when, by_step = pages[row["trial_dir"]]
        (out / name).write_text(_page(row, worst, when, by_step), encoding="utf-8")
        links[row["trial_dir"]] = name
    return links


def _pages_one_by_one(data: RunData, out: Path, n: int) -> dict[str, str]:
    links = {}
    for _, row in data.summaries.iterrows():
        samples = read_samples(data, row["trial_dir"])
        if samples is None:
            continue
        name = page_name(row["trial_dir"])
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(trial_page(row, samples, n), encoding="utf-8")
        links[row["trial_dir"]] = name
    return links


def _pages_at_once(rows: pd.DataFrame, n: int) -> dict[str, tuple[dict, str, str]]:
    """Per trial: (worst answers per split, " at step S", the mean-ROUGE-per-step HTML), the same parts
    ``trial_page`` makes from one trial's samples, for every trial of ``rows`` in a few group-bys.
    ``rows``: the ROUGE rows of the forget and retain splits, with ``trial_dir`` and ``last_step`` (the
    trial's highest evaluated step over all its samples), as ``analysis.load.read_answer_rows`` gives."""
    rows = rows[rows["trial_dir"].notna()].reset_index(drop=True)
    real = rows["metric"].notna()   # a trial whose samples hold no ROUGE rows has one row of nulls
    stepped = rows["last_step"].notna()
    final = rows[real & (~stepped | (rows["step"] == rows["last_step"]))]
    rank = final["metric"].map({m: i for i, m in enumerate(ROUGE_METRICS)})
    final = final[rank == rank.groupby([final["trial_dir"], final["split"]]).transform("min")]
    # highest values first on forget, lowest first on retain; ties by index, as worst_answers sorts
    key = final["value"].where(final["split"] == "retain", -final["value"])
    final = final.assign(_key=key).sort_values(["trial_dir", "split", "_key", "index"], kind="stable")
    final = final[final.groupby(["trial_dir", "split"]).cumcount() < n]
    worst: dict = {}
    for r in final.drop(columns=["_key"]).to_dict("records"):
        worst.setdefault(r["trial_dir"], {}).setdefault(r["split"], []).append(r)
    means: dict = {}
    grouped = rows[real & stepped].groupby(["trial_dir", "step", "split"], sort=True)["value"].mean()
    for (trial, step, split), v in grouped.items():
        means.setdefault(trial, {}).setdefault(step, {})[split] = v
    out = {}
    for trial, last in rows.groupby("trial_dir", sort=False)["last_step"].first().items():
        when = f" at step {int(last)}" if pd.notna(last) else ""
        mine = worst.get(trial, {})
        out[trial] = ({s: mine[s] for s in ("forget", "retain") if s in mine}, when, _means_html(means.get(trial)))
    return out


def _means_html(steps: dict | None) -> str:
    """``_by_step_html`` of {step: {split: mean}} (one trial), without building a DataFrame per trial."""
    if not steps:
        return ""
    splits = sorted({sp for row in steps.values() for sp in row})
    rows = "".join(f"<tr><td>{int(st)}</td>" + "".join(f"<td>{steps[st].get(sp, float('nan')):.3f}</td>"
                                                       for sp in splits) + "</tr>" for st in sorted(steps))
    head = "<tr><th>step</th>" + "".join(f"<th>{html.escape(c)} ROUGE</th>" for c in splits) + "</tr>"
    return "<h2>Mean ROUGE at each evaluation</h2><table>" + head + rows + "</table>"


def write_field_outputs(data: RunData, shown, out: Path, formats) -> dict:
    """Write ``field_table.<ext>`` (when any trial has the field's metrics; ``shown``: the trials the
    tables show) and the answer pages; return them as the report's ``tables`` entries."""
    tables: dict = {}
    if has_field_metrics(shown):
        for fmt, ext in formats:
            tables[("field_table", fmt)] = field_table(shown, fmt)
            (out / f"field_table.{ext}").write_text(tables[("field_table", fmt)], encoding="utf-8")
    tables["answers"] = write_answer_pages(data, out)
    return tables


def field_outputs_html(tables: dict, part: str) -> list[str]:
    """The index's HTML for the field table (``part="table"``) or the list of answer pages (``"answers"``)."""
    if part == "table" and ("field_table", "html") in tables:
        links = " · ".join(f"<a href='field_table.{e}'>field_table.{e}</a>" for e in ("md", "html", "tex"))
        return ["<h3>The field's privacy and memorisation metrics</h3>", tables[("field_table", "html")],
                f"<p>{links}</p>"]
    if part == "answers" and tables.get("answers"):
        items = "".join(f"<li><a href='{html.escape(page)}'>{html.escape(trial.rstrip('/').rsplit('/', 1)[-1])}</a></li>"
                        for trial, page in sorted(tables["answers"].items()))
        return [f"<details><summary>Answers per trial: each trial's worst-scored answers ({len(tables['answers'])} "
                f"pages)</summary><ul>{items}</ul></details>"]
    return []
