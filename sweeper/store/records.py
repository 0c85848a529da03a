"""What a trial leaves in storage, and the names both sides agree on: its folder, its summary row, the
atomic writer, the No-unlearn row's id, the stop marker a front search's scheduler writes.

Plain code (no Ray, no torch), imported by the launcher side, the worker side and the front search::

    write_trial(storage, spec.run, spec.trial_id, steps, summary_row(spec, status="ok"), finished=True)
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import traceback

from sweeper import __version__
from sweeper.store.results import SAMPLE_SCHEMA, STEP_SCHEMA, SUMMARY_SCHEMA, to_table
from sweeper.store.storage import Storage
from sweeper.grid.spec import TrialSpec, target_hash

#: Written by a front search's scheduler into a trial's folder: the trial ends itself at its next step.
STOP_MARKER = "_STOP"


def baseline_id(spec: TrialSpec, variant: str = "full") -> str:
    """The trial id of the No-unlearn row (``full``) or the retrained reference's row (``retain_only``)."""
    name = "no_unlearn" if variant == "full" else "retrained_reference"
    key = target_hash(spec.model, spec.data, spec.target, variant)
    return f"{spec.model['name'].replace('/', '_')}_{name}_{spec.data['name']}_{key[:8]}"


def code_version() -> str:
    """Package version plus the git commit when the code runs from a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def trial_dir(spec: TrialSpec) -> str:
    return f"{spec.run}/trials/{spec.trial_id}"


def summary_row(spec: TrialSpec, **results) -> dict:
    """The summary row of a trial: its config columns plus ``results``."""
    return dict(run=spec.run, trial_id=spec.trial_id, config_hash=spec.config_hash, code_version=code_version(),
                seed=spec.seed, model=spec.model["name"], dataset=spec.data["name"], method=spec.label,
                c=spec.c, forget_loss=spec.forget_loss, lr_mode=spec.lr_mode, lr=spec.lr,
                optimizer=spec.optimizer, workers=spec.model["workers"], target_hash=spec.target_hash,
                params_json=json.dumps(spec.to_dict(), sort_keys=True), finished_at=time.time(),
                search=f"front:{spec.search['sampler']}" if spec.search.get("kind") == "front" else "grid",
                study=spec.search.get("study"),
                **results)


def write_trial(storage: Storage, run: str, trial_id: str, steps: list[dict], summary: dict, finished: bool,
                samples: list[dict] | None = None) -> None:
    """Parquet files first, each atomically, then the _SUCCESS marker (only for a finished trial)."""
    base = f"{run}/trials/{trial_id}"
    if samples:
        storage.write_table(f"{base}/samples.parquet",
                            to_table([{"run": run, "trial_id": trial_id, **r} for r in samples], SAMPLE_SCHEMA))
    storage.write_table(f"{base}/steps.parquet",
                        to_table([{"run": run, "trial_id": trial_id, **r} for r in steps], STEP_SCHEMA))
    storage.write_table(f"{base}/summary.parquet", to_table([summary], SUMMARY_SCHEMA))
    if finished:
        storage.write_bytes(f"{base}/_SUCCESS", b"")


def finished_trials(storage: Storage, run: str) -> set[str]:
    """Ids of the run's trials that have their ``_SUCCESS`` marker: one listing of ``<run>/trials``, not a
    request per trial (a relaunch of a large sweep on object storage)."""
    if not storage.exists(f"{run}/trials"):
        return set()
    return {p.split("/")[0] for p in storage.list_files(f"{run}/trials") if p.endswith("/_SUCCESS")}


def one_line(e: BaseException) -> str:
    """An exception as one line: its message's first line (the project's errors are sentences), with the
    exception's type for anything else."""
    lines = str(e).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if isinstance(e, ValueError) and first:  # GridError, RowTooLong and the tasks' data errors
        return first[:1000]
    return f"{type(e).__name__}: {first}"[:1000] if first else type(e).__name__


def capture_failure(e: BaseException, storage: Storage, log_rel: str) -> str:
    """Write the full traceback of ``e`` to ``log_rel`` in storage and return its one-line cause."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        storage.write_bytes(log_rel, text.encode())
    except Exception:  # noqa: BLE001 -- the cause still reaches the user without its log
        pass
    return one_line(e)


#: Written by a Ray Train worker that fails, so the trial's summary carries the worker's own cause
#: instead of Ray's wrapper around it.
WORKER_CAUSE = "worker_cause.txt"


def adopt_legacy_ids(specs: list[TrialSpec], storage: Storage) -> list[TrialSpec]:
    """Each spec, under its older id (no dataset in it) when the run already holds that trial's folder or
    checkpoint and not the new one's: a run made before ids named the dataset resumes without re-running."""
    out = []
    for spec in specs:
        if spec.id_dataset and spec.legacy_id != spec.trial_id:
            new, old = spec.trial_id, spec.legacy_id
            has = lambda tid: storage.exists(f"{spec.run}/trials/{tid}") or storage.exists(f"{spec.run}/train/{tid}")  # noqa: E731
            if not has(new) and has(old):
                spec = dataclasses.replace(spec, id_dataset=False)
        out.append(spec)
    return out
