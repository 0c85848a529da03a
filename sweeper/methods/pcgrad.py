"""PCGrad (Yu et al. 2020) for the two tasks "descend L_R" and "ascend L_F", in two forms.

The tasks' descent gradients are ``a = g_R`` and ``b = -g_F``; ``a.b = -dot`` with ``dot = g_R.g_F``.

``pcgrad``, the original two-sided projection: only when the tasks conflict (``a.b < 0``, i.e.
``dot > 0``) each gradient is projected onto the normal plane of the other, then they are summed::

    a' = a - (a.b/||b||^2) b = g_R - (dot/||g_F||^2) g_F
    b' = b - (a.b/||a||^2) a = -g_F + (dot/||g_R||^2) g_R
    a' + b' = (1 + dot/||g_R||^2) g_R - (1 + dot/||g_F||^2) g_F

so ``(w_R, w_F) = (1 + dot/||g_R||^2, 1 + dot/||g_F||^2)`` if ``dot > 0``, else ``(1, 1)`` (= a + b).
``dot > 0`` implies both norms are positive (Cauchy-Schwarz), so no division by zero can occur.

``pcgrad_paper``, the paper's closed form (Section 3.2, item 6): ``c_t/(1-c_t) = k`` with
``k = 1 + dot/||g_R||^2``. This is ``a + b'`` (only the forget gradient is projected, onto the
normal plane of g_R) applied whether or not the tasks conflict: ``a + b' = k g_R - g_F``, and
normalised to ``w_R + w_F = 1`` it is ``(k/(1+k), 1/(1+k))``::

    make_rule("pcgrad").weights(s)        # two-sided, conflict-gated
    make_rule("pcgrad_paper").weights(s)  # the paper's c_t
"""
from __future__ import annotations

from .registry import StepScalars, combination_rule


@combination_rule("pcgrad", summary="PCGrad (Yu et al. 2020): two-sided projection when g_R.g_F > 0")
def pcgrad(s: StepScalars, state: dict) -> tuple[float, float]:
    if s.dot <= 0:
        return 1.0, 1.0
    return 1.0 + s.dot / s.sq_norm_retain, 1.0 + s.dot / s.sq_norm_forget


@combination_rule("pcgrad_paper", summary="the paper's PCGrad closed form c_t/(1-c_t) = 1 + g_F.g_R/||g_R||^2")
def pcgrad_paper(s: StepScalars, state: dict) -> tuple[float, float]:
    """The paper's PCGrad c_t; the un-normalised ``(k, 1)`` when c_t would leave [0, 1].

    c_t = k/(1+k) lies in [0, 1] exactly when k >= 0, i.e. dot >= -||g_R||^2. For k < 0 the
    normalisation 1/(1+k) blows up at k = -1 and flips the direction for k < -1, so there we return
    ``(k, 1)``: the same direction ``k g_R - g_F`` the formula means, with ``Weights.c`` still equal
    to k/(1+k). Both branches give (0, 1) at k = 0, so the weights are continuous in the scalars.
    A zero g_R (hence dot = 0) projects nothing: k = 1.
    """
    k = 1.0 + (s.dot / s.sq_norm_retain if s.sq_norm_retain > 0 else 0.0)
    if k < 0:
        return k, 1.0
    return k / (1.0 + k), 1.0 / (1.0 + k)
