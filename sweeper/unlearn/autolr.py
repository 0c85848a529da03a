"""AutoLR: the paper's Algorithm 1 / Appendix C (GeN, Bu & Xu 2024) for any rule and base optimizer.

Every ``every`` steps the base optimizer takes its step once, with the current learning rate eta, so its
state (Adam's moments, step count) advances exactly as without AutoLR. The step it took,
Delta = -eta * d, *is* the final update direction d (SGD's gradient, or Adam's own preconditioned step),
so no second optimizer step and no copy of its state are needed. Along x (a step size), with
f(x) = L_R(theta - x d) on the same retain batch, in eval mode::

    L- = f(-xi),  L0 = f(0),  L+ = f(+xi)          xi = probe_scale * eta   (Algorithm 1: xi = eta)
    slope = (L+ - L-) / (2 xi)                       ~ -G.d
    curvature = (L+ - 2 L0 + L-) / xi^2              ~ d^T H d
    eta* = -slope / curvature                        the minimiser of the fitted quadratic (Eq. 8)

eta* is accepted only when curvature > 0 and slope < 0 (d descends L_R); it is then clipped to
[clip_low * eta, clip_high * eta] and smoothed, eta <- smoothing * eta + (1 - smoothing) * eta*
(GeN's published rule). Otherwise eta is kept (Remark 4.1). The step just taken is rescaled to the new
eta (theta0 + (eta_new / eta) Delta), as Algorithm 1 applies the new rate to the current update; the
rescaling is exact for SGD, momentum SGD, Adam and AdamW, whose update is linear in the learning rate.
With FSDP2 (DTensor parameters) every rank moves its own local shards; the probe losses are global.

Usage (inside the loop)::

    autolr = AutoLR(AutoLRConfig(every=10))
    if autolr.due(step):
        result = autolr.step(params, optimizer, retain_loss_fn, loss_at_theta=L_R)
    else:
        optimizer.step()
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class AutoLRConfig:
    every: int = 10            # K: probe every K steps (Remark 4.2)
    probe_scale: float = 1.0   # xi = probe_scale * eta; 1.0 is Algorithm 1's +-eta
    clip_low: float = 0.5      # eta* is clipped to [clip_low * eta, clip_high * eta] ...
    clip_high: float = 2.0
    smoothing: float = 0.9     # ... then eta <- smoothing * eta + (1 - smoothing) * eta*
    min_lr: float = 0.0        # absolute floor and ceiling, a last safeguard
    max_lr: float = math.inf

    def problems(self) -> list[str]:
        def number(v) -> bool:  # a real number (bool is not one; nan fails every comparison below)
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        out = []
        if not (isinstance(self.every, int) and not isinstance(self.every, bool) and self.every >= 1):
            out.append(f"autolr.every = {self.every!r} must be an integer >= 1")
        if not (number(self.probe_scale) and self.probe_scale > 0):
            out.append(f"autolr.probe_scale = {self.probe_scale!r} must be a number > 0")
        if not (number(self.clip_low) and number(self.clip_high) and 0 < self.clip_low <= 1 <= self.clip_high):
            out.append(f"autolr clip [{self.clip_low!r}, {self.clip_high!r}] must be numbers with "
                       f"0 < clip_low <= 1 <= clip_high")
        if not (number(self.smoothing) and 0 <= self.smoothing < 1):
            out.append(f"autolr.smoothing = {self.smoothing!r} must be a number in [0, 1)")
        if not (number(self.min_lr) and number(self.max_lr) and 0 <= self.min_lr < self.max_lr):
            out.append(f"autolr min_lr = {self.min_lr!r}, max_lr = {self.max_lr!r} must be numbers with "
                       f"0 <= min_lr < max_lr")
        return out


@dataclass(frozen=True)
class QuadraticFit:
    slope: float
    curvature: float

    @property
    def minimiser(self) -> float:
        return -self.slope / self.curvature if self.curvature != 0 else math.nan


def fit_quadratic(loss_minus: float, loss_0: float, loss_plus: float, xi: float) -> QuadraticFit:
    """The quadratic through (-xi, L-), (0, L0), (xi, L+): its slope and curvature at 0 (Appendix C)."""
    return QuadraticFit(slope=(loss_plus - loss_minus) / (2 * xi),
                        curvature=(loss_plus - 2 * loss_0 + loss_minus) / xi ** 2)


@dataclass
class AutoLRResult:
    status: str          # "accepted" or "rejected: <why>"
    slope: float
    curvature: float
    eta_star: float      # the raw minimiser (nan when undefined)
    lr_before: float
    lr_after: float


def propose_lr(fit: QuadraticFit, lr: float, cfg: AutoLRConfig) -> tuple[float, str]:
    """The next learning rate from a fit, and why: GeN's safeguards, clipping and smoothing."""
    if not (math.isfinite(fit.slope) and math.isfinite(fit.curvature)):
        return lr, "rejected: non-finite probe loss"
    if fit.curvature <= 0:
        return lr, "rejected: curvature <= 0"
    if fit.slope >= 0:
        return lr, "rejected: direction does not descend L_R"
    eta = min(max(fit.minimiser, cfg.clip_low * lr), cfg.clip_high * lr)
    eta = cfg.smoothing * lr + (1 - cfg.smoothing) * eta
    return min(max(eta, cfg.min_lr), cfg.max_lr), "accepted"


def _local(p: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage holds this rank's values of ``p``: its local shard for a DTensor
    (under no_grad, ``to_local()`` is an alias of the shard), else ``p`` itself."""
    to_local = getattr(p, "to_local", None)
    return to_local() if callable(to_local) else p


class AutoLR:
    def __init__(self, cfg: AutoLRConfig):
        self.cfg = cfg

    def due(self, step: int) -> bool:
        return step % self.cfg.every == 0

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer,
             retain_loss: Callable[[], float], loss_at_theta: float | None = None) -> AutoLRResult:
        """Take the optimizer's step with a learning rate re-estimated on the retain batch.

        ``retain_loss()`` returns L_R at the current parameters (eval mode, same retain batch, averaged
        over workers so every worker gets the same eta). ``loss_at_theta`` reuses the training forward's
        L_R at theta when train and eval forward passes agree (no active dropout).
        """
        lr = optimizer.param_groups[0]["lr"]
        # FSDP2 (DTensor parameters): move this rank's shards in place; the probes' forward passes
        # all-gather the moved shards, and retain_loss() is already global.
        params = [_local(p) for p in params]
        delta = torch._foreach_mul([p.detach() for p in params], -1.0)   # -theta0
        optimizer.step()                                                   # theta0 + Delta
        torch._foreach_add_(delta, [p.detach() for p in params])           # Delta = theta1 - theta0
        s = self.cfg.probe_scale
        torch._foreach_add_(params, delta, alpha=s - 1.0)                  # theta0 + s Delta  (x = +xi)
        loss_plus = retain_loss()
        torch._foreach_add_(params, delta, alpha=-2.0 * s)                 # theta0 - s Delta  (x = -xi)
        loss_minus = retain_loss()
        torch._foreach_add_(params, delta, alpha=s)                        # theta0
        loss_0 = retain_loss() if loss_at_theta is None else loss_at_theta
        fit = fit_quadratic(loss_minus, loss_0, loss_plus, xi=s * lr)
        new_lr, status = propose_lr(fit, lr, self.cfg)
        torch._foreach_add_(params, delta, alpha=new_lr / lr)              # theta0 + (eta_new/eta) Delta
        for group in optimizer.param_groups:
            group["lr"] = new_lr
        return AutoLRResult(status, fit.slope, fit.curvature, fit.minimiser, lr, new_lr)

    def config_dict(self) -> dict:
        return asdict(self.cfg)
