"""Static and simple dynamic scalarizations of the paper's Section 3.2.

Each returns ``(w_R, w_F)`` for ``g = w_R g_R - w_F g_F``; ``c_t = w_R / (w_R + w_F)``::

    make_rule("gdiff", {"c": 0.9}).weights(s)   # Weights(0.9, 0.1): extended GDiff, Eq. (3)
    make_rule("rlw", seed=3).weights(s)          # random c_t, the same on every worker and resume

GD (c=1), GA (c=0) and vanilla GDiff (c=0.5) are the special cases of Remark 3.1.
"""
from __future__ import annotations

import math

import numpy as np

from .registry import StepScalars, combination_rule


@combination_rule("ga", summary="gradient ascent on the forget set only (c_t = 0)")
def ga(s: StepScalars, state: dict) -> tuple[float, float]:
    return 0.0, 1.0


@combination_rule("gd", summary="gradient descent on the retain set only (c_t = 1)")
def gd(s: StepScalars, state: dict) -> tuple[float, float]:
    return 1.0, 0.0


@combination_rule("gdiff", summary="extended GDiff: static c g_R - (1-c) g_F (c = 0.5 is vanilla GDiff)",
                  bounds={"c": (0.0, 1.0)})
def gdiff(s: StepScalars, state: dict, *, c: float = 0.5) -> tuple[float, float]:
    return float(c), 1.0 - c


@combination_rule("lossnorm", summary="loss normalization L_R/|L_R| - L_F/|L_F|: c_t/(1-c_t) = L_F/L_R",
                  bounds={"eps": (0.0, math.inf)})
def lossnorm(s: StepScalars, state: dict, *, eps: float = 1e-12) -> tuple[float, float]:
    # The gradient of L/|L| (|L| held constant) is g/|L|. eps only keeps a zero loss finite; it is
    # negligible against any real NLL.
    return 1.0 / (abs(s.loss_retain) + eps), 1.0 / (abs(s.loss_forget) + eps)


@combination_rule("rlw", summary="random loss weighting: c_t = softmax(l1, l2)[0], l_i ~ N(0, 1)")
def rlw(s: StepScalars, state: dict) -> tuple[float, float]:
    # Seeding from (trial seed, step) instead of carrying a generator makes the draw identical on
    # every worker and after a resume, with nothing to checkpoint.
    l1, l2 = np.random.default_rng([state["seed"], s.step]).standard_normal(2)
    c = 1.0 / (1.0 + math.exp(l2 - l1))  # e^l1 / (e^l1 + e^l2) without overflow
    return c, 1.0 - c
