"""The smoke grid through the launcher with its storage on a real S3-compatible server (moto, started by
the session fixture ``s3_smoke_sweep``, on 127.0.0.1; no network) named by a query-parameter URI
(``s3://bucket/runs?endpoint_override=127.0.0.1:PORT&scheme=http``); the sweep is in tests/s3_smoke_sweep.py.

One sweep, three launches, each trial a Ray Train job (``--runner train``: Ray Train's checkpoints and
its resume go through the store; the inline runner's checkpoints do in tests/test_multinode.py). The
first launch is SIGKILLed, with every process of its session, once a trial has finished and another is
held half-way; the same command then completes the run with nothing lost (no finished trial re-run, the
held one continued from its checkpoint in the store, the target downloaded once into the node's cache)
and writes the report into the store and into the local folder it was given (TensorBoard's event files
are in the store too); a third launch re-runs nothing.

Slow (about 75 s on 2 CPUs, shared with tests/test_integration.py): ``pytest -m slow``.
"""
from __future__ import annotations

import os
import signal

import pytest

from s3_smoke_sweep import BUCKET, RUN, STEPS, snapshot

pytestmark = pytest.mark.slow


def test_smoke_grid_on_object_storage_killed_resumed_and_relaunched(s3_smoke_sweep):
    sweep = s3_smoke_sweep
    store, done_before, held = sweep.store, sweep.done_before, sweep.held
    assert sweep.first_rc == -signal.SIGKILL
    assert len(done_before) == 2 and len(held) == 1, (done_before, held)  # No-unlearn row + NGDiff; GDiff half-way

    assert sweep.second_rc == 0, sweep.log("second")[-4000:]
    out = sweep.log("second")
    assert "cached, reused" in out and "2 ok, 0 failed, 0 diverged, 0 skipped trial(s)" in out, out[-3000:]
    trials = {t: store.read_table(f"{RUN}/trials/{t}/summary.parquet").to_pylist()[0] for t in sweep.finished()}
    assert sorted(r["method"] for r in trials.values()) == ["gdiff_hold", "ngdiff", "no_unlearn"]
    for t, r in trials.items():
        if r["method"] != "no_unlearn":
            assert r["status"] == "ok" and r["steps"] == STEPS, r
            steps = store.read_table(f"{RUN}/trials/{t}/steps.parquet").column("step").to_pylist()
            assert steps == list(range(1, STEPS + 1)), t
    assert [t for t in done_before if sweep.everything[t] != sweep.before[t]] == []  # nothing finished ran again
    for t, state in held.items():  # the held trial went on from its step-10 checkpoint in the store
        curve = store.read_table(f"{RUN}/trials/{t}/steps.parquet").to_pylist()
        assert [r["step"] for r in state["rows"]] == list(range(1, 11)), t
        assert [(r["wall_s"], r["loss_retain"]) for r in state["rows"]] == \
            [(r["wall_s"], r["loss_retain"]) for r in curve[:10]], t
    # The node cache holds the one target, downloaded once; the report is in the store and here.
    assert [n for n in os.listdir(sweep.cache) if not n.startswith(".")] == [next(iter(trials.values()))["target_hash"]]
    assert "index.html" in store.list_files(f"{RUN}/report") and (sweep.tmp / "report" / "index.html").exists()
    assert f"s3://{BUCKET}/runs/{RUN}/report" in out
    events = [f for f in store.list_files(f"{RUN}/tune") if "events.out.tfevents" in f]
    assert len({f.split("/")[0] for f in events}) >= 2, events  # TensorBoard's files, with Tune's, in the store

    assert sweep.third_rc == 0, sweep.log("third")[-3000:]
    third = sweep.log("third")
    assert "2 ok, 0 failed" in third, third[-3000:]
    assert [t for t in trials if snapshot(store, t) != sweep.everything[t]] == []  # a relaunch re-runs nothing
