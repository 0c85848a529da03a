"""The inline runner's Ray task (``sweeper.cluster.trial.run_inline_task``) under a real launch on a local Ray:
a one-worker trial runs in a reused Ray worker, and its Tune trial process only relays its reports.

- ``raise_at``: the rule's exception is retried inside the task (max_failures: 1), then the trial is
  recorded failed with the rule's own one-line cause (not Ray's wrapper) and its traceback in error.log.
- ``die_once``: the task's worker process dies at step 15; the task is started again and resumes from the
  step-10 checkpoint in storage: 'ok', every step exactly once.

The same rules under Ray Train jobs: tests/test_fault_tolerance.py. Slow (~30 s on 2 CPUs).
"""
import sys
from pathlib import Path

import pytest

from test_fault_tolerance import (MARKER_ENV, RAISE_MESSAGE, STEPS, grid_file, launch, launcher_env, step_numbers,
                                  summaries)

pytestmark = pytest.mark.slow


def test_inline_task_failures_are_retried_and_recorded(demo_storage, tmp_path):
    grid = grid_file(tmp_path, "inline_faults", [{"method": m} for m in ("raise_at", "die_once")], ["static"])
    marker = tmp_path / "die_once.marker"
    log = tmp_path / "launch.log"
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(grid), "--storage", str(demo_storage), "--no-report"]
    rc = launch(cmd, launcher_env(**{MARKER_ENV: str(marker)}), log)
    out = log.read_text()
    assert rc == 1, f"a failed trial must make the launcher exit 1, got {rc}:\n{out[-4000:]}"
    assert "inline" in out and "1 ok, 1 failed, 0 diverged" in out, out[-4000:]

    run = demo_storage / "inline_faults"
    by_method = {r["method"]: r for r in summaries(run).values()}
    failed = by_method["raise_at"]
    assert failed["status"] == "failed" and failed["error"].startswith(f"RuntimeError: {RAISE_MESSAGE}"), failed
    assert "\n" not in failed["error"] and "Traceback" not in out
    assert "Traceback" in (run / "trials" / failed["trial_id"] / "error.log").read_text()

    died = by_method["die_once"]
    assert died["status"] == "ok" and died["steps"] == STEPS and died["error"] is None, died
    assert step_numbers(run, died["trial_id"]) == list(range(1, STEPS + 1))
    calls: dict[str, list[int]] = {}
    for line in Path(f"{marker}.log").read_text().split("\n"):
        if line:
            pid, step = line.split()
            calls.setdefault(pid, []).append(int(step))
    assert list(calls.values()) == [list(range(1, 16)), list(range(11, STEPS + 1))], calls
    # Nothing of the trial's checkpoint is left behind once it finished.
    assert not (run / "train" / died["trial_id"] / "inline_state.pt").exists()
