"""NGDiff, the paper's normalized gradient difference (Section 4.2, Algorithm 2).

``g = g_R/||g_R|| - g_F/||g_F||``, i.e. ``c_t = (1/||g_R||) / (1/||g_R|| + 1/||g_F||)``::

    make_rule("ngdiff").weights(s)   # Weights(1/||g_R||, 1/||g_F||)

By Lemma 4 this direction always satisfies Eq. (7), ``g_R.g >= 0 >= g_F.g``: the step (for a
small enough learning rate) lowers L_R and raises L_F at the same time.
"""
from __future__ import annotations

import math

from .registry import StepScalars, combination_rule


@combination_rule("ngdiff", summary="normalized gradient difference g_R/||g_R|| - g_F/||g_F||",
                  bounds={"eps": (0.0, math.inf)})
def ngdiff(s: StepScalars, state: dict, *, eps: float = 1e-12) -> tuple[float, float]:
    # eps: a zero gradient (e.g. a fully forgotten batch) must not divide by zero; 1e-12 is far
    # below the norm of any real gradient, so it never changes a real step.
    return 1.0 / (s.norm_retain + eps), 1.0 / (s.norm_forget + eps)
