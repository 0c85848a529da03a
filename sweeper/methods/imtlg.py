"""IMTL-G (Liu et al. 2021) in the paper's closed form (Section 3.2, item 7)::

    c_t = g_F.(u_F - u_R) / ((g_F - g_R).(u_F - u_R)),   u_i = g_i/||g_i||

    make_rule("imtlg").weights(s)   # Weights(c_t, 1 - c_t)

It is the c for which ``g' = c g_R + (1-c) g_F`` has equal projections on both unit vectors,
``g'.u_F = g'.u_R``. From the scalars alone, with ``cos = dot/(||g_R|| ||g_F||)``::

    numerator   = ||g_F|| - dot/||g_R||                                = ||g_F|| (1 - cos)
    denominator = ||g_F|| - dot/||g_R|| - dot/||g_F|| + ||g_R|| = (||g_F|| + ||g_R||) (1 - cos)
    c_t         = ||g_F|| / (||g_F|| + ||g_R||)          (whenever cos != 1)

So for two tasks IMTL-G's c_t is NGDiff's c_t (only the scale differs: w_R + w_F = 1 here) and lies
in [0, 1]. We use the simplified form: it is the closed form wherever that is defined, and it is
not computed as a difference of nearly equal numbers when g_R and g_F are nearly parallel. At the
0/0 case (u_F = u_R, where every c satisfies the property) it is the continuous limit, which makes
the update ``c g_R - (1-c) g_F`` zero: no direction improves both tasks there. Only when both
gradients are zero, where the update is zero anyway, c_t = 0.5.
"""
from __future__ import annotations

from .registry import StepScalars, combination_rule


@combination_rule("imtlg", summary="IMTL-G closed form; for two tasks c_t = ||g_F|| / (||g_F|| + ||g_R||)")
def imtlg(s: StepScalars, state: dict) -> tuple[float, float]:
    total = s.norm_forget + s.norm_retain
    c = s.norm_forget / total if total > 0 else 0.5
    return c, 1.0 - c
