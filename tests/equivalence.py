"""Shared by the N-workers-equal-1-worker tests (test_distributed.py for DDP, test_fsdp.py for FSDP2, the
field's objectives and LoRA): spawning gloo ranks once for all of them (``gloo_ranks`` in tests/conftest.py),
and the tolerances of the comparison."""
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


def spawn_jobs(jobs: dict[str, tuple[str, str]], world: int, out_dir, limit_s: float = 300.0) -> dict[str, list[dict]]:
    """Run rank workers (``{label: (module, function)}``, each called as ``worker(rank, world, port, out_dir)``
    and saving ``out_dir/rank{r}.pt``) one after another on the same ``world`` spawned processes, each on a
    fresh gloo group: one process start and one import of torch and transformers per rank for all of them
    (about 5 s per spawn on 2 CPUs). Returns ``{label: results in rank order}``. The limit is a hang guard,
    not a speed limit (the children also time out in their process group at 120 s)."""
    if not jobs:
        return {}
    spec = [(label, module, name, free_port()) for label, (module, name) in jobs.items()]
    deadline = time.monotonic() + limit_s
    ctx = mp.start_processes(_run_jobs, args=(world, str(out_dir), spec), nprocs=world, join=False,
                             start_method="spawn")
    try:
        while not ctx.join(timeout=1.0):   # raises with the child's traceback if a rank fails
            if time.monotonic() > deadline:
                pytest.fail(f"the {' and '.join(jobs)} workers did not finish within {limit_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    return {label: [torch.load(os.path.join(out_dir, label, f"rank{r}.pt"), weights_only=False) for r in range(world)]
            for label in jobs}


def _run_jobs(rank: int, world: int, out_dir: str, spec: list) -> None:
    for label, module, name, port in spec:
        sub = os.path.join(out_dir, label)
        os.makedirs(sub, exist_ok=True)
        getattr(importlib.import_module(module), name)(rank, world, port, sub)


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
