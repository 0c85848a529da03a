"""Published unlearning-method results on TOFU and MUSE, beside what the sweep measured with the same method
from the same released checkpoint on the same split.

    from analysis.load import load_run
    from analysis.published_methods import methods_beside_measured, methods_table
    data = load_run("runs/x")
    methods_beside_measured(data.summaries)  # one row per (our config, metric, published source)
    print(methods_table(data.summaries))     # Markdown ("html" / "latex" too); "" when nothing matches

The report shows it under the published targets' table (``analysis.published.published_table``).

``data/published_methods.csv`` (columns ``benchmark, checkpoint, split, published_method, method, c, metric,
value, lr, epochs, source, setup``) transcribes the method rows (GradAscent, GradDiff, IdkDPO, NPO, SimNPO,
RMU) of OpenUnlearning's reproducibility tables (github.com/locuslab/open-unlearning), each value as printed,
from two versions of the page, each named with its commit in ``source``:

- ``docs/results.md`` @8f9872c2: "TOFU unlearning on the Llama-2-7b-hf-chat architecture" and "... on the
  Llama-3.2-1B-Instruct architecture" (forget01/05/10, unlearned from ``open-unlearning/tofu_<model>_full``),
  "MUSE unlearning on the benchmark's target models" (News / Books, from ``muse-bench/MUSE-<split>_target``;
  no IdkDPO row). Stated setup: 2 x L40s, DeepSpeed ZeRO-3, lr 1e-5, alpha = gamma = 1, beta 0.1 (where
  applicable), 10 epochs, paged_adamw_32bit.
- ``docs/repro.md`` @7fa0b552: the same three tables under "Accelerate (default configuration)" and an
  effective batch of 32; its method rows equal results.md's except RMU's (all three tables). The repository's
  ``community/leaderboard.md`` links this file as the results page.

Both pages say SimNPO and RMU "can be significantly improved with careful tuning" and that the numbers are
for reproducibility only. ``community/leaderboard.md`` (@7cc8cee7) holds no method row on these checkpoints
(only Finetuned / Retain rows and one method on Llama-3.1-8B and WMDP without a stated setup): nothing of it
is transcribed here.

Their method names -> this project's summary ``method`` (the grid label) and GDiff's c. The framework's
loss is ``gamma * L_forget + alpha * L_retain`` (``src/trainer/unlearn/grad_diff.py`` and the classes built
on it); with alpha = gamma = 1 that is our gdiff at c = alpha / (alpha + gamma) = 0.5, the same direction at
half the scale:

==========  ==============  ===  ===============================================================
theirs      here            c    note
==========  ==============  ===  ===============================================================
GradAscent  ``ga``          –    forget NLL ascended, no retain term
GradDiff    ``gdiff``       0.5  forget NLL ascended + retain NLL
IdkDPO      ``idkdpo``      0.5  their refusals are TOFU's idk set, ours the project's own 56
NPO         ``gdiff+npo``   0.5  NPO (beta 0.1) + retain NLL; our ``npo`` preset is forget-only (rule
                                 ga), a different method, so it is not matched
SimNPO      ``simnpo``      0.5  the preset (beta 4.5, gamma 0.125, delta 0); the page states no
                                 SimNPO-specific values
RMU         ``rmu``         0.5  configs/trainer/RMU.yaml @8f9872c2 sets alpha 1000, steering 300,
                                 layer 7 and trains layers 5-7's down_proj only; ours: coeff 2, c 0.5,
                                 all weights
==========  ==============  ===  ===============================================================

Matching: an unlearned summary row (not ``no_unlearn`` / ``retrained_reference``) gets a published value
when its ``method`` equals ``method``, its ``c`` (or its rule's default c when the grid gave none) equals
``c`` (where ``c`` is given), and its checkpoint and
split match as in ``analysis.published``: ``params["model"]["checkpoint"]`` equals ``checkpoint``; TOFU
``params["data"]["forget_split"]`` equals ``split``; MUSE by the data source (any split of the checkpoint for
a local source). Seeds of one configuration are averaged. Training settings are not matched: lr, steps,
batch and optimizer are shown beside the published setup, and a row whose initial lr is not the published
one is marked.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.published_match import COMPARED_METHODS, _params, _split
from analysis.tables import DASH, model_label, render

PUBLISHED_METHODS = Path(__file__).parent / "data" / "published_methods.csv"
#: Their method name -> (our summary ``method`` label, GDiff's c or None where the rule has none).
METHOD_MAP = {"GradAscent": ("ga", None), "GradDiff": ("gdiff", 0.5), "IdkDPO": ("idkdpo", 0.5),
              "NPO": ("gdiff+npo", 0.5), "SimNPO": ("simnpo", 0.5), "RMU": ("rmu", 0.5)}
COLUMNS = ["model", "dataset", "checkpoint", "split", "method", "published_method", "setting", "lr_differs",
           "seeds", "metric", "measured", "published", "source", "setup"]


def load_published_methods() -> pd.DataFrame:
    """The published method values in long format, one row per (source, checkpoint, split, method, metric)."""
    return pd.read_csv(PUBLISHED_METHODS, dtype={"value": float, "c": float, "lr": float, "epochs": float})


def document(source: str) -> str:
    """The page a source names, without its table: 'OpenUnlearning docs/repro.md @<commit> (...)'."""
    return source.split(", table:")[0]


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _c(r, params: dict) -> float:
    """The row's c, or its rule's default c when the grid entry gave none (``{method: gdiff}`` runs at 0.5
    with a null ``c`` column)."""
    c = _number(r.get("c"))
    if math.isnan(c) and isinstance(params.get("method"), str):
        from sweeper.methods.registry import make_rule
        try:
            c = _number(make_rule(params["method"], params.get("method_params") or {}).params.get("c"))
        except ValueError:  # a plugin rule that is not imported here, or bad stored params
            pass
    return c


def _setting(r, params: dict, c: float) -> str:
    """This project's settings of a summary row, as one short string."""
    parts = [f"{r.get('optimizer') or params.get('optimizer', '?')} lr {_number(r.get('lr')):g}"
             f" ({r.get('lr_mode') or params.get('lr_mode', '?')})"]
    steps = _number(r.get("steps", params.get("steps")))
    if not math.isnan(steps):
        parts.append(f"{steps:g} steps")
    if params.get("batch_size") is not None:
        parts.append(f"batch {params['batch_size']}")
    if not math.isnan(c):
        parts.append(f"c {c:g}")
    for key in ("forget_loss_params", "retain_loss_params"):  # NPO's beta, RMU's layer, ... when the grid set them
        given = params.get(key)
        parts += [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(given.items())] \
            if isinstance(given, dict) else []
    return ", ".join(parts)


def methods_beside_measured(summaries: pd.DataFrame) -> pd.DataFrame:
    """Measured beside published method values, one row per (our configuration, metric, published source).

    ``measured`` is the seed mean (NaN where the run did not compute the metric); ``seeds`` counts the rows
    averaged; ``lr_differs`` is True when our initial lr is not the published one. No match gives an empty
    frame with the same columns.
    """
    if summaries.empty or "method" not in summaries or "params_json" not in summaries:
        return pd.DataFrame(columns=COLUMNS)
    published = load_published_methods()
    rows = []
    for _, r in summaries[~summaries["method"].isin(COMPARED_METHODS)].iterrows():
        hit = published[published["method"] == r["method"]]
        if hit.empty:
            continue
        params = _params(r["params_json"])
        model, data = params.get("model") or {}, params.get("data") or {}
        checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
        if not checkpoint or not isinstance(data, dict) or data.get("kind", "tofu") not in ("tofu", "muse"):
            continue
        hit = hit[hit["checkpoint"] == str(checkpoint)]
        split = _split(data)
        if data.get("kind", "tofu") == "tofu" or split is not None:
            hit = hit[hit["split"] == split]
        c = _c(r, params)
        hit = hit[hit["c"].isna() | ((hit["c"] - c).abs() < 1e-9)]
        setting, lr = _setting(r, params, c), _number(r.get("lr"))
        for _, p in hit.iterrows():
            measured = _number(r.get(p["metric"]))
            rows.append({"model": r["model"], "dataset": r["dataset"], "checkpoint": p["checkpoint"],
                         "split": p["split"], "method": r["method"], "published_method": p["published_method"],
                         "setting": setting, "lr_differs": not math.isclose(lr, p["lr"], rel_tol=1e-9),
                         "metric": p["metric"], "measured": measured, "published": float(p["value"]),
                         "source": p["source"], "setup": p["setup"]})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    keys = ["model", "dataset", "checkpoint", "split", "method", "published_method", "setting", "lr_differs",
            "metric", "source"]
    out = pd.DataFrame(rows).groupby(keys, sort=False, dropna=False).agg(
        seeds=("measured", "size"), measured=("measured", "mean"), published=("published", "first"),
        setup=("setup", "first")).reset_index()
    return out[COLUMNS]


def _value(v) -> str:
    return DASH if v is None or pd.isna(v) else f"{v:.4g}"


def methods_table(summaries: pd.DataFrame, fmt: str = "markdown") -> str:
    """``methods_beside_measured`` as a table: one column per published page ([1], [2], ...), its source and
    setup in the caption. "" when nothing matches."""
    df = methods_beside_measured(summaries)
    if df.empty:
        return ""
    df = df.assign(document=df["source"].map(document))
    docs = list(dict.fromkeys(df["document"]))
    keys = ["model", "dataset", "split", "method", "published_method", "setting", "lr_differs", "seeds", "metric"]
    rows = []
    for key, group in df.groupby(keys, sort=False, dropna=False):
        r = dict(zip(keys, key))
        by_doc = dict(zip(group["document"], group["published"]))
        rows.append([model_label(r["model"]), r["dataset"], r["split"], f"{r['method']} ({r['published_method']})",
                     r["setting"] + (f", {r['seeds']} seeds" if r["seeds"] > 1 else "")
                     + (" *" if r["lr_differs"] else ""), r["metric"],
                     _value(group["measured"].iloc[0]), *[_value(by_doc.get(d)) for d in docs]])
    setups = df.drop_duplicates("document").set_index("document")["setup"]
    notes = " ".join(f"[{i}] {d}: {setups[d]}." for i, d in enumerate(docs, 1))
    caption = (f"Published method results beside ours (same method, checkpoint and split). {notes} "
               f"Settings may differ: 'setting' is ours (seed mean), the published setup is above; "
               f"* marks a row whose initial lr is not the published one. {DASH}: not computed / not published.")
    header = ["model", "dataset", "split", "method (published)", "setting", "metric", "measured",
              *[f"[{i}]" for i in range(1, len(docs) + 1)]]
    return render(header, rows, caption, fmt)
