"""Shared by the N-workers-equal-1-worker tests (test_distributed.py for DDP, test_fsdp.py for FSDP2):
spawning gloo ranks, and the tolerances of the comparison."""
from __future__ import annotations

import importlib
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, world: int, out_dir, label: str, limit_s: float = 150.0, extra: tuple = ()) -> list[dict]:
    """Run ``worker(rank, world, port, out_dir, *extra)`` on ``world`` spawned processes; each saves
    ``out_dir/rank{r}.pt``, returned in rank order. The limit is a hang guard, not a speed limit (the
    children also time out in their process group at 120 s)."""
    deadline = time.monotonic() + limit_s
    ctx = mp.start_processes(worker, args=(world, free_port(), str(out_dir), *extra), nprocs=world, join=False,
                             start_method="spawn")
    try:
        while not ctx.join(timeout=1.0):   # raises with the child's traceback if a rank fails
            if time.monotonic() > deadline:
                pytest.fail(f"the {label} workers did not finish within {limit_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    if extra:   # spawn_jobs reads each job's files itself
        return []
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


def spawn_jobs(jobs: dict[str, tuple[str, str]], world: int, out_dir, limit_s: float = 300.0) -> dict[str, list[dict]]:
    """Run several rank workers (``{label: (module, function)}``, each as ``spawn_ranks`` takes) one after
    another on the same ``world`` spawned processes, each on a fresh gloo group: one process start and one
    import of torch and transformers per rank for all of them (about 5 s per spawn on 2 CPUs). Returns
    ``{label: results in rank order}``."""
    if not jobs:
        return {}
    spec = [(label, module, name, free_port()) for label, (module, name) in jobs.items()]
    spawn_ranks(_run_jobs, world, out_dir, " and ".join(jobs), limit_s, extra=(spec,))
    return {label: [torch.load(os.path.join(out_dir, label, f"rank{r}.pt"), weights_only=False) for r in range(world)]
            for label in jobs}


def _run_jobs(rank: int, world: int, port: int, out_dir: str, spec: list) -> None:
    for label, module, name, job_port in spec:
        sub = os.path.join(out_dir, label)
        os.makedirs(sub, exist_ok=True)
        getattr(importlib.import_module(module), name)(rank, world, job_port, sub)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def autolr_tolerance(key: str, row: dict, lr_before: float, cfg) -> float:
    """Absolute tolerance of AutoLR's fit; 0 for every other field (which gets the relative tolerance).

    slope = (L+ - L-) / (2 xi) and curvature = (L+ - 2 L0 + L-) / xi^2 are differences of float32
    losses over xi = probe_scale * lr (here 2e-3): a few ulps of L (~5e-7 at L ~ 5) in each probe loss,
    which summing in a different order (2 shards vs 1) changes, become ~0.1-1 in a curvature of ~6e3.
    That is the fit's float32 conditioning, not a sharding error, so these fields get the error budget
    e = 4 ulps of L per probe loss, propagated through the two formulas and eta* = -slope / curvature.
    """
    if key not in ("autolr_slope", "autolr_curvature", "autolr_eta_star"):
        return 0.0
    xi = cfg.autolr.probe_scale * lr_before
    e = 4 * torch.finfo(torch.float32).eps * abs(row["loss_retain"])
    d_slope, d_curv = e / xi, 4 * e / xi ** 2
    if key == "autolr_slope":
        return d_slope
    if key == "autolr_curvature":
        return d_curv
    return abs(row["autolr_eta_star"]) * (d_slope / abs(row["autolr_slope"]) + d_curv / abs(row["autolr_curvature"]))
