"""Helper for tests/test_lora.py: the DDP NGDiff + AutoLR case of ``ddp_worker`` on a LoRA-wrapped tiny
GPT-2, run by 1 or by W gloo processes (its own module so spawn can import ``worker`` in the children)."""
from __future__ import annotations

import os

import torch

import ddp_worker
from sweeper.models.adapters import apply_adapter
from sweeper.unlearn.loop import Unlearner

LORA = {"kind": "lora", "r": 4, "alpha": 8}


def run(data, comm=None) -> dict:
    """Rows (wall_s dropped) and final adapter weights of the NGDiff + AutoLR case with a LoRA adapter."""
    _, forget, retain, collate, _ = data
    model = apply_adapter(ddp_worker.new_model(data[0], seed=0), LORA, seed=3)
    cfg = ddp_worker.CASES["ngdiff_autolr_adam"]
    unlearner = Unlearner(model, forget, retain, collate, cfg, comm=comm)
    rows = [{k: v for k, v in unlearner.step(t).items() if k != "wall_s"} for t in range(1, cfg.steps + 1)]
    return {"rows": rows, "adapter": {k: v.clone() for k, v in unlearner.state_dict()["model"].items()}}


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from sweeper.unlearn.distributed import TorchDistComm
    ddp_worker.init_gloo(rank, world_size, port)
    try:
        torch.save(run(ddp_worker.setup(), TorchDistComm()), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()
