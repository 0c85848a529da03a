"""The smoke grid swept on a real S3-compatible server, once per test session (``s3_smoke_sweep``, a
fixture in tests/conftest.py): three launches of one run, each trial a Ray Train job, with its storage on
moto's server named by a query-parameter URI (``s3://bucket/runs?endpoint_override=127.0.0.1:PORT&scheme=http``).

1. The first launch is SIGKILLed, with every process of its session, once one trial has finished and
   the other is held half-way (the smoke grid's GDiff trial is the test plugin's ``gdiff_hold``: GDiff
   that can be held at step 15, after its step-10 checkpoint is registered).
2. The same command completes the run (it should lose nothing and re-run nothing).
3. A third launch (it should re-run nothing).

What the tests check is recorded on the way (``S3SmokeSweep``); the server stays up for the session, so
they read the store itself. Two files use it: tests/test_object_storage_sweep.py (kill, resume, relaunch,
report and cache on S3) and tests/test_integration.py (its NGDiff trial, a Ray Train job, against the
inline runner's): the Ray Train jobs run once, not twice.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sweeper.store.storage import Storage
from test_fault_tolerance import HOLD_ENV, ROOT, kill_session, launch, launcher_env

BUCKET, RUN, STEPS = "sweeper-sweeps", "smoke_s3", 30


@dataclass
class S3SmokeSweep:
    store: Storage                 # the S3 storage the run lives in (the server is up for the session)
    tmp: Path                      # logs (first/second/third.log), the local report, the node cache
    cache: Path
    first_rc: int                  # the killed launcher's return code
    done_before: set               # trials finished when it was killed
    held: dict                     # trial -> its registered checkpoint's state, read before the resume
    before: dict                   # trial -> snapshot() of the trials finished before the kill
    second_rc: int
    everything: dict = field(default_factory=dict)   # trial -> snapshot() after the second launch
    third_rc: int | None = None

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def finished(self) -> set:
        store = self.store
        return {p.split("/")[0] for p in store.list_files(f"{RUN}/trials") if p.endswith("/_SUCCESS")} \
            if store.exists(f"{RUN}/trials") else set()


def smoke_grid(tmp_path: Path) -> Path:
    """search_spaces/smoke.yaml's settings with AutoLR only, and two methods: NGDiff, and GDiff c = 0.5 as
    ``gdiff_hold`` (the same rule, held at step 15 on request). The two run side by side (2 trials at a
    time on 2 CPUs) with the hold set from the start: NGDiff finishes while GDiff waits half-way, after its
    step-10 checkpoint (AutoLR's state in it too). Two Ray Train jobs check a finished, a held and a resumed
    trial, and the NGDiff one is the Ray Train side of the runner-equivalence test (the normalised rule and
    AutoLR's learning-rate search)."""
    grid = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    grid.update(name=RUN, plugins=["faulty_methods"], lr_modes=["autolr"])
    assert {"method": "ngdiff"} in grid["methods"] and any(m["method"] == "gdiff" for m in grid["methods"])
    grid["methods"] = [{"method": "ngdiff"}, {"method": "gdiff_hold", "c": 0.5}]
    path = tmp_path / f"{RUN}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def seed_target(demo_storage: Path, store: Storage) -> None:
    """Copy the smoke target from the session's demo storage (built by the session's warm-up,
    tests/conftest.py; the same recipe, the same hash): the sweep finds it cached, as a researcher's second
    sweep on a real store would."""
    for done in demo_storage.glob("targets/*/_SUCCESS"):
        store.upload_dir(str(done.parent), f"targets/{done.parent.name}")


def checkpoint(store: Storage, trial: str) -> dict | None:
    """The state of the checkpoint Ray Train's controller registered last for this trial, if any."""
    snap = f"{RUN}/train/{trial}/checkpoint_manager_snapshot.json"
    latest = json.loads(store.read_bytes(snap)).get("latest_checkpoint_result") if store.exists(snap) else None
    if not latest:
        return None
    import torch
    data = store.read_bytes(f"{RUN}/train/{trial}/{latest['checkpoint_dir_name']}/state.pt")
    return torch.load(io.BytesIO(data), weights_only=False)


def snapshot(store: Storage, trial: str) -> dict:
    """The bytes and modification times of a trial's files in the store, and its checkpoint folder."""
    base = f"{RUN}/trials/{trial}"
    files = {name: (store.read_bytes(f"{base}/{name}"), store.fs.get_file_info(store.path(f"{base}/{name}")).mtime)
             for name in ("steps.parquet", "summary.parquet", "_SUCCESS") if store.exists(f"{base}/{name}")}
    files["train"] = store.list_files(f"{RUN}/train/{trial}") if store.exists(f"{RUN}/train/{trial}") else []
    return files


def sweep(s3, demo_storage: Path, tmp_path: Path, ray_address: str) -> S3SmokeSweep:
    """Run the three launches against the server ``s3`` (tests/object_store_server.py) and record them: the
    first on a local Ray of its own (the kill takes it down), the others on the session's (``ray_address``),
    whose workers get the node cache's variable from ``--env``."""
    s3.bucket(BUCKET)
    store = Storage(s3.uri(f"{BUCKET}/runs"))
    seed_target(demo_storage, store)
    hold, cache = tmp_path / "hold", tmp_path / "node-cache"
    env = launcher_env(**{HOLD_ENV: str(hold), "SWEEPER_CACHE": str(cache)})
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(smoke_grid(tmp_path)), "--storage", store.uri,
           "--runner", "train", "--track", "tensorboard", "--report-dir", str(tmp_path / "report")]
    result = S3SmokeSweep(store, tmp_path, cache, 0, set(), {}, {}, 0)
    hold.touch()  # from the start: GDiff waits at step 15 while NGDiff, beside it, finishes

    def wait_for(what: str, condition) -> None:
        deadline = time.time() + 400
        while not condition():
            assert proc.poll() is None, f"the launcher ended before {what}:\n" + result.log("first")[-4000:]
            assert time.time() < deadline, f"timed out waiting until {what}"
            time.sleep(0.2)

    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for("a trial finished", lambda: any("_no_unlearn_" not in t for t in result.finished()))
            wait_for("a trial was held half-way", lambda: list(tmp_path.glob("hold.held.*")))
        finally:
            kill_session(proc.pid)
            proc.wait()
    result.first_rc = proc.returncode
    hold.unlink()

    result.done_before = result.finished()
    # Read now: Ray Train keeps only the latest checkpoint, so the resumed run replaces it.
    result.held = {t: state for t in {p.split("/")[0] for p in store.list_files(f"{RUN}/train")} - result.done_before
                   if (state := checkpoint(store, t))}
    result.before = {t: snapshot(store, t) for t in result.done_before}

    cmd += ["--address", ray_address, "--env", f"SWEEPER_CACHE={cache}"]
    result.second_rc = launch(cmd, env, tmp_path / "second.log")
    if result.second_rc == 0:
        result.everything = {t: snapshot(store, t) for t in result.finished()}
        result.third_rc = launch(cmd + ["--no-report"], env, tmp_path / "third.log")
    return result
