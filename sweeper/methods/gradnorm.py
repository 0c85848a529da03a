"""Two-task GradNorm (Chen et al. 2018) as in the paper's Appendix B, Algorithm 3::

    rule = make_rule("gradnorm", {"alpha": 1.5, "lr_w": 0.025})
    w = rule.weights(s)   # this step's (w_R, w_F); the state now holds the next step's

In unlearning all parameters are shared by both tasks, so the gradient norm of the weighted task
``w_i L_i`` is ``G_i = w_i ||g_i||`` and needs no extra backward pass. Each step, with the mean
``G = (G_R + G_F)/2`` held constant and initial losses ``L_i(0)`` from the first step::

    training rates  L~_R = L_R / L_R(0),   L~_F = L_F(0) / L_F
    relative rates  r_i = L~_i / mean(L~)
    GradNorm loss   L_GN = sum_i |G_i - G r_i^alpha|,   dL_GN/dw_i = sign(G_i - G r_i^alpha) ||g_i||
    update          w_i <- max(w_i - lr_w dL_GN/dw_i, 0), then rescaled so w_R + w_F = 2

L~_F is inverted because the forget objective is maximised: it falls from 1 as the forget task
progresses, like L~_R, so a task that is ahead gets a smaller r_i and a smaller target norm, as
GradNorm intends. The rates assume positive losses (NLL); absolute values and ``eps`` only keep
them finite. As in Algorithm 3, the step is taken with the weights held before the update (line 8
uses w(theta_t); lines 13 and 15 produce w(theta_{t+1})). The weight step ``lr_w ||g_i||`` grows
with the gradient norm, so a good lr_w depends on the model (the paper's objection to GradNorm).
"""
from __future__ import annotations

import math

from .registry import StepScalars, combination_rule


def _rate(num: float, den: float, eps: float) -> float:
    return abs(num) / max(abs(den), eps)


def _sign(x: float) -> float:
    return float((x > 0) - (x < 0))


@combination_rule("gradnorm", summary="two-task GradNorm (Appendix B): learned weights, w_R + w_F = 2",
                  bounds={"alpha": (0.0, math.inf), "lr_w": (0.0, math.inf), "eps": (0.0, math.inf)})
def gradnorm(s: StepScalars, state: dict, *, alpha: float = 1.5, lr_w: float = 0.025,
             eps: float = 1e-12) -> tuple[float, float]:
    l0_r, l0_f = state.setdefault("initial_losses", [float(s.loss_retain), float(s.loss_forget)])
    w_r, w_f = state.setdefault("w", [1.0, 1.0])
    norms = (s.norm_retain, s.norm_forget)
    g = (w_r * norms[0], w_f * norms[1])
    g_mean = (g[0] + g[1]) / 2
    rates = (_rate(s.loss_retain, l0_r, eps), _rate(l0_f, s.loss_forget, eps))
    rate_mean = max((rates[0] + rates[1]) / 2, eps)
    new = []
    for w, g_i, n_i, rate in zip((w_r, w_f), g, norms, rates):
        target = g_mean * (rate / rate_mean) ** alpha
        new.append(max(w - lr_w * _sign(g_i - target) * n_i, 0.0))
    total = new[0] + new[1]
    # Both weights clamped to 0 (alpha < 1, or a zero gradient pinning one weight at 0 while the
    # other overshoots): nothing to rescale, so restart from equal weights.
    state["w"] = [2 * new[0] / total, 2 * new[1] / total] if total > 0 else [1.0, 1.0]
    return w_r, w_f
