"""Published metric values of released No-unlearn checkpoints, beside what the sweep measured on them.

    from analysis.load import load_run
    from analysis.published import load_published, published_beside_measured, published_table
    data = load_run("runs/x")
    published_beside_measured(data.summaries)  # model, dataset, checkpoint, split, metric, measured, published, source
    print(published_table(data.summaries))     # the same as a Markdown table ("html" / "latex" too),
                                               # then analysis.published_methods' table of method results

``data/published_targets.csv`` (columns ``benchmark, checkpoint, role, split, metric, value, source``)
transcribes the "Finetuned" (role ``target``) and "Retain" (role ``retain``) rows of OpenUnlearning's
reproducibility page, ``docs/results.md`` of github.com/locuslab/open-unlearning: the tables "TOFU
unlearning on the Llama-2-7b-hf-chat architecture", "... on the Llama-3.2-1B-Instruct architecture"
(split = TOFU forget split; the retain checkpoint of forget01/05/10 is ``_retain99/95/90``) and "MUSE
unlearning on the benchmark's target models" (split ``news`` / ``books``). Metric names are this
project's summary columns (``sweeper/store/results.py``):

=======================  ======================  ===================================================
OpenUnlearning           here                    scale
=======================  ======================  ===================================================
forget_quality           ``forget_quality``      KS-test p-value, as published
model_utility            ``model_utility``       harmonic mean of 9 values, as published
forget_truth_ratio       ``truth_ratio_forget``  see below
forget_knowmem_ROUGE     ``knowmem_forget``      ROUGE-L recall in [0, 1] in both: no conversion
forget_verbmem_ROUGE     ``verbmem_forget``      ROUGE-L recall in [0, 1] in both: no conversion
retain_knowmem_ROUGE     ``knowmem_retain``      ROUGE-L recall in [0, 1] in both: no conversion
privleak                 ``privleak``            percent in both ((AUC - AUC_retrain) / AUC_retrain x 100)
=======================  ======================  ===================================================

``truth_ratio_forget`` is the same aggregate as OpenUnlearning's ``forget_truth_ratio``: per question
r = P_wrong / P_correct (the paraphrased answer against the geometric mean of the perturbed answers'
length-normalised probabilities), then ``mean(min(r, 1/r))`` (OpenUnlearning's ``closer_to_1_better``
aggregator, there with a 1e-10 guard; here ``sweeper.metrics.tofu_metrics.truth_ratio_forget_aggregate``
via ``sweeper/tasks/tofu_eval.py``). One version of OpenUnlearning's ``forget_Truth_Ratio.yaml`` names
another aggregator (``prob_mean``); which one produced the published numbers is not stated there.

Matching (``published_beside_measured``): a summary row with ``method`` ``no_unlearn`` (or
``retrained_reference``) is compared when ``params["model"]["checkpoint"]`` of its ``params_json``
equals a published ``checkpoint`` and the split agrees: TOFU (``params["data"]["kind"] == "tofu"``)
``params["data"]["forget_split"]``; MUSE (kind ``muse``) ``news`` / ``books`` when
``params["data"]["source"]`` is ``muse-bench/MUSE-News`` / ``muse-bench/MUSE-Books``, any split of the
checkpoint otherwise (each MUSE checkpoint is published for one split). A target fine-tuned by the
sweeper itself has no ``checkpoint`` and is not compared.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.published_match import COMPARED_METHODS, _params, _split
from analysis.published_methods import methods_table
from analysis.tables import DASH, model_label, render

PUBLISHED_TARGETS = Path(__file__).parent / "data" / "published_targets.csv"
COLUMNS = ["model", "dataset", "checkpoint", "split", "metric", "measured", "published", "source"]


def load_published() -> pd.DataFrame:
    """The published values in long format, one row per (checkpoint, split, metric)."""
    return pd.read_csv(PUBLISHED_TARGETS, dtype={"value": float})


def published_beside_measured(summaries: pd.DataFrame) -> pd.DataFrame:
    """Measured beside published values for the compared rows whose checkpoint has published values.

    One row per (model, dataset, checkpoint, metric); several runs' rows of the same target are
    averaged. ``measured`` is NaN where the run did not compute the metric (e.g. ``forget_quality``
    without a retrained reference). No match at all gives an empty frame with the same columns.
    """
    if summaries.empty or "method" not in summaries or "params_json" not in summaries:
        return pd.DataFrame(columns=COLUMNS)
    published = load_published()
    rows = []
    for _, r in summaries[summaries["method"].isin(COMPARED_METHODS)].iterrows():
        params = _params(r["params_json"])
        model, data = params.get("model") or {}, params.get("data") or {}
        checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
        if not checkpoint or not isinstance(data, dict) or data.get("kind", "tofu") not in ("tofu", "muse"):
            continue  # fine-tuned by the sweeper (no checkpoint), or a task nothing is published for
        hit = published[published["checkpoint"] == str(checkpoint)]
        split = _split(data)
        if data.get("kind", "tofu") == "tofu" or split is not None:
            hit = hit[hit["split"] == split]
        for _, p in hit.iterrows():
            measured = r.get(p["metric"])
            rows.append({"model": r["model"], "dataset": r["dataset"], "checkpoint": p["checkpoint"],
                         "split": p["split"], "metric": p["metric"],
                         "measured": float(measured) if measured is not None and pd.notna(measured) else math.nan,
                         "published": float(p["value"]), "source": p["source"]})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    keys = ["model", "dataset", "checkpoint", "split", "metric"]
    df = pd.DataFrame(rows)
    out = df.groupby(keys, sort=False, dropna=False).agg(
        measured=("measured", "mean"), published=("published", "first"), source=("source", "first")).reset_index()
    return out[COLUMNS]


def _value(v) -> str:
    return DASH if v is None or pd.isna(v) else f"{v:.4g}"


def published_table(summaries: pd.DataFrame, fmt: str = "markdown") -> str:
    """``published_beside_measured`` as a table ("markdown", "html" or "latex"), followed by the published
    method results beside the matching trials (``analysis.published_methods.methods_table``); "" when
    nothing matches."""
    methods = methods_table(summaries, fmt)
    targets = _targets_table(summaries, fmt)
    return "\n".join(t for t in (targets, methods) if t)


def _targets_table(summaries: pd.DataFrame, fmt: str) -> str:
    df = published_beside_measured(summaries)
    if df.empty:
        return ""
    rows = [[model_label(r.model), r.dataset, r.checkpoint, r.split, r.metric, _value(r.measured),
             _value(r.published)] for r in df.itertuples(index=False)]
    sources = ", ".join(sorted(df["source"].unique()))
    return render(["model", "dataset", "checkpoint", "split", "metric", "measured", "published"], rows,
                  f"Published: {sources}. Measured: this run's evaluation of the same checkpoint "
                  f"({DASH}: not computed).", fmt)
