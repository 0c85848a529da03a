"""The smoke grid through the launcher with its storage on a real S3-compatible server (moto, started
here, on 127.0.0.1; no network) named by a query-parameter URI
(``s3://bucket/runs?endpoint_override=127.0.0.1:PORT&scheme=http``).

One sweep, three launches, each trial a Ray Train job (``--runner train``: Ray Train's checkpoints and
its resume go through the store; the inline runner's checkpoints do in tests/test_multinode.py). The
first launch is SIGKILLed, with every process of its session, once a trial has finished and another is
held half-way (the smoke grid's GDiff trials are the test plugin's ``gdiff_hold``: GDiff that can be
held at step 15, after its step-10 checkpoint is registered); the same command then completes the run
with nothing lost (no finished trial re-run, the held one continued from its checkpoint in the store,
the target downloaded once into the node's cache) and writes the report into the store and into the
local folder it was given (TensorBoard's event files are in the store too); a third launch re-runs
nothing.

Slow (about 3 minutes on 2 CPUs): ``pytest -m slow``.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from object_store_server import s3_server
from sweeper.store.storage import Storage
from test_fault_tolerance import HOLD_ENV, ROOT, kill_session, launch, launcher_env

pytestmark = pytest.mark.slow
BUCKET, RUN, STEPS = "sweeper-sweeps", "smoke_s3", 30


def smoke_grid(tmp_path: Path) -> Path:
    """search_spaces/smoke.yaml with its GDiff trials as ``gdiff_hold`` (the same rule, held on request)."""
    grid = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    grid.update(name=RUN, plugins=["faulty_methods"])
    grid["methods"] = [{**m, "method": "gdiff_hold"} if m["method"] == "gdiff" else m for m in grid["methods"]]
    path = tmp_path / f"{RUN}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def seed_target(demo_storage: Path, store: Storage) -> None:
    """Copy the smoke target from the session's demo storage when another slow test built it already (the
    same recipe, the same hash): a second sweep finds it cached, as on a real store. Run alone, this test
    fine-tunes it in stage 1 and uploads it."""
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


def test_smoke_grid_on_object_storage_killed_resumed_and_relaunched(demo_storage, tmp_path):
    with s3_server() as s3:
        s3.bucket(BUCKET)
        uri = s3.uri(f"{BUCKET}/runs")
        store = Storage(uri)
        seed_target(demo_storage, store)
        hold, cache = tmp_path / "hold", tmp_path / "node-cache"
        env = launcher_env(**{HOLD_ENV: str(hold), "SWEEPER_CACHE": str(cache)})
        cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(smoke_grid(tmp_path)), "--storage", uri,
               "--runner", "train", "--track", "tensorboard", "--report-dir", str(tmp_path / "report")]

        def finished() -> set:
            return {p.split("/")[0] for p in store.list_files(f"{RUN}/trials") if p.endswith("/_SUCCESS")} \
                if store.exists(f"{RUN}/trials") else set()

        def wait_for(what: str, condition) -> None:
            deadline = time.time() + 400
            while not condition():
                assert proc.poll() is None, f"the launcher ended before {what}:\n" + \
                    (tmp_path / "first.log").read_text()[-4000:]
                assert time.time() < deadline, f"timed out waiting until {what}"
                time.sleep(0.2)

        with open(tmp_path / "first.log", "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                wait_for("a trial finished", lambda: any("_no_unlearn_" not in t for t in finished()))
                hold.touch()
                wait_for("a trial was held half-way", lambda: list(tmp_path.glob("hold.held.*")))
            finally:
                kill_session(proc.pid)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        hold.unlink()

        done_before = finished()
        # Read now: Ray Train keeps only the latest checkpoint, so the resumed run replaces it.
        held = {t: state for t in {p.split("/")[0] for p in store.list_files(f"{RUN}/train")} - done_before
                if (state := checkpoint(store, t))}
        assert len(done_before) >= 2 and held, (done_before, held)  # No-unlearn row + >= 1 trial; >= 1 half-way
        before = {t: snapshot(store, t) for t in done_before}

        assert launch(cmd, env, tmp_path / "second.log") == 0, (tmp_path / "second.log").read_text()[-4000:]
        out = (tmp_path / "second.log").read_text()
        assert "cached, reused" in out and "8 ok, 0 failed, 0 diverged, 0 skipped trial(s)" in out, out[-3000:]
        trials = {t: store.read_table(f"{RUN}/trials/{t}/summary.parquet").to_pylist()[0] for t in finished()}
        assert len(trials) == 9 and sorted(r["method"] for r in trials.values()).count("gdiff_hold") == 6
        for t, r in trials.items():
            if r["method"] != "no_unlearn":
                assert r["status"] == "ok" and r["steps"] == STEPS, r
                steps = store.read_table(f"{RUN}/trials/{t}/steps.parquet").column("step").to_pylist()
                assert steps == list(range(1, STEPS + 1)), t
        assert [t for t in done_before if snapshot(store, t) != before[t]] == []  # nothing finished ran again
        for t, state in held.items():  # the held trial went on from its step-10 checkpoint in the store
            curve = store.read_table(f"{RUN}/trials/{t}/steps.parquet").to_pylist()
            assert [r["step"] for r in state["rows"]] == list(range(1, 11)), t
            assert [(r["wall_s"], r["loss_retain"]) for r in state["rows"]] == \
                [(r["wall_s"], r["loss_retain"]) for r in curve[:10]], t
        # The node cache holds the one target, downloaded once; the report is in the store and here.
        assert [n for n in os.listdir(cache) if not n.startswith(".")] == [next(iter(trials.values()))["target_hash"]]
        assert "index.html" in store.list_files(f"{RUN}/report") and (tmp_path / "report" / "index.html").exists()
        assert f"s3://{BUCKET}/runs/{RUN}/report" in out
        events = [f for f in store.list_files(f"{RUN}/tune") if "events.out.tfevents" in f]
        assert len({f.split("/")[0] for f in events}) >= 8, events  # TensorBoard's files, with Tune's, in the store

        everything = {t: snapshot(store, t) for t in trials}
        assert launch(cmd + ["--no-report"], env, tmp_path / "third.log") == 0
        third = (tmp_path / "third.log").read_text()
        assert "8 ok, 0 failed" in third, third[-3000:]
        assert [t for t in trials if snapshot(store, t) != everything[t]] == []  # a relaunch re-runs nothing
