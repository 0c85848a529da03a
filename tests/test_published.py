"""Published values of released No-unlearn checkpoints (``analysis.published``).

    .venv/bin/python -m pytest tests/test_published.py -q
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from analysis.published import COLUMNS, load_published, published_beside_measured, published_table

SOURCE = "OpenUnlearning docs/results.md (locuslab/open-unlearning)"
TOFU_METRICS = ("forget_quality", "model_utility", "truth_ratio_forget")
MUSE_METRICS = ("knowmem_forget", "verbmem_forget", "privleak", "knowmem_retain")
#: checkpoint -> split -> values in the order of TOFU_METRICS / MUSE_METRICS (docs/results.md).
EXPECTED = {
    "open-unlearning/tofu_Llama-2-7b-chat-hf_full": {"forget01": (1.27e-03, 0.63, 0.53),
                                                     "forget05": (1.33e-13, 0.63, 0.51),
                                                     "forget10": (4.35e-25, 0.63, 0.52)},
    "open-unlearning/tofu_Llama-2-7b-chat-hf_retain99": {"forget01": (1.0, 0.63, 0.68)},
    "open-unlearning/tofu_Llama-2-7b-chat-hf_retain95": {"forget05": (1.0, 0.63, 0.67)},
    "open-unlearning/tofu_Llama-2-7b-chat-hf_retain90": {"forget10": (1.0, 0.61, 0.68)},
    "open-unlearning/tofu_Llama-3.2-1B-Instruct_full": {"forget01": (0.01, 0.60, 0.47),
                                                        "forget05": (2.96e-13, 0.6, 0.47),
                                                        "forget10": (8.08e-22, 0.6, 0.48)},
    "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain99": {"forget01": (1.0, 0.60, 0.65)},
    "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain95": {"forget05": (1.0, 0.6, 0.63)},
    "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90": {"forget10": (1.0, 0.59, 0.63)},
    "muse-bench/MUSE-news_target": {"news": (0.64, 0.58, -99.81, 0.55)},
    "muse-bench/MUSE-news_retrain": {"news": (0.33, 0.21, 0.0, 0.56)},
    "muse-bench/MUSE-books_target": {"books": (0.47, 1.0, -57.26, 0.69)},
    "muse-bench/MUSE-books_retrain": {"books": (0.3, 0.14, 0.0, 0.69)},
}


def test_published_csv_holds_exactly_the_transcribed_rows():
    df = load_published()
    assert list(df.columns) == ["benchmark", "checkpoint", "role", "split", "metric", "value", "source"]
    assert len(df) == 2 * 2 * 3 * 3 + 2 * 2 * 4 == 52
    assert np.isfinite(df["value"]).all() and (df["source"] == SOURCE).all()
    assert not df.duplicated(["checkpoint", "split", "metric"]).any()
    expected = {(c, s, m): v for c, splits in EXPECTED.items() for s, values in splits.items()
                for m, v in zip(TOFU_METRICS if len(values) == 3 else MUSE_METRICS, values)}
    got = {(r.checkpoint, r.split, r.metric): r.value for r in df.itertuples()}
    assert got == expected
    roles = df.drop_duplicates("checkpoint").set_index("checkpoint")["role"]
    assert all((roles[c] == "target") == c.endswith(("_full", "_target")) for c in roles.index)
    assert df.groupby("benchmark").size().to_dict() == {"MUSE": 16, "TOFU": 36}


def _row(method: str, model: dict, data: dict, **metrics) -> dict:
    """A summary row as ``sweeper.cluster.stage1`` writes a No-unlearn target's (params_json sorted JSON)."""
    params = {"model": {"workers": 1, **model}, "data": data, "target": {"lr": 3e-3}, "vocab_size": 32000}
    return dict(model=model["name"], dataset=data["name"], method=method, status="ok",
                params_json=json.dumps(params, sort_keys=True), **metrics)


TOFU10 = {"name": "tofu", "kind": "tofu", "source": "locuslab/TOFU", "forget_split": "forget10"}
LLAMA = {"name": "llama-1b", "checkpoint": "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"}


def test_measured_beside_published_for_matching_checkpoint_and_split():
    rows = [
        _row("no_unlearn", LLAMA, TOFU10, forget_quality=1e-20, model_utility=0.58, truth_ratio_forget=0.49),
        # Same checkpoint, other split: the forget10 numbers must not be taken for it.
        _row("no_unlearn", LLAMA, {**TOFU10, "name": "tofu05", "forget_split": "forget05"}, model_utility=0.59),
        # The retrained reference of the same model, matched by its own checkpoint.
        _row("retrained_reference", {**LLAMA, "checkpoint": "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90"},
             TOFU10, forget_quality=1.0, model_utility=0.57, truth_ratio_forget=0.62),
        # Not compared: fine-tuned by the sweeper (no checkpoint), null checkpoint, unknown one, a trial.
        _row("no_unlearn", {"name": "tiny-gpt2"}, TOFU10, model_utility=0.3),
        _row("no_unlearn", {"name": "tiny-gpt2", "checkpoint": None}, TOFU10, model_utility=0.3),
        _row("no_unlearn", {"name": "x", "checkpoint": "someone/else"}, TOFU10, model_utility=0.3),
        _row("gdiff", LLAMA, TOFU10, model_utility=0.1),
        # MUSE: the split comes from the source; a builtin source matches on the checkpoint alone.
        _row("no_unlearn", {"name": "muse-llama", "checkpoint": "muse-bench/MUSE-news_target"},
             {"name": "news", "kind": "muse", "source": "muse-bench/MUSE-News"}, verbmem_forget=0.57,
             knowmem_forget=0.63, knowmem_retain=0.54, privleak=-99.0),
        _row("no_unlearn", {"name": "muse-books", "checkpoint": "muse-bench/MUSE-books_target"},
             {"name": "news-as-books", "kind": "muse", "source": "muse-bench/MUSE-News"}, verbmem_forget=0.9),
        _row("no_unlearn", {"name": "muse-books", "checkpoint": "muse-bench/MUSE-books_target"},
             {"name": "books-local", "kind": "muse", "source": "builtin"}, verbmem_forget=0.9),
    ]
    out = published_beside_measured(pd.DataFrame(rows))
    assert list(out.columns) == COLUMNS
    get = out.set_index(["dataset", "checkpoint", "metric"])
    full, retain = LLAMA["checkpoint"], "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90"
    assert get.loc[("tofu", full, "model_utility"), ["measured", "published"]].tolist() == [0.58, 0.6]
    assert get.loc[("tofu", full, "forget_quality"), "published"] == 8.08e-22
    assert get.loc[("tofu05", full, "model_utility"), ["measured", "published"]].tolist() == [0.59, 0.6]
    assert math.isnan(get.loc[("tofu05", full, "forget_quality"), "measured"])  # not computed: shown as missing
    assert get.loc[("tofu", retain, "truth_ratio_forget"), ["measured", "published"]].tolist() == [0.62, 0.63]
    assert get.loc[("news", "muse-bench/MUSE-news_target", "privleak"), "published"] == -99.81
    assert get.loc[("books-local", "muse-bench/MUSE-books_target", "verbmem_forget"), "published"] == 1.0
    assert set(out["split"]) == {"forget10", "forget05", "news", "books"}
    assert set(out["dataset"]) == {"tofu", "tofu05", "news", "books-local"}  # not news-as-books
    assert set(out["model"]) == {"llama-1b", "muse-llama", "muse-books"}
    assert len(out) == 3 * 3 + 4 + 4


def test_no_match_gives_an_empty_frame_and_no_table():
    rows = pd.DataFrame([_row("no_unlearn", {"name": "tiny-gpt2"}, TOFU10, model_utility=0.3),
                         _row("no_unlearn", {"name": "m", "checkpoint": "open-unlearning/tofu_Llama-2-7b-chat-hf_full"},
                              {**TOFU10, "kind": "vision"}, model_utility=0.3)])
    assert published_beside_measured(rows).empty and list(published_beside_measured(rows).columns) == COLUMNS
    assert published_table(rows) == ""
    assert published_beside_measured(pd.DataFrame()).empty


def test_published_table_markdown():
    rows = pd.DataFrame([_row("no_unlearn", LLAMA, TOFU10, model_utility=0.58)])
    md = published_table(rows)
    assert md.startswith("| model | dataset | checkpoint | split | metric | measured | published |")
    assert "| model_utility | 0.58 | 0.6 |" in md and "| forget_quality | – | 8.08e-22 |" in md
    assert SOURCE in md
    assert "<table>" in published_table(rows, "html")
