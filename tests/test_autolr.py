"""AutoLR (the paper's Algorithm 1 / Appendix C) against exact quadratics.

Along the update direction d, a quadratic loss L(theta) = 0.5 (theta - theta*)^T A (theta - theta*) is an
exact parabola f(x) = L(theta0 - x d) = L0 - x g.d + x^2/2 d^T A d, so the three-point fit must recover
its slope -g.d and curvature d^T A d exactly (up to float64 rounding), and the accepted learning rate
must be Eq. (8)'s minimiser g.d / d^T A d (with SGD, d = g: g^T g / g^T A g).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from sweeper.unlearn.autolr import AutoLR, AutoLRConfig, QuadraticFit, fit_quadratic, propose_lr

# No clipping, no smoothing: eta_new is the raw minimiser.
RAW = AutoLRConfig(every=1, clip_low=1e-12, clip_high=1e12, smoothing=0.0)


# --- the fit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,c,xi", [(3.0, -2.0, 5.0, 0.1), (0.5, 4.0, -1.0, 2.0), (-7.0, 0.0, 2.5, 1e-2)])
def test_fit_quadratic_recovers_slope_and_curvature(a, b, c, xi):
    f = lambda x: c + b * x + 0.5 * a * x * x  # slope b, curvature a at 0
    fit = fit_quadratic(f(-xi), f(0.0), f(xi), xi)
    assert fit.slope == pytest.approx(b, rel=1e-9, abs=1e-9)
    assert fit.curvature == pytest.approx(a, rel=1e-9)
    assert fit.minimiser == pytest.approx(-b / a, rel=1e-9, abs=1e-9)


def test_minimiser_undefined_without_curvature():
    assert math.isnan(QuadraticFit(slope=-1.0, curvature=0.0).minimiser)


# --- helpers ----------------------------------------------------------------------------------------

def _spd(n: int, seed: int, negate: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)
    return -a if negate else a


def _quadratic_problem(n=6, seed=0, negate=False, lr=0.05):
    """theta (one float64 vector), A, theta*, the SGD optimizer, its gradient g and the loss closure."""
    a = _spd(n, seed, negate)
    gen = torch.Generator().manual_seed(seed + 100)
    theta_star = torch.randn(n, generator=gen, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))

    def loss() -> float:
        with torch.no_grad():
            r = theta - theta_star
            return float(0.5 * r @ a @ r)

    g = (a @ (theta.detach() - theta_star)).clone()
    theta.grad = g.clone()
    opt = torch.optim.SGD([theta], lr=lr)
    return theta, a, theta_star, opt, g, loss


# --- SGD on an exact quadratic: Eq. (8) exactly ------------------------------------------------------

@pytest.mark.parametrize("lr", [1e-3, 0.05, 1.0])
@pytest.mark.parametrize("probe_scale", [1.0, 0.25])
def test_sgd_exact_quadratic_lands_on_eq8_minimiser(lr, probe_scale):
    theta, a, _, opt, g, loss = _quadratic_problem(lr=lr)
    theta0 = theta.detach().clone()
    cfg = AutoLRConfig(every=1, probe_scale=probe_scale, clip_low=1e-12, clip_high=1e12, smoothing=0.0)
    res = AutoLR(cfg).step([theta], opt, loss)
    eta_star = float(g @ g / (g @ a @ g))          # Eq. (8) with g_NGDiff replaced by d = g
    assert res.status == "accepted"
    assert res.lr_before == lr
    assert res.slope == pytest.approx(-float(g @ g), rel=1e-7)
    assert res.curvature == pytest.approx(float(g @ a @ g), rel=1e-7)
    assert res.eta_star == pytest.approx(eta_star, rel=1e-7)
    assert res.lr_after == pytest.approx(eta_star, rel=1e-7)
    assert opt.param_groups[0]["lr"] == res.lr_after
    torch.testing.assert_close(theta.detach(), theta0 - res.lr_after * g, rtol=1e-10, atol=1e-12)
    # and that point is the exact line minimum: the new gradient is orthogonal to g
    new_grad = a @ (theta.detach() - _quadratic_problem(lr=lr)[2])
    assert abs(float(new_grad @ g)) < 1e-8 * float(g @ g)


def test_loss_at_theta_is_reused_and_gives_the_same_step():
    theta, a, _, opt, g, loss = _quadratic_problem()
    l0 = loss()
    calls = []
    res = AutoLR(RAW).step([theta], opt, lambda: calls.append(1) or loss(), loss_at_theta=l0)
    assert len(calls) == 2  # L+ and L- only
    assert res.lr_after == pytest.approx(float(g @ g / (g @ a @ g)), rel=1e-7)


# --- default clipping and smoothing (GeN's rule) -----------------------------------------------------

@pytest.mark.parametrize("lr", [1e-3, 0.02, 0.1, 0.15, 0.3, 5.0])
def test_default_clip_and_smoothing(lr):
    theta, a, _, opt, g, loss = _quadratic_problem(lr=lr)
    theta0 = theta.detach().clone()
    cfg = AutoLRConfig(every=10)
    res = AutoLR(cfg).step([theta], opt, loss)
    eta_star = float(g @ g / (g @ a @ g))
    expected = 0.9 * lr + 0.1 * min(max(eta_star, lr / 2), 2 * lr)
    assert res.status == "accepted"
    assert res.eta_star == pytest.approx(eta_star, rel=1e-7)
    assert res.lr_after == pytest.approx(expected, rel=1e-9)
    torch.testing.assert_close(theta.detach(), theta0 - res.lr_after * g, rtol=1e-10, atol=1e-12)


def test_default_clip_cases_are_all_exercised():
    """The lr values above cover eta* below lr/2, inside [lr/2, 2 lr] and above 2 lr."""
    _, a, _, _, g, _ = _quadratic_problem()
    eta_star = float(g @ g / (g @ a @ g))
    lrs = [1e-3, 0.02, 0.1, 0.15, 0.3, 5.0]
    assert any(eta_star > 2 * lr for lr in lrs)
    assert any(eta_star < lr / 2 for lr in lrs)
    assert any(lr / 2 <= eta_star <= 2 * lr for lr in lrs)


def test_propose_lr_min_max_floor():
    fit = QuadraticFit(slope=-1.0, curvature=1.0)   # eta* = 1
    assert propose_lr(fit, 0.6, AutoLRConfig(smoothing=0.0))[0] == pytest.approx(1.0)
    assert propose_lr(fit, 0.6, AutoLRConfig(smoothing=0.0, max_lr=0.8))[0] == pytest.approx(0.8)
    assert propose_lr(fit, 0.1, AutoLRConfig(smoothing=0.0, min_lr=0.5))[0] == pytest.approx(0.5)
    assert propose_lr(QuadraticFit(math.nan, 1.0), 0.1, AutoLRConfig()) == (0.1, "rejected: non-finite probe loss")


# --- rejections (Remark 4.1): eta is kept, the step is the plain one ----------------------------------

def test_concave_loss_keeps_lr():
    lr = 0.01
    theta, a, _, opt, g, loss = _quadratic_problem(negate=True, lr=lr)
    theta0 = theta.detach().clone()
    res = AutoLR(RAW).step([theta], opt, loss)
    assert res.status == "rejected: curvature <= 0"
    assert res.curvature < 0
    assert res.lr_after == lr and opt.param_groups[0]["lr"] == lr
    torch.testing.assert_close(theta.detach(), theta0 - lr * g, rtol=1e-12, atol=1e-12)


def test_ascending_direction_keeps_lr():
    lr = 0.01
    theta, a, _, opt, g, loss = _quadratic_problem(lr=lr)
    theta.grad = -g.clone()                      # d = -g: the step ascends L_R
    theta0 = theta.detach().clone()
    res = AutoLR(RAW).step([theta], opt, loss)
    assert res.status == "rejected: direction does not descend L_R"
    assert res.slope == pytest.approx(float(g @ g), rel=1e-7)   # slope = -g.d = +|g|^2 > 0
    assert res.lr_after == lr and opt.param_groups[0]["lr"] == lr
    torch.testing.assert_close(theta.detach(), theta0 + lr * g, rtol=1e-12, atol=1e-12)


def test_due_every_k():
    auto = AutoLR(AutoLRConfig(every=10))
    assert [t for t in range(1, 31) if auto.due(t)] == [10, 20, 30]


# --- any base optimizer: stepped exactly once, step rescaled to the new lr ----------------------------

def _make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]


def _make_opt(name, params, lr):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    if name == "adam_l2":
        return torch.optim.Adam(params, lr=lr, weight_decay=0.05)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


@pytest.mark.parametrize("name", ["adam", "adamw", "adam_l2", "sgd_momentum"])
def test_optimizer_stepped_once_and_step_rescaled(name):
    lr = 0.01
    params = _make_params()
    opt = _make_opt(name, params, lr)
    gen = torch.Generator().manual_seed(1)
    targets = [torch.randn(p.shape, generator=gen) for p in params]
    weights = [torch.rand(p.shape, generator=gen) + 0.5 for p in params]

    def loss_tensor(ps):
        return sum((w * (p - t) ** 2).sum() for p, t, w in zip(ps, targets, weights))

    def set_grad(ps):
        for p in ps:
            p.grad = None
        loss_tensor(ps).backward()

    for _ in range(3):  # non-trivial optimizer state first
        set_grad(params)
        opt.step()
    set_grad(params)

    twin_params, twin_opt = copy.deepcopy((params, opt))
    for tp, p in zip(twin_params, params):  # deepcopy does not copy .grad
        tp.grad = p.grad.clone()
    assert twin_opt.param_groups[0]["params"][0] is twin_params[0]
    theta0 = [p.detach().clone() for p in params]
    twin_opt.step()                                     # the plain step
    delta_plain = [tp.detach() - t0 for tp, t0 in zip(twin_params, theta0)]

    seen = []

    def retain_loss():
        seen.append([p.detach().clone() for p in params])
        with torch.no_grad():
            return float(loss_tensor(params))

    res = AutoLR(AutoLRConfig(every=1, clip_low=0.1, clip_high=10.0, smoothing=0.0)).step(params, opt, retain_loss)
    assert res.status == "accepted"
    assert res.lr_after != pytest.approx(lr, rel=1e-3)  # the rescaling is really exercised

    # the same loss closure at the three points theta0 + Delta, theta0 - Delta, theta0
    assert len(seen) == 3
    for point, sign in zip(seen, (1.0, -1.0, 0.0)):
        for p, t0, d in zip(point, theta0, delta_plain):
            torch.testing.assert_close(p, t0 + sign * d, rtol=1e-5, atol=1e-6)

    # the optimizer state advanced exactly once, exactly as the plain step
    for p, tp in zip(params, twin_params):
        s, ts = opt.state[p], twin_opt.state[tp]
        assert set(s) == set(ts)
        for key in s:
            if torch.is_tensor(s[key]):
                assert torch.equal(s[key], ts[key]), key
            else:
                assert s[key] == ts[key], key
    # parameters: theta0 + (eta_new / eta) Delta_plain
    ratio = res.lr_after / lr
    for p, t0, d in zip(params, theta0, delta_plain):
        torch.testing.assert_close(p.detach(), t0 + ratio * d, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["lr"] == res.lr_after


# --- config validation -------------------------------------------------------------------------------

def test_default_config_is_valid():
    assert AutoLRConfig().problems() == []
    assert AutoLRConfig(every=1, probe_scale=0.5, clip_low=1.0, clip_high=1.0, smoothing=0.0).problems() == []


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(every=0), "autolr.every = 0 must be an integer >= 1"),
    (dict(every=2.5), "autolr.every = 2.5 must be an integer >= 1"),
    (dict(every=True), "autolr.every = True must be an integer >= 1"),
    (dict(probe_scale=0), "autolr.probe_scale = 0 must be a number > 0"),
    (dict(probe_scale="big"), "autolr.probe_scale = 'big' must be a number > 0"),
    (dict(clip_low=0.0), "0 < clip_low <= 1 <= clip_high"),
    (dict(clip_low=1.5, clip_high=2.0), "autolr clip [1.5, 2.0]"),
    (dict(clip_high=0.8), "0 < clip_low <= 1 <= clip_high"),
    (dict(smoothing=1), "autolr.smoothing = 1 must be a number in [0, 1)"),
    (dict(smoothing=-0.1), "autolr.smoothing = -0.1 must be a number in [0, 1)"),
    (dict(smoothing=None), "autolr.smoothing = None"),
    (dict(min_lr=-1e-3), "0 <= min_lr < max_lr"),
    (dict(min_lr=1.0, max_lr=0.5), "min_lr = 1.0, max_lr = 0.5"),
])
def test_config_problems(kwargs, fragment):
    problems = AutoLRConfig(**kwargs).problems()
    assert len(problems) == 1, problems
    assert fragment in problems[0]


def test_config_problems_all_reported():
    assert len(AutoLRConfig(every=0, probe_scale=-1, smoothing=2).problems()) == 3
