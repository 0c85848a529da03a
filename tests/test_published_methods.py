"""Published method results beside the matching trials (``analysis.published_methods``).

    .venv/bin/python -m pytest tests/test_published_methods.py -x -q
"""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pandas as pd

from analysis.published import load_published, published_table
from analysis.published_methods import (COLUMNS, METHOD_MAP, PUBLISHED_METHODS, document, load_published_methods,
                                        methods_beside_measured, methods_table)
from sweeper.grid.method_entries import _method_variants
from sweeper.methods.objectives import get_objective
from sweeper.methods.registry import known_rules, make_rule
from sweeper.store.results import SUMMARY_FIELDS

RESULTS = "OpenUnlearning docs/results.md @8f9872c26f27dc81cb9a5340fb0fc3671c65e031 (locuslab/open-unlearning)"
REPRO = "OpenUnlearning docs/repro.md @7fa0b552e59bd50aef00529b43546865c6f30c7d (locuslab/open-unlearning)"
LLAMA2, LLAMA1 = "open-unlearning/tofu_Llama-2-7b-chat-hf_full", "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"


def test_csv_rows_parse_name_their_source_and_map_to_registered_methods():
    df = load_published_methods()
    assert list(df.columns) == ["benchmark", "checkpoint", "split", "published_method", "method", "c", "metric",
                                "value", "lr", "epochs", "source", "setup"]
    # two pages x (TOFU: 2 models x 6 methods x 3 splits x 3 metrics + MUSE: 5 methods x 2 splits x 4 metrics)
    assert len(df) == 2 * (2 * 6 * 3 * 3 + 5 * 2 * 4) == 296
    assert np.isfinite(df["value"]).all() and (df["lr"] == 1e-5).all() and (df["epochs"] == 10).all()
    assert set(df["source"].map(document)) == {RESULTS, REPRO}
    assert df["source"].str.fullmatch(r"OpenUnlearning docs/\w+\.md @[0-9a-f]{40} \(locuslab/open-unlearning\), "
                                      r"table: (TOFU|MUSE) unlearning on the .+").all()
    assert (df["setup"].str.contains("lr 1e-5") & df["setup"].str.contains("10 epochs")).all()
    assert not df.assign(doc=df["source"].map(document)).duplicated(
        ["doc", "checkpoint", "split", "published_method", "metric"]).any()
    summary_columns = {name for name, _, _ in SUMMARY_FIELDS}
    assert set(df["metric"]) <= summary_columns
    # Their names map as METHOD_MAP says, and each label is what a grid entry expands to: a registered rule
    # with registered objectives and the preset's c.
    for name, group in df.groupby("published_method"):
        label, c = METHOD_MAP[name]
        assert set(group["method"]) == {label}
        assert group["c"].isna().all() if c is None else (group["c"] == c).all()
        rule, _, loss = label.partition("+")
        variants = list(_method_variants({"method": rule, **({"forget_loss": loss} if loss else {})}))
        assert len(variants) == 1
        rule_name, forget_loss, rule_params, _, got_label, retain_loss, _ = variants[0]
        assert got_label == label and rule_name in known_rules()
        get_objective(forget_loss, "forget"), get_objective(retain_loss, "retain")  # registered, or ValueError
        assert make_rule(rule_name, rule_params).params.get("c") == c  # the preset's c or the rule's default
    # The checkpoints unlearned from are the published targets' (analysis/data/published_targets.csv).
    targets = load_published()
    assert set(df["checkpoint"]) == set(targets.loc[targets["role"] == "target", "checkpoint"])
    assert set(df.loc[df["benchmark"] == "MUSE", "published_method"]) == set(METHOD_MAP) - {"IdkDPO"}


def test_values_are_kept_as_printed():
    with open(PUBLISHED_METHODS, newline="") as f:
        text = {(document(r["source"]), r["checkpoint"], r["split"], r["published_method"], r["metric"]): r["value"]
                for r in csv.DictReader(f)}
    assert text[(RESULTS, LLAMA2, "forget05", "GradAscent", "model_utility")] == "0.00e+00"
    assert text[(RESULTS, "muse-bench/MUSE-news_target", "news", "NPO", "privleak")] == "-86.00"
    assert text[(REPRO, LLAMA1, "forget01", "IdkDPO", "truth_ratio_forget")] == "0.60"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?(e[+-]\d+)?", v) for v in text.values())
    # The two pages differ only in RMU's rows.
    df = load_published_methods().assign(doc=lambda d: d["source"].map(document))
    wide = df.pivot_table(index=["checkpoint", "split", "published_method", "metric"], columns="doc",
                          values="value").reset_index()
    differs = wide[wide[RESULTS] != wide[REPRO]]
    # 9 + 9 + 8 RMU values; equal on both pages: Llama-2 forget05 truth ratio (0.81), Llama-1B forget10 MU (0.59)
    assert set(differs["published_method"]) == {"RMU"} and len(differs) == 8 + 8 + 8
    rmu = wide[(wide["checkpoint"] == LLAMA2) & (wide["split"] == "forget01") & (wide["metric"] == "forget_quality")
               & (wide["published_method"] == "RMU")]
    assert rmu[[RESULTS, REPRO]].values.tolist() == [[6.76e-03, 0.4]]


def _trial(method: str, model: dict, data: dict, c=None, lr=5e-5, seed=0, rule=None, forget_loss_params=None,
           **metrics) -> dict:
    """A trial's summary row as ``sweeper.store.records.summary_row`` writes it (params_json = the spec)."""
    rule = rule or {"npo": "ga", "simnpo": "gdiff", "rmu": "gdiff", "idkdpo": "gdiff"}.get(method, method.split("+")[0])
    params = {"model": {"workers": 1, **model}, "data": data, "label": method, "method": rule, "lr": lr,
              "lr_mode": "static",
              "optimizer": "adam", "steps": 188, "batch_size": 32, "seed": seed,
              "method_params": {} if c is None else {"c": c}, "forget_loss_params": forget_loss_params or {}}
    return dict(model=model["name"], dataset=data["name"], method=method, c=math.nan if c is None else c, lr=lr,
                lr_mode="static", optimizer="adam", steps=188, seed=seed, status="ok",
                params_json=json.dumps(params, sort_keys=True), **metrics)


TOFU10 = {"name": "tofu10", "kind": "tofu", "source": "locuslab/TOFU", "forget_split": "forget10"}
TOFU01 = {"name": "tofu01", "kind": "tofu", "source": "locuslab/TOFU", "forget_split": "forget01"}
L1 = {"name": "llama-1b", "checkpoint": LLAMA1}
L2 = {"name": "llama-7b", "checkpoint": LLAMA2}
NEWS = {"name": "news", "kind": "muse", "source": "muse-bench/MUSE-News"}


def test_published_value_lands_beside_the_matching_trial_only():
    rows = [
        _trial("gdiff", L1, TOFU10, c=0.5, seed=0, model_utility=0.50, forget_quality=1e-30),
        _trial("gdiff", L1, TOFU10, c=0.5, seed=1, model_utility=0.52, forget_quality=3e-30),
        _trial("gdiff", L1, TOFU10, c=0.5, lr=1e-5, model_utility=0.40),  # another config: its own row, same lr
        # Not matched: another c, the forget-only npo preset, a sweeper-fine-tuned target, the No-unlearn row.
        _trial("gdiff", L1, TOFU10, c=0.9, model_utility=0.9),
        _trial("npo", L1, TOFU10, model_utility=0.9),
        _trial("simnpo", {"name": "tiny-gpt2"}, TOFU10, c=0.5, model_utility=0.9),
        _trial("no_unlearn", L1, TOFU10, model_utility=0.61),
        _trial("gdiff+npo", L1, TOFU01, c=0.5, model_utility=0.55),
        _trial("gdiff+npo", L1, TOFU01, c=0.5, forget_loss_params={"beta": 0.5}, model_utility=0.35),  # own row
        _trial("gdiff", L2, TOFU10, model_utility=0.3),  # {method: gdiff} without c: null column, runs at 0.5
        _trial("rmu", L2, TOFU01, c=0.5, forget_quality=0.2),
        _trial("ga", {"name": "muse-llama", "checkpoint": "muse-bench/MUSE-news_target"}, NEWS, privleak=40.0),
        _trial("ga", {"name": "muse-llama", "checkpoint": "muse-bench/MUSE-news_target"},  # books on News: none
               {**NEWS, "name": "books-src", "source": "muse-bench/MUSE-Books"}, privleak=40.0),
    ]
    out = methods_beside_measured(pd.DataFrame(rows))
    assert list(out.columns) == COLUMNS
    assert set(out["method"]) == {"gdiff", "gdiff+npo", "rmu", "ga"}
    assert not (out["setting"].str.contains("c 0.9")).any() and set(out["dataset"]) == {"tofu10", "tofu01", "news"}
    def pick(method, setting, metric, model="llama-1b"):
        return out[(out["model"] == model) & (out["method"] == method) & (out["setting"] == setting)
                   & (out["metric"] == metric)]

    ours = "adam lr 5e-05 (static), 188 steps, batch 32, c 0.5"
    gd = pick("gdiff", ours, "model_utility")
    assert gd["published"].tolist() == [0.49, 0.49] and set(gd["source"].map(document)) == {RESULTS, REPRO}
    assert np.allclose(gd["measured"], 0.51) and (gd["seeds"] == 2).all() and gd["lr_differs"].all()
    assert pick("gdiff", ours, "forget_quality")["published"].tolist() == [1.06e-239, 1.06e-239]
    assert pick("gdiff", ours, "truth_ratio_forget")["measured"].isna().all()  # not computed
    same_lr = pick("gdiff", "adam lr 1e-05 (static), 188 steps, batch 32, c 0.5", "model_utility")
    assert same_lr["measured"].tolist() == [0.40, 0.40] and not same_lr["lr_differs"].any()
    default_c = pick("gdiff", ours, "model_utility", model="llama-7b")  # the setting names the rule's c 0.5
    assert default_c["published"].tolist() == [0.58, 0.58] and (default_c["measured"] == 0.3).all()
    npo = out[(out["method"] == "gdiff+npo") & (out["metric"] == "model_utility")]
    assert set(npo["published_method"]) == {"NPO"} and npo["published"].tolist() == [0.56] * 4  # forget01
    assert dict(zip(npo["setting"], npo["measured"])) == {ours: 0.55, ours + ", beta 0.5": 0.35}
    rmu = out[(out["method"] == "rmu") & (out["metric"] == "forget_quality")]
    assert dict(zip(rmu["source"].map(document), rmu["published"])) == {RESULTS: 6.76e-03, REPRO: 0.4}
    assert (rmu["measured"] == 0.2).all()
    ga = out[out["method"] == "ga"]
    assert set(ga["split"]) == {"news"} and len(ga) == 2 * 4
    assert ga.loc[ga["metric"] == "privleak", "published"].tolist() == [52.11, 52.11]


def test_tables_show_both_pages_and_the_setup():
    rows = pd.DataFrame([_trial("rmu", L2, TOFU01, c=0.5, forget_quality=0.2),
                         _trial("rmu", L2, TOFU01, c=0.5, seed=1, forget_quality=0.2),
                         _trial("no_unlearn", L2, TOFU01, model_utility=0.62)])
    md = methods_table(rows)
    assert md.startswith("| model | dataset | split | method (published) | setting | metric | measured | [1] | [2] |")
    assert "| forget_quality | 0.2 | 0.00676 | 0.4 |" in md
    assert f"[1] {RESULTS}: 2 x L40s" in md and f"[2] {REPRO}" in md and "Settings may differ" in md
    assert "c 0.5, 2 seeds *" in md  # lr 5e-05 is not the published 1e-5
    both = published_table(rows)
    assert both.index("| model | dataset | checkpoint |") < both.index("| model | dataset | split | method (published)")
    assert "<table>" in methods_table(rows, "html") and "\\begin{tabular}" in methods_table(rows, "latex")
    assert methods_table(pd.DataFrame([_trial("gdiff", L2, TOFU01, c=0.9)])) == ""
    assert methods_beside_measured(pd.DataFrame()).empty
