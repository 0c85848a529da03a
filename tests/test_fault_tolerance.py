"""Fault tolerance on a real Ray (the session's, tests/conftest.py): trials that diverge, raise or lose their worker. (A launcher killed
mid-sweep and started again, with nothing lost and nothing re-run: tests/test_object_storage_sweep.py,
with the run's storage on an S3 server; the helpers below serve it too.)

One launch runs two trials as Ray Train jobs whose rules come from the test plugin ``faulty_methods``
(tests/): ``raise_at`` (an exception -> Ray Train retries once -> 'failed', the sweep goes on) and
``die_once`` (the worker process dies once at step 15 -> Ray Train restarts the worker group from the
step-10 checkpoint -> 'ok' with every step exactly once). The same two rules with the inline runner, and
a diverging trial and the report's failure section: tests/test_inline_task.py.

Slow (about 45 s on 2 CPUs): ``pytest -m slow``; skipped by ``-m "not slow"``.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
STEPS = 20
# As in tests/faulty_methods.py, which only the launcher and its Ray workers import: importing it here
# would register its rules in this process, beside the built-in ones other tests enumerate.
MARKER_ENV, HOLD_ENV = "FAULTY_DIE_ONCE_MARKER", "FAULTY_HOLD_FILE"
RAISE_MESSAGE = "faulty rule raise_at raised on purpose"


def grid_file(tmp_path: Path, name: str, methods: list, lr_modes: list) -> Path:
    """The smoke grid, shortened: 20 steps, evaluation (and checkpoints) every 10 on 8 questions."""
    grid = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    grid.update(name=name, methods=methods, lr_modes=lr_modes, plugins=["faulty_methods"], max_failures=1)
    grid["unlearn"]["steps"] = STEPS
    grid["eval"].update(max_questions=8, every=10)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def launcher_env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    # Local Ray workers inherit the launcher's environment, so the plugin imports in every worker.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray unless the command names the session's (--address)
    return env


def command(grid: Path, storage: Path) -> list:
    # Ray Train jobs: their own worker restarts are what these tests check (the inline runner's retries
    # are in tests/test_trial.py, a lost trial process in tests/test_multinode.py).
    # No report: the failure section's rows are checked in tests/test_inline_task.py.
    return [sys.executable, "-m", "sweeper.launch", "--grid", str(grid), "--storage", str(storage), "--runner", "train",
            "--no-report"]


def session_pids(sid: int) -> list[int]:
    """Live processes (zombies aside: they hold nothing) of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
            if int(session) == sid and state != "Z":
                pids.append(int(entry))
    return pids


def kill_session(sid: int, timeout: float = 15.0) -> None:
    """SIGKILL everything a launcher started with ``start_new_session=True`` left running.

    A process group is not enough: Ray's agents outlive a killed driver, and Ray puts each worker in a
    process group of its own (same session), where it goes on for a moment after its raylet died, long
    enough to finish a trial."""
    deadline = time.time() + timeout
    while (pids := session_pids(sid)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    assert not session_pids(sid), f"processes of session {sid} survived SIGKILL: {session_pids(sid)}"


def launch(cmd: list, env: dict, log: Path, timeout: float = 420) -> int:
    """Run the launcher in its own process group to the end; whatever it leaves behind is killed."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        finally:
            kill_session(proc.pid)
            proc.wait()


def summaries(run_dir: Path) -> dict:
    out = {}
    for d in sorted((run_dir / "trials").iterdir()):
        table = pq.read_table(d / "summary.parquet")
        assert table.num_rows == 1, d
        out[d.name] = table.to_pylist()[0]
    return out


def step_numbers(run_dir: Path, trial_id: str) -> list[int]:
    return pq.read_table(run_dir / "trials" / trial_id / "steps.parquet").column("step").to_pylist()


@pytest.fixture(scope="module")
def storage(demo_storage):
    """The session's demo storage (tests/conftest.py): the smoke target is built once for the slow tests."""
    return demo_storage


def test_failed_and_restarted_train_jobs(storage, tmp_path, ray_address):
    """On the session's Ray (tests/conftest.py): its workers get the marker's variable from ``--env`` alone."""
    grid = grid_file(tmp_path, "faults", [{"method": m} for m in ("raise_at", "die_once")], ["static"])
    marker = tmp_path / "die_once.marker"
    log = tmp_path / "launch.log"
    cmd = command(grid, storage) + ["--address", ray_address, "--env", f"{MARKER_ENV}={marker}"]
    rc = launch(cmd, launcher_env(), log)
    out = log.read_text()
    assert rc == 1, f"a failed trial must make the launcher exit 1, got {rc}:\n{out[-4000:]}"

    run = storage / "faults"
    rows = summaries(run)
    by_method = {r["method"]: r for r in rows.values()}
    assert sorted(by_method) == ["die_once", "no_unlearn", "raise_at"], out[-4000:]
    for r in rows.values():
        assert (run / "trials" / r["trial_id"] / "_SUCCESS").exists(), r["trial_id"]
    assert "1 ok, 1 failed, 0 diverged, 0 skipped trial(s), 1 No-unlearn row(s)" in out
    assert_failed_and_restarted(run, by_method, marker, out)


def assert_failed_and_restarted(run: Path, by_method: dict, marker: Path, out: str) -> None:
    """``raise_at`` retried once (max_failures: 1), then recorded failed with the rule's own one-line cause;
    ``die_once`` resumed from its step-10 checkpoint after its process died at step 15."""
    failed = by_method["raise_at"]
    assert failed["status"] == "failed" and failed["steps"] == 0, failed
    assert RAISE_MESSAGE in failed["error"], failed["error"]
    # The cause is the worker's own, in one line (not Ray's wrapper); the traceback is in error.log;
    # the terminal shows one line per failed trial and no traceback.
    assert failed["error"].startswith("RuntimeError: ") and "\n" not in failed["error"], failed["error"]
    assert "Traceback" in (run / "trials" / failed["trial_id"] / "error.log").read_text()
    assert f"failed: {failed['trial_id']}: RuntimeError: {RAISE_MESSAGE}" in out
    assert "Traceback" not in out, out[-4000:]

    died = by_method["die_once"]
    assert died["status"] == "ok" and died["steps"] == STEPS and died["error"] is None, died
    assert step_numbers(run, died["trial_id"]) == list(range(1, STEPS + 1))
    assert marker.exists(), "die_once never ran with the marker variable: the worker did not inherit the env"
    calls: dict[str, list[int]] = {}
    for line in Path(f"{marker}.log").read_text().split("\n"):
        if line:
            pid, step = line.split()
            calls.setdefault(pid, []).append(int(step))
    assert list(calls.values()) == [list(range(1, 16)), list(range(11, STEPS + 1))], calls
