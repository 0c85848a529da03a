"""A trial whose Tune trial process dies for good (its node lost, the process killed) is named on the
terminal and makes the launcher exit 1: a run never reads as complete without it.

One launch on the session's Ray (tests/conftest.py) runs one GDiff trial whose rule (``gdiff_hold``,
tests/faulty_methods.py) holds at step 15; with ``max_failures: 0`` Tune does not restart the trial's process,
so the test kills that process (``ray::ImplicitFunc``, the only one: one trial, and no other launch runs)
while the trial holds. (A node lost for real, with
a retry that succeeds: tests/test_multinode.py.) Slow (~30 s on 2 CPUs).
"""
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ray_cluster import cmdline
from test_fault_tolerance import HOLD_ENV, ROOT, grid_file, kill_session, launcher_env, summaries

pytestmark = pytest.mark.slow


def test_a_trial_whose_process_is_lost_is_reported_and_fails_the_launch(demo_storage, tmp_path, ray_address):
    grid = grid_file(tmp_path, "lost", [{"method": "gdiff_hold", "c": 0.5}], ["static"])
    grid.write_text(grid.read_text().replace("max_failures: 1", "max_failures: 0"))
    hold = tmp_path / "hold"
    hold.touch()
    log = tmp_path / "launch.log"
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(grid), "--storage", str(demo_storage), "--no-report",
           "--address", ray_address, "--env", f"{HOLD_ENV}={hold}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=launcher_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + 240
            while not list(tmp_path.glob("hold.held.*")):  # the held trial has a checkpoint and waits
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            # Tune trial processes of the session's Ray only (their raylet names its GCS port), never a sweep
            # this machine runs beside the tests
            gcs_port = ray_address.rsplit(":", 1)[1]
            relays = [p.pid for p in psutil.process_iter() if "ImplicitFunc" in cmdline(p)
                      and p.parent() and f":{gcs_port}" in cmdline(p.parent())]
            assert relays, "no Tune trial process found"
            for pid in relays:
                psutil.Process(pid).send_signal(signal.SIGKILL)
            rc = proc.wait(timeout=240)
        finally:
            kill_session(proc.pid)
            proc.wait()
            hold.unlink(missing_ok=True)   # nothing of this launch may hold on in the session's Ray
    out = log.read_text()
    assert rc == 1, f"a lost trial must make the launcher exit 1, got {rc}:\n{out[-4000:]}"
    rows = {r["method"]: r for r in summaries(demo_storage / "lost").values()}
    assert sorted(rows) == ["no_unlearn"], out[-4000:]  # nothing recorded for the lost trial
    lost_id = next(line for line in out.splitlines() if line.startswith("  ") and "gdiff_hold" in line).split()[0]
    assert f"lost: {lost_id}: no result recorded" in out, out[-4000:]
    assert "0 ok, 0 failed, 0 diverged, 0 skipped, 1 lost trial(s)" in out, out[-4000:]

