"""Tables: per-trial summary, the paper's Tables 1-2 layout, and Table 3's "without -> with AutoLR".

    from analysis.tables import summary_markdown, paper_table, autolr_table
    print(summary_markdown(data.summaries))
    print(paper_table(data.summaries, fmt="latex"))     # "markdown" | "html" | "latex"
    print(autolr_table(data.summaries))

Several seeds in one cell show as "mean ± h" (h: half-width of the 95% t-interval), and such a cell
is bold only when the whole interval clears the success threshold. Where the paper reports the same
model x method x metric, a cell reads "ours (paper)".
"""
from __future__ import annotations

import functools
import html
import math

import numpy as np
import pandas as pd

from analysis.labels import (  # noqa: F401  (re-exported: tables are where callers look for labels)
    METHOD_NAMES, METHOD_RANK, PAPER_MODELS, dataset_family, label_trials, method_label, model_label, sharding_label,
)
from analysis.load import BASELINE, paper_reference
from analysis.success import METRICS, SuccessCriteria, available_metrics

__all__ = ["summary_markdown", "summary_table", "paper_table", "autolr_table", "paper_reference",
           "method_label", "model_label", "label_trials", "mean_interval", "t_half_width"]

#: Dataset family -> the paper tables that report it.
PAPER_TABLES = {"TOFU": ["1"], "MUSE-NEWS": ["2", "6"]}
SUMMARY_COLUMNS = ["method", "c", "workers", "lr_mode", "lr", "final_lr", "steps", "final_loss_retain",
                   "final_loss_forget", "rouge_forget", "rouge_retain", "status", "wall_s"]
DASH = "–"


# ---------------------------------------------------------------- numbers


def mean_interval(values) -> tuple[float, float, int]:
    """Mean, half-width of the 95% t-interval (NaN for one value) and count of the finite values.

    >>> m, h, n = mean_interval([1.0, 2.0, 3.0]); (m, round(h, 3), n)  # h = t(0.975, 2) * 1 / sqrt(3)
    (2.0, 2.484, 3)
    """
    try:   # a numeric column as it is; anything else (strings, None) through to_numeric
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, 0
    if len(v) == 1:
        return float(v[0]), math.nan, 1
    return float(v.mean()), _t975(len(v)) * float(v.std(ddof=1)) / math.sqrt(len(v)), len(v)


@functools.lru_cache(maxsize=None)
def _t975(n: int) -> float:
    """t(0.975, n - 1): a table of thousands of cells asks for the same few counts."""
    from scipy.special import stdtrit  # the t quantile; scipy.stats would add 0.4 s of imports to a report
    return float(stdtrit(n - 1, 0.975))


def t_half_width(std, n):
    """Half-width of the 95% t-interval of a mean from the sample std (ddof=1) and count ``n``;
    NaN where ``n < 2``. Vectorised, so a groupby's ``std`` and ``size`` can be passed as they are."""
    from scipy.special import stdtrit  # t(0.975, n - 1), as scipy.stats.t.ppf, without its imports
    std, n = np.asarray(std, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = stdtrit(n - 1, 0.975) * std / np.sqrt(n)
    return np.where(n > 1, h, np.nan)


def _num(value, digits: int = 3) -> str:
    return DASH if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _stat(values, digits: int = 3) -> tuple[str, float]:
    m, h, n = mean_interval(values)
    return (f"{_num(m, digits)} ± {_num(h, digits)}" if n > 1 else _num(m, digits)), m


# ---------------------------------------------------------------- rendering
# A table is a header, rows of cells, and a caption; a cell is a list of (text, bold) segments.


def render(header: list[str], rows: list[list], caption: str, fmt: str) -> str:
    """The table as Markdown, HTML or LaTeX."""
    cells = [[c if isinstance(c, list) else [(str(c), False)] for c in row] for row in rows]
    if fmt == "markdown":
        def md(segs):
            return "".join(f"**{t}**" if b and t.strip() else t for t, b in segs).replace("|", "\\|")
        out = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
               "|" + "|".join(" --- " for _ in header) + "|"]
        out += ["| " + " | ".join(md(c) for c in row) + " |" for row in cells]
        return "\n".join(out + ["", caption] if caption else out) + "\n"
    if fmt == "html":
        def h(segs):
            return "".join(f"<b>{html.escape(t)}</b>" if b else html.escape(t) for t, b in segs)
        out = ["<table>", f"<caption>{html.escape(caption)}</caption>" if caption else "",
               "<thead><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in header) + "</tr></thead>", "<tbody>"]
        out += ["<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in cells]
        return "\n".join([line for line in out if line] + ["</tbody>", "</table>"]) + "\n"
    if fmt == "latex":
        def tex(segs):
            return "".join(f"\\textbf{{{_tex(t)}}}" if b and t.strip() else _tex(t) for t, b in segs)
        out = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex(caption)}}}",
               "\\begin{tabular}{" + "l" * len(header) + "}", "\\toprule",
               " & ".join(_tex(x) for x in header) + " \\\\", "\\midrule"]
        out += [" & ".join(tex(c) for c in row) + " \\\\" for row in cells]
        return "\n".join(out + ["\\bottomrule", "\\end{tabular}", "\\end{table}"]) + "\n"
    raise ValueError(f"fmt is 'markdown', 'html' or 'latex', not {fmt!r}.")


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = {"±": r"$\pm$", "→": r"$\rightarrow$", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
                "η": r"$\eta$", "≥": r"$\geq$", "<": r"$<$", ">": r"$>$", "–": "--", "×": r"$\times$"}


def _tex(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    return "".join(_TEX_SYMBOLS.get(ch, ch) for ch in text)


# ---------------------------------------------------------------- summary


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Final metrics per trial as display strings, No-unlearn first, then in the paper's method order."""
    df = label_trials(df)
    cols = list(SUMMARY_COLUMNS)
    for extra in ("seed", "dataset", "model"):  # shown only when they vary
        if extra in df and df[extra].nunique(dropna=False) > 1:
            cols.insert(0, extra)
    keys = [k for k in ("model", "dataset") if k in df]
    df = df.sort_values(keys + ["order"] + (["seed"] if "seed" in df else []), kind="stable")
    out = pd.DataFrame(index=df.index)
    for col in cols:
        v = df[col] if col in df else pd.Series([None] * len(df), index=df.index)
        if col in ("lr", "final_lr", "c"):
            out[col] = [DASH if pd.isna(x) else f"{x:g}" for x in v]
        elif col in ("steps", "seed"):
            out[col] = [DASH if pd.isna(x) else str(int(x)) for x in v]
        elif col == "workers":  # "1", or "2 DDP" / "4 FSDP" for a sharded trial
            params = df["params_json"] if "params_json" in df else [None] * len(df)
            out[col] = [DASH if pd.isna(x) else (sharding_label(x, p).replace("×", "").strip() or "1")
                        for x, p in zip(v, params)]
        elif col == "wall_s":
            out[col] = [_num(x, 1) for x in v]
        elif pd.api.types.is_float_dtype(v):
            out[col] = [_num(x) for x in v]
        else:
            out[col] = [DASH if x is None or (not isinstance(x, str) and pd.isna(x)) else str(x) for x in v]
    return out.reset_index(drop=True)


def summary_table(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """The per-trial summary in any of the three formats."""
    frame = summary_frame(df)
    return render(list(frame.columns), frame.values.tolist(), "", fmt)


def summary_markdown(df: pd.DataFrame) -> str:
    """The per-trial summary as a Markdown table (``summary.md`` of the report)."""
    return summary_table(df, "markdown")


# ---------------------------------------------------------------- paper layout


def _usable(df: pd.DataFrame) -> pd.DataFrame:
    # Failed trials have no metrics; diverged ones are real results and stay.
    return df[df["status"] != "failed"] if "status" in df else df


def _metric_list(df: pd.DataFrame, metrics, criteria: SuccessCriteria) -> list[str]:
    if metrics is None:
        return available_metrics(df, criteria)
    unknown = [m for m in metrics if m not in criteria.columns]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(criteria.columns)}.")
    return [m for m in metrics if criteria.columns[m] in df]


def _row_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(row title, rows) per model (and dataset, when several), in a stable order."""
    keys = [k for k in ("model", "dataset") if k in df]
    several = "dataset" in df and df["dataset"].nunique() > 1
    out = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        title = model_label(key[0]) + (f" · {key[1]}" if several else "")
        out.append((title, g))
    return out


def _reference_lookup(tables: dict[str, list[str]]):
    """A function (model, dataset, metric, label[, note]) -> (paper value, table) or None."""
    ref = paper_reference()

    @functools.lru_cache(maxsize=None)   # a table of thousands of trials asks the same cells many times
    def lookup(model, dataset, metric, label, note=None):
        family = dataset_family(dataset)
        if family not in tables:
            return None
        hit = ref[ref["table"].isin(tables[family]) & (ref["model"] == model_label(model))
                  & (ref["metric"] == metric) & (ref["method"] == label)]
        if note is not None:
            hit = hit[hit["note"].fillna("").str.startswith(note)]
        return (float(hit["value"].iloc[0]), hit["table"].iloc[0]) if len(hit) else None
    return lookup


def paper_table(df: pd.DataFrame, metrics=None, fmt: str = "markdown",
                criteria: SuccessCriteria = SuccessCriteria(), reference: bool = True) -> str:
    """Tables 1-2's layout: rows model x metric, columns methods; successes in bold.

    ``metrics``: paper names ("Verbmem", "Knowmem", "Utility", "TruthRatio"); default: all present.
    """
    df = label_trials(_usable(df))
    metrics = _metric_list(df, metrics, criteria)
    columns = df.drop_duplicates("column").sort_values("order", kind="stable")["column"].tolist()
    lookup = _reference_lookup(PAPER_TABLES) if reference else (lambda *a: None)
    rows, used_refs, seeds = [], set(), False
    for title, g in _row_groups(df):
        base = g[g["method"] == BASELINE]
        cells = dict(tuple(g.groupby("column", sort=False)))   # one split, not a scan per cell
        for i, metric in enumerate(metrics):
            col = criteria.columns[metric]
            row = [title if i == 0 else "", f"{metric} {METRICS.get(metric, ('', ''))[1]}".strip()]
            for column in columns:
                cell = cells.get(column, g.iloc[:0])
                if cell.empty:
                    row.append(DASH)
                    continue
                text, mean = _stat(cell[col])
                if pd.isna(mean) and "status" in cell and (cell["status"] == "diverged").any():
                    text = "diverged"  # say why the cell is empty
                seeds |= cell[col].notna().sum() > 1
                bold = column != "No-unlearn" and _passes(criteria, metric, cell[col], base[col])
                segs = [(text, bold)]
                ref = lookup(cell["model"].iloc[0], cell["dataset"].iloc[0], metric, cell["label"].iloc[0]) \
                    if "dataset" in cell and _paper_setting(cell) else None
                if ref is not None:
                    used_refs.add(ref[1])
                    segs.append((f" ({ref[0]:.3f})", False))
                row.append(segs)
            rows.append(row)
    return render(["Model", "Metric", *columns], rows, _caption(criteria, used_refs, seeds), fmt)


def _passes(criteria: SuccessCriteria, metric: str, values, base_values) -> bool:
    """Whether one cell succeeds; a test that cannot be made (NA) is not a success.

    One value: the value itself is tested. Several seeds: the whole 95% interval must clear the
    threshold, so the end nearest to failing is tested (mean + h for Verbmem / Knowmem, which must
    stay below, mean - h for Utility / TruthRatio); the threshold itself uses No-unlearn's mean.
    """
    mean, half, _ = mean_interval(values)
    if np.isfinite(half):
        mean = mean + half if METRICS.get(metric, ("", "↑"))[1] == "↓" else mean - half
    flag = criteria.passes(metric, [mean], [mean_interval(base_values)[0]])[0]
    return flag is not pd.NA and bool(flag)


def _paper_setting(cell: pd.DataFrame) -> bool:
    """Whether a cell ran as the paper's Tables 1, 2 and 6 did: NGDiff with AutoLR, the rest static."""
    label, mode = cell["label"].iloc[0], cell["lr_mode"].iloc[0] if "lr_mode" in cell else "static"
    return label == "No-unlearn" or (mode == "autolr") == (label == "NGDiff")


def _caption(criteria: SuccessCriteria, refs: set, seeds: bool, arrow: bool = False) -> str:
    parts = [f"Bold: success (Verbmem < {criteria.verbmem_max:g}, Knowmem < {criteria.knowmem_rel_max:.0%}, "
             f"Utility ≥ {criteria.utility_rel_min:.0%}, TruthRatio ≥ {criteria.truth_ratio_rel_min:.0%} "
             "of No-unlearn)."]
    if arrow:
        parts.insert(0, "Cells: static lr → AutoLR from the same initial lr.")
    if seeds:
        parts.append("m ± h: mean and 95% t-interval over seeds; with seeds, bold only when the 95% interval "
                     "clears the threshold.")
    if refs:
        parts.append(f"x (y): ours (paper Table {', '.join(sorted(refs))}).")
    return " ".join(parts)


def autolr_table(df: pd.DataFrame, metrics=None, fmt: str = "markdown",
                 criteria: SuccessCriteria = SuccessCriteria(), reference: bool = True, digits: int = 2) -> str:
    """Table 3's layout: rows model x method, columns metrics, cells "static → AutoLR" ("0.81 → 0.20").

    Static and AutoLR trials are paired by initial learning rate (AutoLR starts from it); a method
    with one static and one AutoLR lr is paired regardless. A missing side shows as "–".
    """
    df = label_trials(_usable(df))
    metrics = _metric_list(df, metrics, criteria)
    lookup = _reference_lookup({"TOFU": ["3"]}) if reference else (lambda *a: None)
    rows, used_refs, seeds = [], set(), False
    for title, g in _row_groups(df):
        base = g[g["method"] == BASELINE]
        where = (g["model"].iloc[0], g["dataset"].iloc[0] if "dataset" in g else None)
        first = True
        for label, m in sorted(g.groupby("label"), key=lambda kv: kv[1]["order"].min()):
            for lr_text, static, auto in _pairs(m):
                row = [title if first else "", label + lr_text]
                first = False
                for metric in metrics:
                    col = criteria.columns[metric]
                    sides = [_side(rows_, col, metric, label, base[col], criteria, digits) for rows_ in (static, auto)]
                    segs = [(sides[0][0], False)] if label == "No-unlearn" else [sides[0], (" → ", False), sides[1]]
                    # The paper's Table 3 numbers for the same cell, as "(without → with)".
                    if label == "No-unlearn":
                        ref = lookup(*where, metric, label)
                        segs += [(f" ({ref[0]:.{digits}f})", False)] if ref else []
                    else:
                        s, a = lookup(*where, metric, label, "without"), lookup(*where, metric, label, "with ")
                        if s or a:
                            segs.append((f" ({_num(s and s[0], digits)} → {_num(a and a[0], digits)})", False))
                            ref = s or a
                        else:
                            ref = None
                    used_refs |= {ref[1]} if ref else set()
                    seeds |= bool(static[col].notna().sum() > 1 or auto[col].notna().sum() > 1)
                    row.append(segs)
                rows.append(row)
    return render(["Model", "Method", *metrics], rows, _caption(criteria, used_refs, seeds, arrow=True), fmt)


def _side(rows: pd.DataFrame, col, metric, label, base_values, criteria, digits) -> tuple[str, bool]:
    """One side of "static → AutoLR": its text and whether it succeeds."""
    if rows.empty:
        return (DASH, False)
    text, _ = _stat(rows[col], digits)
    return (text, label != "No-unlearn" and _passes(criteria, metric, rows[col], base_values))


def _pairs(m: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(lr text, static rows, AutoLR rows) per initial lr of one method."""
    if (m["method"] == BASELINE).all():
        return [("", m, m.iloc[:0])]
    static, auto = m[m["lr_mode"] != "autolr"], m[m["lr_mode"] == "autolr"]
    s_lrs, a_lrs = sorted(static["lr"].dropna().unique()), sorted(auto["lr"].dropna().unique())
    if len(s_lrs) <= 1 and len(a_lrs) <= 1:
        return [("", static, auto)]
    return [(f" η={lr:g}", static[static["lr"] == lr], auto[auto["lr"] == lr]) for lr in sorted({*s_lrs, *a_lrs})]
