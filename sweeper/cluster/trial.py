"""Ray glue for one trial: a Tune function trainable that runs the unlearning loop as a Ray Train job.

``run_trial(config)`` (the Tune trainable) builds a ``TorchTrainer`` with ``spec.model['workers']``
workers; each worker runs ``train_worker``, which runs ``unlearn_trial``: it loads the cached No-unlearn
target, runs ``sweeper.unlearn.loop.Unlearner`` step by step (collectives over torch.distributed, gloo on CPU and
nccl on GPU), reports progress and checkpoints through a session, and rank 0 writes the trial's Parquet.
With the ``inline`` runner (``auto``'s choice for one worker) a trial runs ``unlearn_trial`` without a Train
job (``run_inline``): in a Ray task whose reports the Tune trial process relays (``run_inline_task``; a
reused Ray worker, warm from earlier trials or the stage-1 task that built the target), or, for a GPU
trial or on a cluster without the trial-slot resource, in the Tune trial process itself
(``plan.inline_in_task`` decides). ``unlearn_trial`` knows no Ray: the sessions (``TrainSession``,
``InlineSession``) do.
A trial whose ``_SUCCESS`` marker exists is not run again: its summary is reported as is.
"""
from __future__ import annotations

import io
import os
import queue
import tempfile
import threading
import traceback
from functools import cache

from sweeper.cluster.plan import inline_in_task, runner_for
from sweeper.store.records import WORKER_CAUSE, capture_failure, summary_row, trial_dir, write_trial
from sweeper.store.storage import Storage
from sweeper.grid.spec import TrialSpec

# torch and the trial body (transformers, the metrics) are imported where a trial runs, not at the top: a
# Tune trial process that only drives a Train job or relays an inline task's reports needs neither (~2 s).

def train_worker(config: dict) -> None:
    """The Ray Train worker: set up the device, then run the trial with Ray Train's report and checkpoints."""
    import ray.train
    import torch

    from sweeper.unlearn.worker import unlearn_trial

    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    spec, storage = TrialSpec.from_dict(config["spec"]), Storage(config["storage"])
    try:
        unlearn_trial(spec, storage, TrainSession(), device)
    except Exception as e:
        if ray.train.get_context().get_world_rank() == 0:
            record_worker_failure(e, spec, storage)
        raise


def record_worker_failure(e: BaseException, spec: TrialSpec, storage: Storage) -> None:
    """The traceback in the trial's ``error.log`` and the one-line cause beside it, written in the Ray worker
    where it happened: the launcher then reports the worker's own cause, not Ray's wrapper around it."""
    cause = capture_failure(e, storage, f"{trial_dir(spec)}/error.log")
    storage.write_bytes(f"{trial_dir(spec)}/{WORKER_CAUSE}", cause.encode())


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
        import torch
        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as d:
            return torch.load(os.path.join(d, "state.pt"), weights_only=False)

    def report(self, metrics: dict, state: dict | None) -> None:
        import ray.train
        import torch
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


class InlineSession:
    """Progress to ``progress`` (default ``ray.tune.report``: the Tune trial process) and checkpoints in
    storage, for a one-worker trial run without a Train job.

    The checkpoint is ``<run>/train/<trial_id>/inline_state.pt`` (written atomically, replaced at every
    evaluation step), so a relaunched sweep or a restarted trial process resumes from it.
    """

    def __init__(self, storage: Storage, spec: TrialSpec, progress=None):
        self.storage, self.path = storage, f"{spec.run}/train/{spec.trial_id}/inline_state.pt"
        self.node_id, self.progress = ray_node_id(), progress

    def restore(self) -> dict | None:
        import torch
        if not self.storage.exists(self.path):
            return None
        return torch.load(io.BytesIO(self.storage.read_bytes(self.path)), weights_only=False)

    def report(self, metrics: dict, state: dict | None) -> None:
        import torch
        buf = io.BytesIO()
        torch.save(state, buf)
        self.storage.write_bytes(self.path, buf.getvalue())
        if self.progress is None:
            import ray.tune
            ray.tune.report(metrics)
        else:
            self.progress(metrics)


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
        run = run_train_job
        if runner_for(spec, config.get("runner", "train")) == "inline":
            run = run_inline_task if inline_in_task(spec, config.get("trial_slots", False)) else run_inline
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


def run_inline(spec: TrialSpec, storage: Storage, progress=None) -> None:
    """The trial in this process (the Tune trial process, or a Ray task's worker): no Train controller, no
    worker process, imports paid once per reused process. One worker only. An exception is retried
    ``spec.max_failures`` times, each time from the last checkpoint; ``progress`` gets each report's
    metrics (default ``ray.tune.report``)."""
    import torch

    from sweeper.unlearn.worker import unlearn_trial
    if spec.model["workers"] != 1:
        raise ValueError(f"runner 'inline' runs one worker, but model {spec.model['name']!r} has "
                         f"workers = {spec.model['workers']}")
    session = InlineSession(storage, spec, progress)
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


def inline_task(spec_dict: dict, uri: str):
    """The Ray task of ``run_inline_task``, a generator: a thread runs ``run_inline`` while this yields
    each of its reports' metrics; a failure is recorded as the worker's own and raised."""
    spec, storage = TrialSpec.from_dict(spec_dict), Storage(uri)
    reports: queue.Queue = queue.Queue()
    end = object()

    def work() -> None:
        try:
            run_inline(spec, storage, reports.put)
            reports.put(end)
        except BaseException as e:  # noqa: BLE001 -- handed to the generator, which raises it
            reports.put(e)

    threading.Thread(target=work, name=f"trial-{spec.trial_id}", daemon=True).start()
    while (item := reports.get()) is not end:
        if isinstance(item, BaseException):
            record_worker_failure(item, spec, storage)
            raise item
        yield item


@cache
def _remote_inline_task():
    import ray
    # max_retries=0: run_inline_task decides what a lost worker costs (one of the trial's max_failures).
    return ray.remote(max_retries=0)(inline_task)


def run_inline_task(spec: TrialSpec, storage: Storage) -> None:
    """The inline trial in a Ray task on the trial's CPUs (``plan.inline_in_task``); this process relays
    its reports to Tune. The trial's own exceptions are retried inside the task (``run_inline``); a task
    whose process or node is lost is started again, up to ``spec.max_failures`` times, and resumes from
    the trial's checkpoint."""
    import ray
    import ray.tune

    # "DEFAULT": outside this trial's placement group (Tune's, which holds only the trial slot), which would
    # otherwise capture the task and never fit its CPUs.
    task = _remote_inline_task().options(num_cpus=spec.model["cpus_per_worker"], num_returns="streaming",
                                         scheduling_strategy="DEFAULT")
    for attempt in range(spec.max_failures + 1):
        reports, finished = task.remote(spec.to_dict(), storage.uri), False
        try:
            for ref in reports:
                ray.tune.report(ray.get(ref))
            finished = True
            return
        except ray.exceptions.RayTaskError:
            raise  # the trial's own exception, already retried inside the task
        except ray.exceptions.RayError:
            if attempt == spec.max_failures:
                raise
            traceback.print_exc()
        finally:
            if not finished:  # this process is being stopped or the task failed: never leave it running.
                # force: the trial runs in a thread of the task's worker, which a polite cancel would leave
                # training (and writing the trial's files) in a process Ray then counts as idle.
                ray.cancel(reports, force=True)
