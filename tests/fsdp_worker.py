"""Helpers for tests/test_fsdp.py: the cases of ``ddp_worker`` run on a model sharded by FSDP2.

Lives in its own module so torch.multiprocessing's spawn can import ``worker`` in the child processes.
Each rank builds the same tiny GPT-2 as ``ddp_worker``, shards it with ``sweeper.unlearn.fsdp.shard_model``
(every GPT2Block, then the root) and runs ``Unlearner`` (which switches to its sharded-gradient path);
the final parameters are gathered with ``DTensor.full_tensor()``. Besides the cases it runs a resumed
run (checkpoint after step RESUME_AT through ``Unlearner.state_dict``, a fresh sharded model restored
from rank 0's file, the remaining steps) and the QA evaluation on the sharded model on every rank.
"""
from __future__ import annotations

import os

import torch

from ddp_worker import CASES, STEPS, init_gloo, new_model, setup
from sweeper.unlearn.loop import Unlearner

RESUME_CASE = "ngdiff_autolr_adam"
RESUME_AT = 3
EVAL_ROWS = 4
EVAL_NEW_TOKENS = 6


def _full_params(model) -> dict:
    """Every state-dict entry as a full (unsharded) tensor; a collective for DTensors."""
    from torch.distributed.tensor import DTensor
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in model.state_dict().items()}


def _sharded_model(tok):
    from sweeper.unlearn.fsdp import shard_model
    return shard_model(new_model(tok, seed=0), device="cpu")


def _unlearner(name: str, data, model, comm) -> Unlearner:
    _, forget, retain, collate, ref = data
    cfg = CASES[name]
    return Unlearner(model, forget, retain, collate, cfg, comm=comm,
                     ref_logprobs=ref if cfg.forget_loss == "npo" else None)


def _steps(unlearner, first: int, last: int) -> list[dict]:
    rows = []
    for t in range(first, last + 1):
        row = unlearner.step(t)
        row.pop("wall_s")
        rows.append(row)
    return rows


def run_case(name: str, data, comm) -> dict:
    """Case ``name`` on a sharded model: rows, gathered parameters, and how the model was sharded."""
    from torch.distributed.tensor import DTensor
    model = _sharded_model(data[0])
    unlearner = _unlearner(name, data, model, comm)
    assert unlearner.sharded and unlearner.flat is None
    sharding = {"all_dtensor": all(isinstance(p, DTensor) for p in model.parameters()),
                "local_numel": sum(p.to_local().numel() for p in model.parameters()),
                "full_numel": sum(p.numel() for p in model.parameters()),
                "fsdp_modules": sum(type(m).__name__.startswith("FSDP") for m in model.modules())}
    rows = _steps(unlearner, 1, STEPS)
    return {"rows": rows, "params": _full_params(model), "sharding": sharding, "model": model}


def run_resumed(name: str, data, comm, out_dir: str) -> dict:
    """RESUME_AT steps, checkpoint (rank 0 writes the gathered state), a fresh sharded model restored
    from that file on every rank, then the remaining steps: what a restarted Ray Train worker does."""
    import torch.distributed as dist
    first = _unlearner(name, data, _sharded_model(data[0]), comm)
    rows = _steps(first, 1, RESUME_AT)
    state = first.state_dict()                       # collective; full dicts on rank 0 only
    path = os.path.join(out_dir, "resume_state.pt")
    if comm.rank == 0:
        assert state["model"] and state["optimizer"]["state"], "rank 0 must hold the full state"
        torch.save(state, path)
    dist.barrier()
    model = _sharded_model(data[0])
    second = _unlearner(name, data, model, comm)
    second.load_state_dict(torch.load(path, weights_only=False))
    rows += _steps(second, RESUME_AT + 1, STEPS)
    return {"rows": rows, "params": _full_params(model)}


def eval_rows(data) -> list[dict]:
    """The first EVAL_ROWS forget and retain QA rows."""
    _, forget, retain, _, _ = data
    return forget.rows[:EVAL_ROWS] + retain.rows[:EVAL_ROWS]


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank: gloo process group, every case sharded, results to ``out_dir/rank{r}.pt``."""
    import torch.distributed as dist

    from sweeper.unlearn.distributed import TorchDistComm
    from sweeper.metrics.evaluate import evaluate_qa
    init_gloo(rank, world_size, port)
    try:
        data = setup()
        comm = TorchDistComm()
        results = {name: run_case(name, data, comm) for name in CASES}
        results["resumed"] = run_resumed(RESUME_CASE, data, comm, out_dir)
        # evaluation (greedy generation + answer NLL) runs on every rank of a sharded model
        rows = eval_rows(data)
        model = results["gdiff_npo_sgd"]["model"]
        results["eval_sharded"] = evaluate_qa(model, data[0], rows, max_new_tokens=EVAL_NEW_TOKENS)
        if rank == 0:   # the same parameters, unsharded, in one process
            plain = new_model(data[0], seed=0)
            plain.load_state_dict(results["gdiff_npo_sgd"]["params"])
            results["eval_plain"] = evaluate_qa(plain, data[0], rows, max_new_tokens=EVAL_NEW_TOKENS)
        for name in CASES:
            results[name].pop("model")
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()

