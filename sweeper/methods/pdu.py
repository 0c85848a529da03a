"""PDU (Entesari et al. 2025, primal-dual unlearning) as a combination rule with state::

    rule = make_rule("pdu", {"eps": 0.5})
    w = rule.weights(s)        # (lambda_t, 1); the state now holds lambda_{t+1}

The forget objective is minimised (here: its negative ascended) subject to L_R <= eps. The Lagrangian
-L_F + lambda (L_R - eps) gives the update direction g = lambda g_R - g_F, i.e. (w_R, w_F) = (lambda, 1),
and dual ascent moves the multiplier by the constraint's violation::

    lambda_{t+1} = max(0, lambda_t + dual_lr (L_R,t - eps))

so the retain weight rises while the retain loss stays above the bound and falls (to 0 at least) once
it is below. As in GradNorm, the step is taken with the weight held before the update. The published
configuration requires eps (no default) and uses dual step size 1; here ``eps = 0`` (default) takes the
bound ``eps_factor`` x the first step's retain loss (1.1: stay within 10 % of the target's retain loss),
and ``eps > 0`` is the bound in the retain loss's own units.
"""
from __future__ import annotations

import math

from .registry import StepScalars, combination_rule

_NONNEG = (0.0, math.inf)


@combination_rule("pdu", summary="primal-dual: w_R = dual variable lambda, raised while L_R > eps; w_F = 1",
                  bounds={"eps": _NONNEG, "eps_factor": _NONNEG, "dual_lr": _NONNEG, "lambda0": _NONNEG})
def pdu(s: StepScalars, state: dict, *, eps: float = 0.0, eps_factor: float = 1.1, dual_lr: float = 1.0,
        lambda0: float = 1.0) -> tuple[float, float]:
    if state.get("step") == s.step:   # asked again for the same step: the same weights, no second dual step
        return tuple(state["w"])
    bound = state.setdefault("eps", float(eps) if eps > 0 else eps_factor * float(s.loss_retain))
    lam = state.setdefault("lambda", float(lambda0))
    state["lambda"] = max(0.0, lam + dual_lr * (float(s.loss_retain) - bound))
    state["step"], state["w"] = s.step, [lam, 1.0]
    return lam, 1.0
