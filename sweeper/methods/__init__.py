"""Combination rules: each method's weights in ``g = w_R g_R - w_F g_F``.

    from sweeper.methods import StepScalars, known_rules, make_rule

    known_rules()   # ['ga', 'gd', 'gdiff', 'gradnorm', 'imtlg', 'lossnorm', 'ngdiff', 'pcgrad', ...]
    rule = make_rule("ngdiff", seed=0)
    w = rule.weights(StepScalars(step=1, loss_retain=1.2, loss_forget=2.5,
                                 sq_norm_retain=4.0, sq_norm_forget=1.0, dot=0.5))
    w.w_retain, w.w_forget, w.c   # 0.5, 1.0, 1/3

Importing this package registers every built-in rule (one module per family); the API is
in ``registry``.
"""
from . import gradnorm, imtlg, ngdiff, pcgrad, pdu, scalarization  # noqa: F401  (they register on import)
from .registry import (
    CombinationRule,
    StepScalars,
    UnknownMethodError,
    Weights,
    combination_rule,
    import_plugins,
    known_rules,
    make_rule,
    rule_summaries,
    validate_rule_params,
)

__all__ = [
    "CombinationRule",
    "StepScalars",
    "UnknownMethodError",
    "Weights",
    "combination_rule",
    "import_plugins",
    "known_rules",
    "make_rule",
    "rule_summaries",
    "validate_rule_params",
]
