"""The analysis at scale (issue 21 item 6): a run loaded in one pass and from its compacted tables gives
the same data as reading every trial's files; answer pages cut from all trials at once equal those made
one trial at a time; the hypervolume trace's incremental pass equals recomputing every prefix; a curve
figure of more trials than ``MAX_SERIES`` draws medians and bands per label and says what it left out.
The report's time at 27 to 10,000 trials is measured by ``benchmarks/bench_report.py``."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import analysis.compact as compact
from analysis import answers, front, plots
from analysis.load import RunData, load_run
from analysis.pareto import hypervolume_2d
from analysis.series import summarised
from sweeper.store.results import SAMPLE_SCHEMA, STEP_SCHEMA, SUMMARY_SCHEMA, to_table

METHODS = ["gdiff", "ngdiff", "npo"]


def _trial(run: Path, i: int, seed: int, rng: random.Random) -> str:
    method, lr = METHODS[i % 3], [1e-3, 3e-3][(i // 3) % 2]
    tid = f"tiny_{method}_static_lr{lr:g}_s{seed}_{i:04d}"
    folder = run / "trials" / tid
    folder.mkdir(parents=True)
    rf, rr = rng.random(), rng.random()
    summary = dict(run="r", trial_id=tid, seed=seed, model="tiny-gpt2", dataset="authors", method=method,
                   c=0.5 if method == "gdiff" else None, forget_loss="nll", lr_mode="static", lr=lr, steps=10,
                   workers=1, status="ok", final_loss_forget=rng.uniform(1, 5), final_loss_retain=rng.uniform(0, 2),
                   rouge_forget=rf, rouge_retain=rr, wall_s=1.0, finished_at=1000.0 + i, search="grid")
    pq.write_table(to_table([summary], SUMMARY_SCHEMA), folder / "summary.parquet")
    steps = [dict(run="r", trial_id=tid, step=s, loss_retain=rng.random(), loss_forget=rng.random() * s,
                  norm_retain=1 / s, norm_forget=2 / s, lr=lr, w_retain=1.0, w_forget=0.5,
                  rouge_forget=(1 - (1 - rf) * s / 10) if s % 5 == 0 else None,
                  rouge_retain=(1 - (1 - rr) * s / 10) if s % 5 == 0 else None) for s in range(1, 11)]
    pq.write_table(to_table(steps, STEP_SCHEMA), folder / "steps.parquet")
    samples = [dict(run="r", trial_id=tid, step=step, split=split, metric=metric, index=q,
                    value=round(rng.random(), 2), question=f"q{q}?", reference_answer=f"a{q}",
                    generated_answer=f"g{q} {rng.random():.2f}")
               for step in (5, 10) for split in ("forget", "retain", "holdout")
               for metric in ("rouge_recall", "exact") for q in range(12)]
    pq.write_table(to_table(samples, SAMPLE_SCHEMA), folder / "samples.parquet")
    (folder / "_SUCCESS").touch()
    return tid


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """24 finished trials (3 methods x 2 lr x 4 seeds) with curves and samples, and one unfinished."""
    rng, root = random.Random(0), tmp_path / "run"
    for i in range(24):
        _trial(root, i, seed=i // 6, rng=rng)
    (root / "trials" / "unfinished").mkdir()
    return root


def _same(a: RunData, b: RunData) -> None:
    pd.testing.assert_frame_equal(a.summaries, b.summaries)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert a.unfinished == b.unfinished


def test_compacted_tables_load_as_the_trial_folders_and_follow_rewritten_trials(run, monkeypatch):
    folders = load_run(run, compact=False)
    assert len(folders.summaries) == 24 and len(folders.steps) == 240 and folders.unfinished == [f"{run}/trials/unfinished"]
    assert not (run / "compact").exists()
    monkeypatch.setattr(compact, "COMPACT_AFTER", 10)
    first = load_run(run)                              # reads the folders, writes the compacted tables
    assert sorted(p.name for p in (run / "compact").iterdir()) == [
        "answers.parquet", "steps.parquet", "summary.parquet", "trials.parquet"]
    second = load_run(run)                             # reads the compacted tables
    assert not second.sample_files and len(second.answer_rows) == len(first.answer_rows) > 0
    _same(first, folders)
    _same(second, folders)
    # a trial re-run (its summary rewritten) and a new trial are read from their folders again
    tid = folders.summaries["trial_id"].iloc[3]
    row = pq.read_table(run / "trials" / tid / "summary.parquet").to_pylist()[0]
    pq.write_table(to_table([{**row, "rouge_forget": 0.123456, "wall_s": 99.0}], SUMMARY_SCHEMA),
                   run / "trials" / tid / "summary.parquet")
    _trial(run, 24, seed=9, rng=random.Random(1))
    third = load_run(run)
    assert [t.rsplit("/", 1)[-1] for _, _, t in third.sample_files] == sorted([tid, "tiny_gdiff_static_lr0.001_s9_0024"])
    _same(third, load_run(run, compact=False))
    assert third.summaries.set_index("trial_id").loc[tid, "rouge_forget"] == 0.123456


def test_answer_pages_at_once_equal_one_by_one(run, tmp_path, monkeypatch):
    for cached in (False, True):   # the ROUGE rows scanned from the files, then from the compacted tables
        monkeypatch.setattr(compact, "COMPACT_AFTER", 10 if cached else 10**9)
        data = load_run(run)
        if cached:
            data = load_run(run)
            assert data.answer_rows is not None and not data.sample_files
        fast, slow = tmp_path / f"fast{cached}", tmp_path / f"slow{cached}"
        links = answers.write_answer_pages(data, fast)
        assert links == answers._pages_one_by_one(data, slow, answers.WORST) and len(links) == 24
        for page in links.values():
            assert (fast / page).read_text() == (slow / page).read_text(), page
        text = (fast / next(iter(links.values()))).read_text()
        assert "at step 10</h2>" in text and "Mean ROUGE at each evaluation" in text


def test_incremental_hypervolume_trace_equals_every_prefix_recomputed(run):
    data = load_run(run, compact=False)
    trace = front.hypervolume_trace(data)
    pts = front.evaluation_points(data)
    order = data.summaries.sort_values(["finished_at", "trial_id"])["trial_dir"].tolist()
    for k in range(1, len(order) + 1):   # seed means of the first k trials' points, from scratch
        means = front.seed_means(pts[pts["trial_dir"].isin(order[:k])], "rouge_forget", "rouge_retain")
        want = hypervolume_2d(means[["rouge_forget", "rouge_retain"]].to_numpy(float), (1.0, 0.0), ("min", "max"))
        assert trace["hypervolume"].iloc[k - 1] == pytest.approx(want, abs=1e-12), k
    assert trace["hypervolume"].nunique() > 3   # seeds move the means: the trace is not flat


def test_curve_figures_summarise_beyond_max_series(run, tmp_path, monkeypatch):
    curves = load_run(run, compact=False).curves()
    labels = ["a", "b", "c"]
    steps = pd.DataFrame({"trial_dir": [f"t{i}" for i in range(9)], "column": labels * 3, "step": 1})
    s = summarised(steps, "column", labels, 2)
    assert s["labels"] == ["a", "b"] and s["names"] == {"a": "a (3)", "b": "b (3)"}
    assert "9 trials: each line is the median" in s["note"] and "1 more labels (3 trials) not drawn" in s["note"]
    drawn = {}
    original = plots.draw_bands
    monkeypatch.setattr(plots, "draw_bands", lambda ax, st, col, labs, *a: drawn.setdefault(col, labs) and
                        original(ax, st, col, labs, *a))
    monkeypatch.setattr(plots, "MAX_SERIES", 4)   # 24 trials, 6 method columns (3 methods x 2 lr): lrs pooled
    assert plots.plot_curves(curves, tmp_path / "c.png") == [tmp_path / "c.png", tmp_path / "c.svg"]
    assert len(drawn["column"]) == 3 and all(lab.endswith(" (all lr)") for lab in drawn["column"]), drawn
    monkeypatch.setattr(plots, "MAX_SERIES", 6)   # 6 columns fit: one band per column, lrs apart
    drawn.clear()
    assert plots.plot_curves(curves, tmp_path / "c1.png") and len(drawn["column"]) == 6
    assert plots.plot_norms_lr(curves, tmp_path / "n.png", method="ngdiff")   # 8 trials > 4 // 2: medians
    monkeypatch.setattr(plots, "MAX_SERIES", 100)
    drawn.clear()
    assert plots.plot_curves(curves, tmp_path / "c2.png") and not drawn    # few trials: one line each
    assert np.isfinite(curves["loss_forget"]).all()


def test_a_run_on_object_storage_loads_in_one_pass_and_compacts_into_the_store(run, monkeypatch):
    """The same against moto's S3 server (started here, no network), the run named by a query URI."""
    from object_store_server import s3_server
    from sweeper.store.storage import Storage
    with s3_server() as server:
        server.bucket("scale")
        store = Storage(server.uri("scale/runs"))
        store.upload_dir(str(run), "r")
        url = store.url("r")
        assert "?" in url
        monkeypatch.setattr(compact, "COMPACT_AFTER", 10)
        first = load_run(url)
        assert {"summary.parquet", "steps.parquet", "answers.parquet", "trials.parquet"} <= set(store.list_files("r/compact"))
        second = load_run(url)
        assert second.answer_rows is not None and not second.sample_files
        local = load_run(run, compact=False)
        for data in (first, second):
            assert data.summaries["trial_dir"].tolist() == [t.replace(str(run), url.split("?")[0])
                                                            for t in local.summaries["trial_dir"]]
            pd.testing.assert_frame_equal(data.summaries.drop(columns="trial_dir"),
                                          local.summaries.drop(columns="trial_dir"))
            pd.testing.assert_frame_equal(data.steps.drop(columns="trial_dir"), local.steps.drop(columns="trial_dir"))
