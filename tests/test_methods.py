"""Combination rules against their formulas and explicit vector constructions, and the registry.

Real vectors g_R, g_F in R^d are drawn, the five scalars derived from them, and the rule's direction
``w_R g_R - w_F g_F`` compared with what the paper (or the original method) builds from the vectors.
"""
from __future__ import annotations

import inspect
import json
import math
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sweeper.methods import (
    StepScalars,
    UnknownMethodError,
    Weights,
    combination_rule,
    import_plugins,
    known_rules,
    make_rule,
    validate_rule_params,
)
from sweeper.methods import registry
from sweeper.methods.ngdiff import ngdiff

# A decorator, not a profile: loading a profile here would change every other test module's settings.
fast = settings(max_examples=60, deadline=None)

BUILTINS = ["ga", "gd", "gdiff", "gradnorm", "imtlg", "lossnorm", "ngdiff", "pcgrad", "pcgrad_paper", "rlw"]


@st.composite
def grad_pairs(draw):
    """Two nonzero gradients of the same dimension (hypothesis finds parallel and opposite ones)."""
    d = draw(st.integers(1, 6))
    elems = st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
    g_r, g_f = draw(hnp.arrays(np.float64, d, elements=elems)), draw(hnp.arrays(np.float64, d, elements=elems))
    assume(g_r @ g_r > 1e-8 and g_f @ g_f > 1e-8)
    return g_r, g_f


losses = st.floats(0.01, 50)


def scalars(g_r, g_f, loss_retain=1.0, loss_forget=2.0, step=1) -> StepScalars:
    return StepScalars(step, loss_retain, loss_forget, float(g_r @ g_r), float(g_f @ g_f), float(g_r @ g_f))


def direction(w: Weights, g_r, g_f):
    return w.w_retain * g_r - w.w_forget * g_f


def weights(name, s, params=None, seed=0) -> Weights:
    return make_rule(name, params, seed).weights(s)


def assert_same_vector(actual, expected, w: Weights, g_r, g_f):
    # Rounding is relative to the summed terms, not to the (possibly cancelled) result.
    scale = abs(w.w_retain) * np.linalg.norm(g_r) + abs(w.w_forget) * np.linalg.norm(g_f)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9 * scale)


# ---------------------------------------------------------------- NGDiff (Lemma 4)


@fast
@given(grad_pairs())
def test_ngdiff_satisfies_lemma_4(pair):
    g_r, g_f = pair
    g = direction(weights("ngdiff", scalars(g_r, g_f)), g_r, g_f)
    # Eq. (7): g_R.g >= 0 >= g_F.g, up to rounding relative to the sizes involved.
    tol = 1e-9 * (1 + np.linalg.norm(g)) * max(np.linalg.norm(g_r), np.linalg.norm(g_f))
    assert g_r @ g >= -tol
    assert g_f @ g <= tol


def test_ngdiff_zero_gradient_stays_finite():
    w = weights("ngdiff", StepScalars(1, 1.0, 1.0, 0.0, 4.0, 0.0))
    assert math.isfinite(w.w_retain) and w.w_forget == pytest.approx(0.5)


# ---------------------------------------------------------------- each rule's formula


def _softmax_first(seed, step):
    l1, l2 = np.random.default_rng([seed, step]).standard_normal(2)
    return np.exp(l1) / (np.exp(l1) + np.exp(l2))


# NGDiff divides by norm + eps (a zero gradient must not divide by zero); with norms down to 1e-4, as
# grad_pairs draws them, eps = 1e-12 moves the weight by 1e-8 relative, more than the 1e-9 compared.
NGDIFF_EPS = inspect.signature(ngdiff).parameters["eps"].default

FORMULAS = {
    "ga": lambda g_r, g_f, lr, lf: (0.0, 1.0),
    "gd": lambda g_r, g_f, lr, lf: (1.0, 0.0),
    "gdiff": lambda g_r, g_f, lr, lf: (0.5, 0.5),
    "lossnorm": lambda g_r, g_f, lr, lf: (1 / lr, 1 / lf),
    "ngdiff": lambda g_r, g_f, lr, lf: (1 / (np.linalg.norm(g_r) + NGDIFF_EPS), 1 / (np.linalg.norm(g_f) + NGDIFF_EPS)),
    "rlw": lambda g_r, g_f, lr, lf: (_softmax_first(0, 1), 1 - _softmax_first(0, 1)),
    "imtlg": lambda g_r, g_f, lr, lf: (np.linalg.norm(g_f) / (np.linalg.norm(g_f) + np.linalg.norm(g_r)),
                                       np.linalg.norm(g_r) / (np.linalg.norm(g_f) + np.linalg.norm(g_r))),
    "gradnorm": lambda g_r, g_f, lr, lf: (1.0, 1.0),  # the first step uses the initial weights
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
@fast
@given(pair=grad_pairs(), lr=losses, lf=losses)
def test_rule_matches_its_formula(name, pair, lr, lf):
    g_r, g_f = pair
    w = weights(name, scalars(g_r, g_f, lr, lf))
    assert (w.w_retain, w.w_forget) == pytest.approx(FORMULAS[name](g_r, g_f, lr, lf), rel=1e-9)


@pytest.mark.parametrize("name", ["ga", "gd", "gdiff", "lossnorm", "ngdiff", "rlw", "imtlg", "gradnorm"])
@fast
@given(pair=grad_pairs(), lr=losses, lf=losses, step=st.integers(1, 10_000))
def test_c_t_in_unit_interval(name, pair, lr, lf, step):
    c = weights(name, scalars(*pair, lr, lf, step)).c
    assert 0.0 <= c <= 1.0


def test_lossnorm_ratio_is_loss_ratio():
    c = weights("lossnorm", StepScalars(1, 2.0, 6.0, 1.0, 1.0, 0.0)).c
    assert c / (1 - c) == pytest.approx(6.0 / 2.0)


def test_gdiff_special_cases():
    s = StepScalars(3, 1.0, 2.0, 4.0, 9.0, -1.0)
    assert weights("gdiff", s) == Weights(0.5, 0.5)  # vanilla GDiff
    assert weights("gdiff", s, {"c": 1.0}) == weights("gd", s)
    assert weights("gdiff", s, {"c": 0}) == weights("ga", s)
    w = weights("gdiff", s, {"c": 0.9})
    assert (w.w_retain, w.w_forget) == pytest.approx((0.9, 0.1))


# ---------------------------------------------------------------- PCGrad


def pcgrad_explicit(g_r, g_f):
    """Yu et al.: tasks a = g_R, b = -g_F; project each on the other's normal plane if they conflict."""
    a, b = g_r, -g_f
    if a @ b >= 0:
        return a + b
    return (a - (a @ b) / (b @ b) * b) + (b - (a @ b) / (a @ a) * a)


@fast
@given(grad_pairs())
def test_pcgrad_equals_explicit_projection(pair):
    g_r, g_f = pair
    w = weights("pcgrad", scalars(g_r, g_f))
    assert_same_vector(direction(w, g_r, g_f), pcgrad_explicit(g_r, g_f), w, g_r, g_f)


@fast
@given(grad_pairs())
def test_pcgrad_paper_equals_one_sided_projection(pair):
    g_r, g_f = pair
    a, b = g_r, -g_f
    projected = a + (b - (a @ b) / (a @ a) * a)  # = k g_R - g_F, k = 1 + g_F.g_R/||g_R||^2
    k = 1 + (g_f @ g_r) / (g_r @ g_r)
    w = weights("pcgrad_paper", scalars(g_r, g_f))
    # Normalised to w_R + w_F = 1 while c_t is in [0, 1]; the un-normalised (k, 1) otherwise.
    scale = 1 + k if k >= 0 else 1.0
    assert_same_vector(direction(w, g_r, g_f) * scale, projected, Weights(k, 1.0), g_r, g_f)
    if abs(1 + k) > 1e-6:
        assert w.c == pytest.approx(k / (1 + k), rel=1e-6, abs=1e-9)


def test_pcgrad_paper_outside_unit_interval_keeps_direction():
    g_r, g_f = np.array([1.0, 0.0]), np.array([-3.0, 1.0])  # k = 1 - 3 = -2: c_t would be 2
    w = weights("pcgrad_paper", scalars(g_r, g_f))
    assert (w.w_retain, w.w_forget) == (-2.0, 1.0)
    assert w.c == pytest.approx(2.0)


def test_pcgrad_no_conflict_is_plain_sum():
    assert weights("pcgrad", StepScalars(1, 1.0, 1.0, 1.0, 1.0, -0.5)) == Weights(1.0, 1.0)


# ---------------------------------------------------------------- IMTL-G


@fast
@given(grad_pairs())
def test_imtlg_closed_form_and_its_property(pair):
    g_r, g_f = pair
    u_r, u_f = g_r / np.linalg.norm(g_r), g_f / np.linalg.norm(g_f)
    w = weights("imtlg", scalars(g_r, g_f))
    assume(1 - u_r @ u_f > 1e-6)  # the paper's literal form is 0/0 for parallel unit vectors
    literal = g_f @ (u_f - u_r) / ((g_f - g_r) @ (u_f - u_r))
    assert w.c == pytest.approx(literal, rel=1e-6)
    g_prime = w.c * g_r + (1 - w.c) * g_f
    scale = np.linalg.norm(g_r) + np.linalg.norm(g_f)
    assert g_prime @ u_f == pytest.approx(g_prime @ u_r, abs=1e-9 * scale)
    # ... and the update itself descends R exactly as much as it ascends F, per unit vector.
    g = direction(w, g_r, g_f)
    assert g @ u_r == pytest.approx(-(g @ u_f), abs=1e-9 * scale)


def test_imtlg_parallel_gradients_give_zero_update():
    g_r = np.array([1.0, 2.0])
    g_f = 3 * g_r
    assert np.allclose(direction(weights("imtlg", scalars(g_r, g_f)), g_r, g_f), 0)
    assert weights("imtlg", StepScalars(1, 1.0, 1.0, 0.0, 0.0, 0.0)).c == 0.5


# ---------------------------------------------------------------- RLW


def test_rlw_is_seeded_per_step():
    s = [StepScalars(t, 1.0, 1.0, 1.0, 1.0, 0.0) for t in (1, 2, 3)]
    a, b = make_rule("rlw", seed=7), make_rule("rlw", seed=7)
    assert [a.weights(x) for x in s] == [b.weights(x) for x in s]
    # Stateless: a fresh rule (e.g. after resume, or on another worker) agrees at any step.
    assert make_rule("rlw", seed=7).weights(s[2]) == a.weights(s[2])
    assert len({a.weights(x).c for x in s}) == 3
    assert make_rule("rlw", seed=8).weights(s[0]) != a.weights(s[0])
    assert all(0 < a.weights(x).c < 1 for x in s)


# ---------------------------------------------------------------- GradNorm


def test_gradnorm_first_step_by_hand():
    rule = make_rule("gradnorm")
    # ||g_R|| = 2, ||g_F|| = 1, r = (1, 1): target G = 1.5, so w_R falls by 0.025*2 and w_F rises by 0.025*1.
    assert rule.weights(StepScalars(1, 1.0, 3.0, 4.0, 1.0, 0.0)) == Weights(1.0, 1.0)
    assert rule.state_dict()["w"] == pytest.approx([2 * 0.95 / 1.975, 2 * 1.025 / 1.975])


def test_gradnorm_forget_task_ahead_loses_weight():
    rule = make_rule("gradnorm")
    rule.load_state_dict({"seed": 0, "initial_losses": [1.0, 1.0], "w": [1.0, 1.0]})
    rule.weights(StepScalars(2, 1.0, 2.0, 1.0, 1.0, 0.0))  # L_F doubled: the maximised task is ahead
    w_r, w_f = rule.state_dict()["w"]
    assert w_f < 1.0 < w_r


steps = st.lists(st.tuples(grad_pairs(), losses, losses), min_size=2, max_size=12)


@fast
@given(steps, st.sampled_from([0.025, 0.5, 5.0]), st.sampled_from([0.5, 1.5]))
def test_gradnorm_weights_stay_valid_and_resume(seq, lr_w, alpha):
    params = {"lr_w": lr_w, "alpha": alpha}
    rule, half = make_rule("gradnorm", params), len(seq) // 2
    data = [scalars(*pair, lr, lf, t + 1) for t, (pair, lr, lf) in enumerate(seq)]
    used = [rule.weights(s) for s in data[:half]]
    ckpt = json.loads(json.dumps(rule.state_dict()))
    used += [rule.weights(s) for s in data[half:]]
    for w in used:
        assert w.w_retain >= 0 and w.w_forget >= 0
        assert w.w_retain + w.w_forget == pytest.approx(2.0)
    resumed = make_rule("gradnorm", params)
    resumed.load_state_dict(ckpt)
    assert [resumed.weights(s) for s in data[half:]] == used[half:]


# ---------------------------------------------------------------- registry


def test_builtins_registered_and_state_is_json():
    assert set(BUILTINS) <= set(known_rules())
    s = StepScalars(1, 1.0, 2.0, 1.0, 4.0, 0.5)
    for name in BUILTINS:
        rule = make_rule(name, seed=3)
        rule.weights(s)
        assert json.loads(json.dumps(rule.state_dict()))["seed"] == 3


def test_params_include_defaults():
    assert make_rule("gdiff").params == {"c": 0.5}
    assert make_rule("gradnorm", {"alpha": 2.0}).params["alpha"] == 2.0


def test_unknown_method_names_known_and_closest():
    with pytest.raises(UnknownMethodError) as e:
        make_rule("ngdif")
    assert isinstance(e.value, ValueError)
    msg = str(e.value)
    assert msg.startswith("unknown method 'ngdif'; known methods: ") and "ga, gd, gdiff" in msg
    assert msg.endswith("did you mean 'ngdiff'?")
    assert validate_rule_params("ngdif", {}) == [msg]
    assert "did you mean" not in validate_rule_params("zzzzzz", {})[0]


def test_bad_params_messages():
    assert validate_rule_params("gdiff", {"c": 1.5}) == ["method 'gdiff': c = 1.5 is outside [0, 1]"]
    assert validate_rule_params("ngdiff", {"cc": 1}) == [
        "method 'ngdiff' has no parameter 'cc'; its parameters are: eps"]
    assert validate_rule_params("ga", {"c": 1}) == ["method 'ga' has no parameter 'c'; its parameters are: (none)"]
    assert validate_rule_params("gdiff", {"c": "high"}) == ["method 'gdiff': c = 'high' is not a number"]
    assert validate_rule_params("gdiff", {"c": float("nan")}) != []
    assert validate_rule_params("gdiff", {"c": 0.3}) == []
    with pytest.raises(ValueError, match="outside"):
        make_rule("gdiff", {"c": -0.1})
    with pytest.raises(ValueError, match="non-negative integer"):
        make_rule("rlw", seed=-1)


def test_weights_c_nan_when_both_zero():
    assert math.isnan(Weights(0.0, 0.0).c)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Rules registered inside the test vanish afterwards."""
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("my_methods"):
            del sys.modules[name]


PLUGIN = '''
from sweeper.methods import StepScalars, combination_rule

@combination_rule("double_gd", bounds={"factor": (0.0, 10.0)})
def double_gd(s: StepScalars, state: dict, *, factor: float = 2.0) -> tuple[float, float]:
    """Gradient descent on the retain set, scaled."""
    return factor, 0.0
'''


def test_plugin_module_registers_a_usable_rule(tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "my_methods_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import_plugins(["my_methods_plugin"])
    assert "double_gd" in known_rules()
    assert registry.rule_summaries()["double_gd"] == "Gradient descent on the retain set, scaled."
    assert make_rule("double_gd", {"factor": 3.0}).weights(StepScalars(1, 1, 1, 1, 1, 0)) == Weights(3.0, 0.0)
    assert validate_rule_params("double_gd", {"factor": 11}) == [
        "method 'double_gd': factor = 11 is outside [0, 10]"]
    import_plugins(["my_methods_plugin"])  # importing twice is harmless


def test_missing_plugin_is_named():
    with pytest.raises(ValueError, match="plugin module 'no_such_methods_mod'"):
        import_plugins(["no_such_methods_mod"])


def test_registration_clashes_and_missing_defaults(isolated_registry):
    with pytest.raises(ValueError, match="already registered"):
        combination_rule("gdiff")(lambda s, state: (1.0, 1.0))
    with pytest.raises(TypeError, match="needs a default"):
        @combination_rule("nodefault")
        def nodefault(s, state, *, c):
            return c, 1 - c
    with pytest.raises(TypeError, match="not its parameters"):
        combination_rule("badbounds", bounds={"x": (0, 1)})(lambda s, state: (1.0, 1.0))
