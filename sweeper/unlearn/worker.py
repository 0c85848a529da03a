"""One trial's unlearning, Ray-free: load the target, run the loop step by step, evaluate, report and
checkpoint through a session, and (rank 0) write the trial's Parquet.

The Ray glue in ``sweeper.cluster.trial`` calls ``unlearn_trial`` inside a Ray Train worker (``TrainSession``) or
inline in the Tune trial process (``InlineSession``); a test calls it with any object that has
``restore() -> dict | None`` and ``report(metrics, state)``::

    unlearn_trial(spec, Storage("/tmp/runs"), session, torch.device("cpu"))
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time

import torch

from sweeper.unlearn.distributed import current_comm
from sweeper.store.records import STOP_MARKER, summary_row, trial_dir, write_trial
from sweeper.store.storage import Storage
from sweeper.grid.spec import TrialSpec, target_hash

#: Metrics forwarded to Tune's progress table.
PROGRESS_KEYS = ("step", "loss_retain", "loss_forget", "lr")
#: Evaluation metrics reported with the evaluation steps (a front search's scheduler reads them).
CURVE_KEYS = ("rouge_forget", "rouge_retain")


def unlearn_trial(spec: TrialSpec, storage: Storage, session, device) -> None:
    """One trial, Ray-free: unlearn, evaluate, report/checkpoint through ``session``, (rank 0) write Parquet.

    ``session`` is a :class:`TrainSession` (a Ray Train worker), an :class:`InlineSession` (the Tune trial
    process itself) or anything with ``restore() -> dict | None`` and ``report(metrics, state)``.
    """
    from sweeper.methods import import_plugins

    torch.set_num_threads(max(1, int(spec.model["cpus_per_worker"])))
    import_plugins(spec.plugins)
    trial = _Trial(spec, storage, device)
    rows, first, elapsed, best, samples = [], 1, 0.0, None, []
    state = session.restore()
    if state:  # a restarted trial resumes where the last checkpoint left off
        trial.unlearner.load_state_dict(state["unlearner"])
        rows, first, elapsed, best = state["rows"], state["step"] + 1, state["elapsed"], state.get("best")
        samples = state.get("samples", [])
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
                scores, step_samples = (final[0], []) if final else trial.curve_evaluation()
                samples += [{**r, "step": t} for r in step_samples]  # each evaluation's answers, by step
                if scores:
                    row.update({k: scores[k] for k in CURVE_KEYS})
                best = keep_best(spec, storage, trial, row, best)
                _checkpoint(session, trial, rows, t, time.perf_counter() - start, best, samples)
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
        last = rows[-1]["step"] if rows else 0
        samples += [{"step": last, **r} for r in final[1]]  # the final evaluation's, at the last step run
        write_trial(storage, spec.run, spec.trial_id, rows, summary, finished=True, samples=samples)


def stop_requested(storage: Storage, spec: TrialSpec, comm) -> str | None:
    """The reason in the trial's stop marker (written by a front search's scheduler), or None. Rank 0
    looks and tells every rank, so all ranks stop at the same step."""
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
        from sweeper.unlearn.autolr import AutoLRConfig
        from sweeper.unlearn.loop import Diverged, LoopConfig, Unlearner
        from sweeper.models.language import compute_precision
        from sweeper.unlearn.targets import load_target
        from sweeper.tasks import get_task
        from sweeper.data.refusals import idk_rows
        from sweeper.methods.objectives import get_objective

        self.spec, self.Diverged, self.comm = spec, Diverged, current_comm()
        self.task = get_task(spec.data["kind"])
        # strategy fsdp: load on the CPU, then FSDP2 moves each block's shard to the device (sweeper/unlearn/fsdp.py)
        self.sharded = spec.model.get("strategy") == "fsdp" and torch.distributed.is_initialized()
        model, self.tokenizer, self.splits, ref, _ = load_target(storage, spec.target_hash, spec.data["kind"],
                                                                 device="cpu" if self.sharded else device)
        self.reference = _retain_reference(storage, spec)
        # Parameters and optimizer state stay float32; the grid's dtype is the compute dtype: FSDP2's
        # mixed-precision policy on GPUs, torch.autocast otherwise (sweeper.models.language.compute_precision).
        self.model, self.precision = model.to(torch.float32), compute_precision(spec.model["dtype"], device)
        if spec.model.get("adapter"):   # LoRA: the target stays as loaded; only the adapter trains
            from sweeper.models.adapters import apply_adapter
            self.model = apply_adapter(self.model, spec.model["adapter"], seed=spec.seed)
        if self.sharded:
            from sweeper.unlearn.fsdp import shard_model
            mixed = spec.model["dtype"] != "float32" and torch.cuda.is_available()
            self.model = shard_model(self.model, device=device,
                                     param_dtype=getattr(torch, spec.model["dtype"]) if mixed else None)
            self.precision = contextlib.nullcontext() if mixed else self.precision
        cfg = LoopConfig(method=spec.method, method_params=spec.method_params, forget_loss=spec.forget_loss,
                         forget_loss_params=spec.forget_loss_params, retain_loss=spec.retain_loss,
                         retain_loss_params=spec.retain_loss_params, optimizer=spec.optimizer, lr=spec.lr,
                         weight_decay=spec.weight_decay, steps=spec.steps, batch_size=spec.batch_size,
                         autolr=AutoLRConfig(**spec.autolr) if spec.lr_mode == "autolr" else None, seed=spec.seed)
        task, tok = self.task, self.tokenizer
        alt = None
        if "alternate" in get_objective(spec.forget_loss).needs:   # idknll, idkdpo: refusals as answers
            alt = task.dataset(idk_rows(self.splits["forget"], seed=spec.seed), tok)
        with self.precision:   # objectives' cached target values in the trial's compute precision
            self.unlearner = Unlearner(self.model, task.dataset(self.splits["forget"], tok),
                                       task.dataset(self.splits["retain"], tok), task.collate(tok), cfg,
                                       comm=self.comm, ref_logprobs=ref, device=device, logprobs=task.logprobs,
                                       alt_forget_ds=alt)

    @property
    def evaluates(self) -> bool:
        return self.comm.rank == 0 or self.sharded  # FSDP: generation all-gathers, so every rank evaluates

    def curve_evaluation(self) -> tuple[dict | None, list[dict]]:
        """(curve metrics, their per-sample rows) on ranks that evaluate; (None, []) elsewhere."""
        if not self.evaluates:
            return None, []
        return self.task.curve_evaluation(self.model, self.tokenizer, self.splits, self.spec.eval)

    def evaluate(self) -> tuple[dict, list] | None:
        """(summary metrics, per-sample rows) of the final evaluation, as the grid's eval.metrics select."""
        if not self.evaluates:
            return None
        return self.task.select(*self.task.evaluate(self.model, self.tokenizer, self.splits, self.spec.eval,
                                                     self.reference), self.spec.eval)


def _checkpoint(session, trial: _Trial, rows: list[dict], step: int, elapsed: float, best: dict | None,
                samples: list[dict] | None = None) -> None:
    """Progress and a checkpoint through the session; every rank calls it (a barrier under Ray Train).
    Under FSDP ``state_dict()`` is a collective that gathers the full state to rank 0: every rank calls it."""
    rank0 = trial.comm.rank == 0
    full = trial.unlearner.state_dict() if rank0 or getattr(trial.unlearner, "sharded", False) else None
    metrics = {k: rows[-1][k] for k in PROGRESS_KEYS + CURVE_KEYS if rows[-1].get(k) is not None}
    session.report(metrics, {"unlearner": full, "rows": rows, "step": step, "elapsed": elapsed, "best": best,
                             "samples": samples or []} if rank0 else None)


def _retain_reference(storage: Storage, spec: TrialSpec) -> dict | None:
    """The retrained (retain-only) target's reference data, when stage 1 built one for this run."""
    rel = f"targets/{target_hash(spec.model, spec.data, spec.target, 'retain_only')}/reference.json"
    return json.loads(storage.read_bytes(rel)) if storage.exists(rel) else None
