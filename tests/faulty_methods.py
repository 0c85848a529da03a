"""Combination rules that misbehave on purpose, for tests/test_fault_tolerance.py.

A grid loads them with ``plugins: [faulty_methods]`` (``tests/`` must be on PYTHONPATH of the launcher;
local Ray workers inherit its environment). Until they misbehave they weight like NGDiff.

- ``nan_weights``: NaN weights from step ``start`` on, so the parameters turn NaN and the loop stops
  with ``Diverged`` one step later.
- ``raise_at``: raises RuntimeError at step ``step``.
- ``die_once``: at step ``step`` kills its own process (``os._exit(1)``, no cleanup, like an OOM kill)
  unless the marker file named by ``$FAULTY_DIE_ONCE_MARKER`` exists; it creates the marker first, so
  the restarted worker goes on. Every call appends ``<pid> <step>`` to ``<marker>.log``.
- ``gdiff_hold``: GDiff; at step ``step`` it holds while the file named by ``$FAULTY_HOLD_FILE`` exists
  (once its last checkpoint is registered, it says so in ``<hold file>.held.<pid>``), so a test can kill
  a launcher while a trial is certainly half-way.
"""
from __future__ import annotations

import json
import math
import os
import time

from sweeper.methods import combination_rule

MARKER_ENV = "FAULTY_DIE_ONCE_MARKER"
HOLD_ENV = "FAULTY_HOLD_FILE"
RAISE_MESSAGE = "faulty rule raise_at raised on purpose"


def _ngdiff(s) -> tuple[float, float]:
    return 1.0 / (s.norm_retain + 1e-12), 1.0 / (s.norm_forget + 1e-12)


@combination_rule("nan_weights", summary="NGDiff, then NaN weights from step `start` on (test only)")
def nan_weights(s, state, *, start: int = 5):
    return (math.nan, math.nan) if s.step >= start else _ngdiff(s)


@combination_rule("raise_at", summary="NGDiff, then RuntimeError at step `step` (test only)")
def raise_at(s, state, *, step: int = 3):
    if s.step == step:
        raise RuntimeError(f"{RAISE_MESSAGE} at step {s.step}")
    return _ngdiff(s)


@combination_rule("die_once", summary="NGDiff; the worker process dies once at step `step` (test only)")
def die_once(s, state, *, step: int = 15):
    marker = os.environ.get(MARKER_ENV)
    if marker:
        with open(marker + ".log", "a") as f:
            f.write(f"{os.getpid()} {s.step}\n")
        if s.step == step and not os.path.exists(marker):
            open(marker, "w").close()
            _wait_for_registered_checkpoint()
            os._exit(1)
    return _ngdiff(s)


@combination_rule("gdiff_hold", summary="GDiff; holds at step `step` while $FAULTY_HOLD_FILE exists (test only)",
                  bounds={"c": (0.0, 1.0)})
def gdiff_hold(s, state, *, c: float = 0.5, step: int = 15):
    hold = os.environ.get(HOLD_ENV)
    if hold and s.step == step and os.path.exists(hold):
        _wait_for_registered_checkpoint()
        open(f"{hold}.held.{os.getpid()}", "w").close()
        while os.path.exists(hold):
            time.sleep(0.1)
    return c, 1.0 - c


def _wait_for_registered_checkpoint(timeout: float = 60.0) -> None:
    """Wait until Ray Train's controller has registered a checkpoint of this run.

    ``ray.train.report`` returns once the checkpoint is uploaded and queued in this worker; the controller
    collects it on its next poll. A report still queued when the process dies is lost with it, and the
    restart would begin at step 1, which is Ray's semantics, not what this rule means to test.
    """
    try:
        import ray.train
        storage = ray.train.get_context().get_storage()
        fs, path = storage.storage_filesystem, storage.checkpoint_manager_snapshot_path
    except Exception:  # noqa: BLE001 -- not inside Ray Train: nothing to wait for
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with fs.open_input_stream(path) as f:
                if json.loads(f.read().decode()).get("latest_checkpoint_result"):
                    return
        except Exception:  # noqa: BLE001 -- not written yet, or being written
            pass
        time.sleep(0.2)


@combination_rule("retain_ascent", summary="ascends the retain loss, leaves the forget set alone (test only)")
def retain_ascent(s, state):
    # g = w_R g_R - w_F g_F with w_R = -1: every step makes the retained answers worse, never the forgotten
    # ones better; a clearly dominated configuration for the early-stop test.
    return -1.0, 0.0
