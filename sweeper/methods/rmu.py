"""RMU (Li et al. 2024, WMDP): steer one block's hidden states on the forget batch toward a fixed
random direction, and keep them at the target's on the retain batch.

* forget ``rmu``: ascended -sum_t mean_d (h_t - coeff * u)^2, u a random unit vector drawn once per
  trial (uniform in [0, 1)^d, normalised, seeded by the trial's seed), coeff 2;
* retain ``rmu``: descended sum_t mean_d (h_t - h_t^target)^2, the target's hidden states cached at the
  trial's start (only the rows the trial visits, only the answer positions: no second model).

``layer``: the block whose output is used, 7 as published; ``"auto"`` (default) is 7 when the model
has more than 7 blocks, else its middle block (``sweeper.methods.forward.resolve_layer``). Positions are
the answer positions of every other token-level objective::

    grid:  methods: [{method: rmu}]            # gdiff c 0.5, forget rmu, retain rmu, layer auto, coeff 2
"""
from __future__ import annotations

import torch

from .objective_registry import forget_objective, positive, retain_objective


def direction(d: int, seed: int, device=None) -> torch.Tensor:
    """The trial's fixed random unit direction in R^d (the same on every worker and at resume)."""
    u = torch.rand(d, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)
    return (u / u.norm()).to(device)


def _sq_dist(f, other: torch.Tensor) -> torch.Tensor:
    """sum over answer positions of mean over d of (h - other)^2, per sequence (``other``: [d] or [N, d])."""
    return f.per_sequence(((f.packed(f.hidden) - other) ** 2).mean(-1))


@forget_objective("rmu", unit="tokens", needs=("hidden",), bounds=positive("coeff"))
def rmu_forget(f, *, layer="auto", coeff: float = 2.0) -> torch.Tensor:
    """RMU forget: -sum_t mean_d (h_t - coeff u)^2 (ascended: h is pushed toward coeff u)."""
    return -_sq_dist(f, coeff * direction(f.hidden.shape[-1], f.seed, f.hidden.device))


@retain_objective("rmu", unit="tokens", needs=("hidden", "target_hidden"))
def rmu_retain(f, *, layer="auto") -> torch.Tensor:
    """RMU retain: sum_t mean_d (h_t - h_t^target)^2 (descended: h stays at the target's)."""
    return _sq_dist(f, f.target_hidden)
