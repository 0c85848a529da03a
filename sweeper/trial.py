"""Ray glue for one trial: a Tune function trainable that runs the unlearning loop as a Ray Train job.

``run_trial(config)`` (the Tune trainable) builds a ``TorchTrainer`` with ``spec.model['workers']``
workers; each worker runs ``train_worker``, which runs ``unlearn_trial``: it loads the cached No-unlearn
target, runs ``sweeper.loop.Unlearner`` step by step (collectives over torch.distributed, gloo on CPU and
nccl on GPU), reports progress and checkpoints through a session, and rank 0 writes the trial's Parquet.
With the ``inline`` runner (``auto``'s choice for one worker) a trial runs ``unlearn_trial`` in the Tune
trial process itself (``run_inline``). ``unlearn_trial`` knows no Ray: the sessions (``TrainSession``, ``InlineSession``) do.
A trial whose ``_SUCCESS`` marker exists is not run again: its summary is reported as is.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tempfile
import time
import traceback

import torch

from sweeper import __version__
from sweeper.distributed import current_comm
from sweeper.grid import TrialSpec
from sweeper.plan import runner_for
from sweeper.storage import Storage

#: Metrics forwarded to Tune's progress table.
PROGRESS_KEYS = ("step", "loss_retain", "loss_forget", "lr")
#: Evaluation metrics reported with the evaluation steps (a front search's scheduler reads them).
CURVE_KEYS = ("rouge_forget", "rouge_retain")


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
    from sweeper.results import SAMPLE_SCHEMA, STEP_SCHEMA, SUMMARY_SCHEMA, to_table
    base = f"{run}/trials/{trial_id}"
    if samples:
        storage.write_table(f"{base}/samples.parquet",
                            to_table([{"run": run, "trial_id": trial_id, **r} for r in samples], SAMPLE_SCHEMA))
    storage.write_table(f"{base}/steps.parquet",
                        to_table([{"run": run, "trial_id": trial_id, **r} for r in steps], STEP_SCHEMA))
    storage.write_table(f"{base}/summary.parquet", to_table([summary], SUMMARY_SCHEMA))
    if finished:
        storage.write_bytes(f"{base}/_SUCCESS", b"")


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


def train_worker(config: dict) -> None:
    """The Ray Train worker: set up the device, then run the trial with Ray Train's report and checkpoints."""
    import ray.train

    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    spec, storage = TrialSpec.from_dict(config["spec"]), Storage(config["storage"])
    try:
        unlearn_trial(spec, storage, TrainSession(), device)
    except Exception as e:
        if ray.train.get_context().get_world_rank() == 0:
            cause = capture_failure(e, storage, f"{trial_dir(spec)}/error.log")
            storage.write_bytes(f"{trial_dir(spec)}/{WORKER_CAUSE}", cause.encode())
        raise


def unlearn_trial(spec: TrialSpec, storage: Storage, session, device) -> None:
    """One trial, Ray-free: unlearn, evaluate, report/checkpoint through ``session``, (rank 0) write Parquet.

    ``session`` is a :class:`TrainSession` (a Ray Train worker), an :class:`InlineSession` (the Tune trial
    process itself) or anything with ``restore() -> dict | None`` and ``report(metrics, state)``.
    """
    from sweeper.methods import import_plugins

    torch.set_num_threads(max(1, int(spec.model["cpus_per_worker"])))
    import_plugins(spec.plugins)
    trial = _Trial(spec, storage, device)
    rows, first, elapsed, best = [], 1, 0.0, None
    state = session.restore()
    if state:  # a restarted trial resumes where the last checkpoint left off
        trial.unlearner.load_state_dict(state["unlearner"])
        rows, first, elapsed, best = state["rows"], state["step"] + 1, state["elapsed"], state.get("best")
    start = time.perf_counter() - elapsed
    with trial.precision:
        status, diverged_step, final, stop_reason = "ok", None, None, None
        for t in range(first, spec.steps + 1):
            if spec.search.get("early_stop") and (stop_reason := stop_requested(storage, spec, trial.comm)):
                status = "stopped_dominated"  # a front search's scheduler found it dominated: end it here
                break
            try:
                row = trial.unlearner.step(t)
            except trial.Diverged as e:  # every worker sees the same global scalars: all stop at the same step
                status, diverged_step = "diverged", e.step
                break
            row["wall_s"] = time.perf_counter() - start
            rows.append(row)
            if t % (spec.eval["every"] or spec.steps) == 0 or t == spec.steps:
                if t == spec.steps:  # the final evaluation gives the curve's last point too
                    final = trial.evaluate()
                scores = final[0] if final else trial.curve_metrics()
                if scores:
                    row.update({k: scores[k] for k in CURVE_KEYS})
                best = keep_best(spec, storage, trial, row, best)
                _checkpoint(session, trial, rows, t, time.perf_counter() - start, best)
        if status == "stopped_dominated":  # its point is its last evaluation; the full evaluation is skipped
            last = next((r for r in reversed(rows) if r.get("rouge_forget") is not None), {})
            final = ({k: last.get(k) for k in CURVE_KEYS}, [])
        elif final is None:  # diverged, or resumed from the last step's checkpoint
            final = trial.evaluate()
    if trial.comm.rank == 0:
        summary = summary_row(spec, steps=rows[-1]["step"] if rows else 0, status=status,
                              node_id=getattr(session, "node_id", None), stop_reason=stop_reason,
                              best_step=best and best["step"],
                              diverged_step=diverged_step, final_lr=trial.unlearner.optimizer.param_groups[0]["lr"],
                              wall_s=time.perf_counter() - start, **final[0])
        write_trial(storage, spec.run, spec.trial_id, rows, summary, finished=True, samples=final[1])


def stop_requested(storage: Storage, spec: TrialSpec, comm) -> str | None:
    """The reason in the trial's stop marker (written by a front search's scheduler), or None. Rank 0
    looks and tells every rank, so all ranks stop at the same step."""
    from sweeper.front_searcher import STOP_MARKER
    path = f"{trial_dir(spec)}/{STOP_MARKER}"
    found = comm.rank == 0 and storage.exists(path)
    if comm.world_size > 1:
        found = bool(comm.all_reduce_sum(torch.tensor([float(found)])).item())
    if not found:
        return None
    return storage.read_bytes(path).decode() if comm.rank == 0 else "stopped"


def trade_off(scores: dict, keep) -> float:
    """The score ``eval.keep_best`` maximises: a metric (rouge_retain up, rouge_forget down) or, for a
    weight w, w * retain + (1 - w) * (1 - forget)."""
    if keep == "rouge_retain":
        return scores["rouge_retain"]
    if keep == "rouge_forget":
        return -scores["rouge_forget"]
    return float(keep) * scores["rouge_retain"] + (1 - float(keep)) * (1 - scores["rouge_forget"])


def keep_best(spec: TrialSpec, storage: Storage, trial: "_Trial", row: dict, best: dict | None) -> dict | None:
    """With ``eval.keep_best``: when this evaluation beats the best so far, rank 0 saves the model under
    ``<trial>/best/`` (weights plus best.json: step, metrics, score). Returns the best so far."""
    keep = spec.eval.get("keep_best")
    if keep is None or row.get("rouge_forget") is None:
        return best
    score = trade_off(row, keep)
    if best is not None and not score > best["score"]:
        return best
    best = {"step": row["step"], "score": score, "rouge_forget": row["rouge_forget"],
            "rouge_retain": row["rouge_retain"], "keep_best": keep, "target_hash": spec.target_hash}
    if trial.comm.rank == 0:
        with tempfile.TemporaryDirectory() as d:
            if hasattr(trial.model, "save_pretrained"):
                trial.model.save_pretrained(d)
            else:
                torch.save(trial.model.state_dict(), os.path.join(d, "model.pt"))
            for name in os.listdir(d):
                with open(os.path.join(d, name), "rb") as fh:
                    storage.write_bytes(f"{trial_dir(spec)}/best/{name}", fh.read())
        storage.write_bytes(f"{trial_dir(spec)}/best/best.json", json.dumps(best, indent=1).encode())
    return best


class _Trial:
    """What one trial works with: the target loaded (and sharded), its task, the Unlearner, the precision."""

    def __init__(self, spec: TrialSpec, storage: Storage, device):
        from sweeper.autolr import AutoLRConfig
        from sweeper.loop import Diverged, LoopConfig, Unlearner
        from sweeper.models import compute_precision
        from sweeper.targets import load_target
        from sweeper.tasks import get_task

        self.spec, self.Diverged, self.comm = spec, Diverged, current_comm()
        self.task = get_task(spec.data["kind"])
        # strategy fsdp: load on the CPU, then FSDP2 moves each block's shard to the device (sweeper/fsdp.py)
        self.sharded = spec.model.get("strategy") == "fsdp" and torch.distributed.is_initialized()
        model, self.tokenizer, self.splits, ref, _ = load_target(storage, spec.target_hash, spec.data["kind"],
                                                                 device="cpu" if self.sharded else device)
        self.reference = _retain_reference(storage, spec)
        # Parameters and optimizer state stay float32; the grid's dtype is the compute dtype: FSDP2's
        # mixed-precision policy on GPUs, torch.autocast otherwise (sweeper.models.compute_precision).
        self.model, self.precision = model.to(torch.float32), compute_precision(spec.model["dtype"], device)
        if self.sharded:
            from sweeper.fsdp import shard_model
            mixed = spec.model["dtype"] != "float32" and torch.cuda.is_available()
            self.model = shard_model(self.model, device=device,
                                     param_dtype=getattr(torch, spec.model["dtype"]) if mixed else None)
            self.precision = contextlib.nullcontext() if mixed else self.precision
        cfg = LoopConfig(method=spec.method, method_params=spec.method_params, forget_loss=spec.forget_loss,
                         forget_loss_params=spec.forget_loss_params, optimizer=spec.optimizer, lr=spec.lr,
                         weight_decay=spec.weight_decay, steps=spec.steps, batch_size=spec.batch_size,
                         autolr=AutoLRConfig(**spec.autolr) if spec.lr_mode == "autolr" else None, seed=spec.seed)
        task, tok = self.task, self.tokenizer
        self.unlearner = Unlearner(self.model, task.dataset(self.splits["forget"], tok),
                                   task.dataset(self.splits["retain"], tok), task.collate(tok), cfg, comm=self.comm,
                                   ref_logprobs=ref, device=device, logprobs=task.logprobs)

    @property
    def evaluates(self) -> bool:
        return self.comm.rank == 0 or self.sharded  # FSDP: generation all-gathers, so every rank evaluates

    def curve_metrics(self) -> dict | None:
        if not self.evaluates:
            return None
        return self.task.curve_metrics(self.model, self.tokenizer, self.splits, self.spec.eval)

    def evaluate(self) -> tuple[dict, list] | None:
        """(summary metrics, per-sample rows) of the final evaluation, as the grid's eval.metrics select."""
        if not self.evaluates:
            return None
        return self.task.select(*self.task.evaluate(self.model, self.tokenizer, self.splits, self.spec.eval,
                                                     self.reference), self.spec.eval)


def _checkpoint(session, trial: _Trial, rows: list[dict], step: int, elapsed: float, best: dict | None) -> None:
    """Progress and a checkpoint through the session; every rank calls it (a barrier under Ray Train).
    Under FSDP ``state_dict()`` is a collective that gathers the full state to rank 0: every rank calls it."""
    rank0 = trial.comm.rank == 0
    full = trial.unlearner.state_dict() if rank0 or getattr(trial.unlearner, "sharded", False) else None
    metrics = {k: rows[-1][k] for k in PROGRESS_KEYS + CURVE_KEYS if rows[-1].get(k) is not None}
    session.report(metrics, {"unlearner": full, "rows": rows, "step": step, "elapsed": elapsed, "best": best}
                   if rank0 else None)


def ray_node_id() -> str | None:
    """The Ray node this process runs on (provenance in each trial's summary), or None outside Ray."""
    try:
        import ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 -- provenance only; never fail a trial for it
        return None


class TrainSession:
    """Progress and checkpoints through Ray Train (inside a ``TorchTrainer`` worker).

    Every rank must call ``report`` (it is a barrier); only rank 0 passes a state, saved as the checkpoint.
    On resume every rank loads that file and ``load_state_dict`` re-shards it under FSDP.
    """

    def __init__(self):
        self.node_id = ray_node_id()

    def restore(self) -> dict | None:
        import ray.train
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return torch.load(os.path.join(d, "state.pt"), weights_only=False)

    def report(self, metrics: dict, state: dict | None) -> None:
        import ray.train
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


class InlineSession:
    """Progress to Tune and checkpoints in storage, for a one-worker trial run inside the Tune trial process.

    The checkpoint is ``<run>/train/<trial_id>/inline_state.pt`` (written atomically, replaced at every
    evaluation step), so a relaunched sweep or a restarted trial process resumes from it.
    """

    def __init__(self, storage: Storage, spec: TrialSpec):
        self.storage, self.path = storage, f"{spec.run}/train/{spec.trial_id}/inline_state.pt"
        self.node_id = ray_node_id()

    def restore(self) -> dict | None:
        if not self.storage.exists(self.path):
            return None
        return torch.load(io.BytesIO(self.storage.read_bytes(self.path)), weights_only=False)

    def report(self, metrics: dict, state: dict | None) -> None:
        import ray.tune
        buf = io.BytesIO()
        torch.save(state, buf)
        self.storage.write_bytes(self.path, buf.getvalue())
        ray.tune.report(metrics)


def _retain_reference(storage: Storage, spec: TrialSpec) -> dict | None:
    """The retrained (retain-only) target's reference data, when stage 1 built one for this run."""
    import json

    from sweeper.grid import target_hash
    rel = f"targets/{target_hash(spec.model, spec.data, spec.target, 'retain_only')}/reference.json"
    return json.loads(storage.read_bytes(rel)) if storage.exists(rel) else None


def _status(storage: Storage, base: str) -> str:
    return storage.read_table(f"{base}/summary.parquet").column("status")[0].as_py()


def run_trial(config: dict, specs: dict | None = None) -> None:
    """Tune function trainable: one trial as a Ray Train job (or inline); a failure is recorded, never lost.

    ``config`` holds ``trial`` (a trial id, shown in Tune's table), ``storage``, and optionally ``runner``
    (``train``, the default: a ``TorchTrainer`` job; ``inline``: a one-worker trial runs in this process,
    see :func:`run_inline`) and ``retry_failed``; ``specs`` maps trial ids to spec dicts (bound with
    ``tune.with_parameters``), or ``config["spec"]`` holds the spec itself.
    """
    import ray.tune

    spec = TrialSpec.from_dict(specs[config["trial"]] if specs else config["spec"])
    storage = Storage(config["storage"])
    base = trial_dir(spec)
    if not storage.exists(f"{base}/_SUCCESS") or (config.get("retry_failed") and _status(storage, base) == "failed"):
        run = run_inline if runner_for(spec, config.get("runner", "train")) == "inline" else run_train_job
        storage.delete(f"{base}/{WORKER_CAUSE}")
        storage.delete(f"{base}/_STOP")  # an old verdict: the scheduler decides again from this run's results
        try:
            run(spec, storage)
        except Exception as e:  # noqa: BLE001 -- recorded as a failed trial; the sweep goes on
            # The cause in one line (the worker's own, not Ray's wrapper), the traceback in error.log.
            if storage.exists(f"{base}/{WORKER_CAUSE}"):  # error.log holds the worker's traceback already
                cause = storage.read_bytes(f"{base}/{WORKER_CAUSE}").decode()
            else:
                cause = capture_failure(e, storage, f"{base}/error.log")
            # A failed trial is finished too (its summary says why); --retry-failed runs it again.
            write_trial(storage, spec.run, spec.trial_id, [], summary_row(spec, steps=0, status="failed", error=cause,
                                                                          wall_s=None), finished=True)
    summary = storage.read_table(f"{base}/summary.parquet").to_pylist()[0]
    ray.tune.report({k: summary[k] for k in ("status", "final_loss_retain", "final_loss_forget", "rouge_forget",
                                             "rouge_retain", "steps", "wall_s", "node_id") if summary.get(k) is not None})


def run_train_job(spec: TrialSpec, storage: Storage) -> None:
    """The trial as a Ray Train V2 job: ``spec.model['workers']`` workers, restarts from the last checkpoint."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = spec.model["gpus_per_worker"]
    resources = {"CPU": spec.model["cpus_per_worker"], **({"GPU": gpus} if gpus else {})}
    TorchTrainer(
        train_worker, train_loop_config={"spec": spec.to_dict(), "storage": storage.uri},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.model["workers"], use_gpu=bool(gpus),
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=spec.trial_id, storage_path=storage.url(f"{spec.run}/train"),
            # Only the latest checkpoint is ever resumed from; older ones would be model-sized dead weight.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures,
                                                   controller_failure_limit=spec.max_failures),
            callbacks=[TuneReportCallback()])).fit()


def run_inline(spec: TrialSpec, storage: Storage) -> None:
    """The trial in this (Tune trial) process: no Train controller, no worker process, imports paid once
    per reused process. One worker only. An exception is retried ``spec.max_failures`` times, each time
    from the last checkpoint; a dead process is restarted by Tune (``FailureConfig``) and resumes too."""
    if spec.model["workers"] != 1:
        raise ValueError(f"runner 'inline' runs one worker, but model {spec.model['name']!r} has "
                         f"workers = {spec.model['workers']}")
    session = InlineSession(storage, spec)
    device = torch.device("cuda") if spec.model["gpus_per_worker"] and torch.cuda.is_available() else torch.device("cpu")
    for attempt in range(spec.max_failures + 1):
        try:
            unlearn_trial(spec, storage, session, device)
            break
        except Exception:  # noqa: BLE001 -- retried from the checkpoint, then recorded by run_trial
            if attempt == spec.max_failures:
                raise
            traceback.print_exc()
    storage.delete(session.path)
