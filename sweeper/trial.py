"""Ray glue for one trial: a Tune function trainable that runs the unlearning loop as a Ray Train job.

``run_trial(config)`` (the Tune trainable) builds a ``TorchTrainer`` with ``spec.model['workers']``
workers; each worker runs ``train_worker``: it loads the cached No-unlearn target, runs
``sweeper.loop.Unlearner`` step by step (collectives over torch.distributed, gloo on CPU and nccl on
GPU), reports progress to Tune through Ray Train, checkpoints, and rank 0 writes the trial's Parquet.
A trial whose ``_SUCCESS`` marker exists is not run again: its summary is reported as is.
"""
from __future__ import annotations

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
from sweeper.storage import Storage

#: Metrics forwarded to Tune's progress table.
PROGRESS_KEYS = ("step", "loss_retain", "loss_forget", "lr")


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
                params_json=json.dumps(spec.to_dict(), sort_keys=True), **results)


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


def train_worker(config: dict) -> None:
    """The Ray Train worker: unlearn, evaluate, checkpoint, and (rank 0) write the trial's Parquet."""
    import ray.train

    from sweeper.autolr import AutoLRConfig
    from sweeper.loop import Diverged, LoopConfig, Unlearner
    from sweeper.methods import import_plugins
    from sweeper.targets import load_target
    from sweeper.tasks import get_task

    spec, storage = TrialSpec.from_dict(config["spec"]), Storage(config["storage"])
    torch.set_num_threads(max(1, int(spec.model["cpus_per_worker"])))
    import_plugins(spec.plugins)
    comm = current_comm()
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    task = get_task(spec.data["kind"])
    # strategy fsdp: load on the CPU, then FSDP2 moves each block's shard to the device (sweeper/fsdp.py)
    sharded = spec.model.get("strategy") == "fsdp" and torch.distributed.is_initialized()
    model, tokenizer, splits, ref, _ = load_target(storage, spec.target_hash, spec.data["kind"],
                                                   device="cpu" if sharded else device)
    reference = _retain_reference(storage, spec)
    dtype = getattr(torch, spec.model["dtype"])
    if sharded:
        from sweeper.fsdp import shard_model
        mixed = dtype == torch.bfloat16 and torch.cuda.is_available()  # float32 shards, bf16 compute
        model = shard_model(model.to(torch.float32 if mixed else dtype), device=device,
                            param_dtype=torch.bfloat16 if mixed else None)
    else:
        model = model.to(dtype)
    cfg = LoopConfig(method=spec.method, method_params=spec.method_params, forget_loss=spec.forget_loss,
                     forget_loss_params=spec.forget_loss_params, optimizer=spec.optimizer, lr=spec.lr,
                     weight_decay=spec.weight_decay, steps=spec.steps, batch_size=spec.batch_size,
                     autolr=AutoLRConfig(**spec.autolr) if spec.lr_mode == "autolr" else None, seed=spec.seed)
    unlearner = Unlearner(model, task.dataset(splits["forget"], tokenizer), task.dataset(splits["retain"], tokenizer),
                          task.collate(tokenizer), cfg, comm=comm, ref_logprobs=ref, device=device,
                          logprobs=task.logprobs)
    rows, first, elapsed = [], 1, 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker group resumes where the last checkpoint left off
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=False)
        unlearner.load_state_dict(state["unlearner"])
        rows, first, elapsed = state["rows"], state["step"] + 1, state["elapsed"]
    start = time.perf_counter() - elapsed
    every = spec.eval["every"] or spec.steps
    status, diverged_step = "ok", None
    for t in range(first, spec.steps + 1):
        try:
            row = unlearner.step(t)
        except Diverged as e:  # every worker sees the same global scalars, so all stop at the same step
            status, diverged_step = "diverged", e.step
            break
        row["wall_s"] = time.perf_counter() - start
        if t % every == 0 or t == spec.steps:
            if comm.rank == 0 or sharded:  # FSDP: generation all-gathers, so every rank evaluates
                scores = task.curve_metrics(model, tokenizer, splits, spec.eval)
                row.update(rouge_forget=scores["rouge_forget"], rouge_retain=scores["rouge_retain"])
            rows.append(row)
            _report(spec, unlearner, rows, t, time.perf_counter() - start, comm.rank)
        else:
            rows.append(row)
    if comm.rank == 0 or sharded:
        final, samples = task.select(*task.evaluate(model, tokenizer, splits, spec.eval, reference), spec.eval)
    if comm.rank == 0:
        summary = summary_row(spec, steps=rows[-1]["step"] if rows else 0, status=status,
                              diverged_step=diverged_step, final_lr=unlearner.optimizer.param_groups[0]["lr"],
                              wall_s=time.perf_counter() - start, **final)
        write_trial(storage, spec.run, spec.trial_id, rows, summary, finished=True, samples=samples)


def _retain_reference(storage: Storage, spec: TrialSpec) -> dict | None:
    """The retrained (retain-only) target's reference data, when stage 1 built one for this run."""
    import json

    from sweeper.grid import target_hash
    rel = f"targets/{target_hash(spec.model, spec.data, spec.target, 'retain_only')}/reference.json"
    return json.loads(storage.read_bytes(rel)) if storage.exists(rel) else None


def _report(spec: TrialSpec, unlearner, rows: list[dict], step: int, elapsed: float, rank: int) -> None:
    """Progress to Tune and a checkpoint (rank 0 only writes it; every rank must call report).

    Under FSDP ``unlearner.state_dict()`` is a collective that gathers the full state to rank 0, so every
    rank calls it; on resume every rank loads that file and ``load_state_dict`` re-shards it.
    """
    import ray.train
    metrics = {k: rows[-1][k] for k in PROGRESS_KEYS}
    state = unlearner.state_dict() if rank == 0 or getattr(unlearner, "sharded", False) else None
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"unlearner": state, "rows": rows, "step": step, "elapsed": elapsed},
                   os.path.join(d, "state.pt"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _status(storage: Storage, base: str) -> str:
    return storage.read_table(f"{base}/summary.parquet").column("status")[0].as_py()


def run_trial(config: dict, specs: dict | None = None) -> None:
    """Tune function trainable: one trial as a Ray Train job; a failure is recorded, never lost.

    ``config`` holds ``trial`` (a trial id, shown in Tune's table) and ``storage``; ``specs`` maps trial
    ids to spec dicts (bound with ``tune.with_parameters``), or ``config["spec"]`` holds the spec itself.
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = TrialSpec.from_dict(specs[config["trial"]] if specs else config["spec"])
    storage = Storage(config["storage"])
    base = trial_dir(spec)
    if not storage.exists(f"{base}/_SUCCESS") or (config.get("retry_failed") and _status(storage, base) == "failed"):
        gpus = spec.model["gpus_per_worker"]
        resources = {"CPU": spec.model["cpus_per_worker"], **({"GPU": gpus} if gpus else {})}
        trainer = TorchTrainer(
            train_worker, train_loop_config={"spec": spec.to_dict(), "storage": storage.uri},
            scaling_config=ray.train.ScalingConfig(num_workers=spec.model["workers"], use_gpu=bool(gpus),
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=spec.trial_id, storage_path=storage.url(f"{spec.run}/train"),
                failure_config=ray.train.FailureConfig(max_failures=spec.max_failures,
                                                       controller_failure_limit=spec.max_failures),
                callbacks=[TuneReportCallback()]))
        try:
            trainer.fit()
        except Exception as e:  # noqa: BLE001 -- recorded as a failed trial; the sweep goes on
            message = f"{type(e).__name__}: {e}".strip()[:4000]
            # A failed trial is finished too (its summary says why); --retry-failed runs it again.
            write_trial(storage, spec.run, spec.trial_id, [], summary_row(spec, steps=0, status="failed", error=message,
                                                                          wall_s=None), finished=True)
            traceback.print_exc()
    summary = storage.read_table(f"{base}/summary.parquet").to_pylist()[0]
    ray.tune.report({k: summary[k] for k in ("status", "final_loss_retain", "final_loss_forget", "rouge_forget",
                                             "rouge_retain", "steps") if summary.get(k) is not None})
