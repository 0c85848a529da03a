"""Fault tolerance of the inline runner's Ray task (``sweeper.cluster.trial.run_inline_task``) under a real
launch on the session's Ray: each one-worker trial runs in a reused Ray worker, and its Tune trial process only
relays its reports. One launch runs four trials whose rules come from the test plugin ``faulty_methods``:

- NGDiff: fine, 'ok' with every step.
- ``nan_weights``: NaN parameters from step 5, non-finite losses at step 6 -> 'diverged', the curve kept.
- ``raise_at``: the rule's exception is retried inside the task (max_failures: 1), then the trial is
  recorded failed with the rule's own one-line cause (not Ray's wrapper) and its traceback in error.log.
- ``die_once``: the task's worker process dies at step 15; the task is started again and resumes from
  the step-10 checkpoint in storage: 'ok', every step exactly once.

The report lists the failed and the diverged trial. The same failures under Ray Train jobs:
tests/test_fault_tolerance.py. Slow (~40 s on 2 CPUs).
"""
import sys

import pyarrow.parquet as pq
import pytest

from test_fault_tolerance import (MARKER_ENV, RAISE_MESSAGE, STEPS, assert_failed_and_restarted, grid_file, launch,
                                  launcher_env, step_numbers, summaries)

pytestmark = pytest.mark.slow


def test_inline_tasks_diverge_fail_and_restart(demo_storage, tmp_path, ray_address):
    grid = grid_file(tmp_path, "inline_faults", [{"method": m} for m in ("ngdiff", "nan_weights", "raise_at", "die_once")],
                     ["static"])
    marker = tmp_path / "die_once.marker"
    log = tmp_path / "launch.log"
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(grid), "--storage", str(demo_storage),
           "--address", ray_address, "--env", f"{MARKER_ENV}={marker}"]  # the session's Ray (tests/conftest.py)
    rc = launch(cmd, launcher_env(), log)
    out = log.read_text()
    assert rc == 1, f"a failed trial must make the launcher exit 1, got {rc}:\n{out[-4000:]}"
    assert out.count(", inline") == 4 and "2 ok, 1 failed, 1 diverged, 0 skipped trial(s), 1 No-unlearn row(s)" in out

    run = demo_storage / "inline_faults"
    by_method = {r["method"]: r for r in summaries(run).values()}
    assert sorted(by_method) == ["die_once", "nan_weights", "ngdiff", "no_unlearn", "raise_at"], out[-4000:]
    ok = by_method["ngdiff"]
    assert ok["status"] == "ok" and ok["steps"] == STEPS and ok["error"] is None
    assert step_numbers(run, ok["trial_id"]) == list(range(1, STEPS + 1))

    # NaN weights at step 5 make the parameters NaN; step 6's losses are not finite: diverged, not failed.
    nan = by_method["nan_weights"]
    assert nan["status"] == "diverged" and nan["diverged_step"] == 6 and nan["error"] is None, nan
    assert nan["steps"] == 5
    curve = pq.read_table(run / "trials" / nan["trial_id"] / "steps.parquet").to_pandas()
    assert curve["step"].tolist() == [1, 2, 3, 4, 5]
    assert curve["w_retain"].isna().tolist() == [False] * 4 + [True]

    assert_failed_and_restarted(run, by_method, marker, out)
    for trial in (by_method["ngdiff"], by_method["die_once"]):  # a finished trial leaves no checkpoint behind
        assert not (run / "train" / trial["trial_id"] / "inline_state.pt").exists()

    failed = by_method["raise_at"]
    index = (run / "report" / "index.html").read_text()
    assert "Failed, diverged and unfinished trials" in index
    for r in (failed, nan):
        assert r["trial_id"] in index
    assert "diverged at step 6" in index and RAISE_MESSAGE in index
