"""The field's forget objectives, retain losses and PDU against independent computations.

Each objective is fed a hand-built ``Forward`` on small tensors and compared with its formula written out
with Python loops and ``math`` (no shared code with the objective); properties: SimNPO's gamma and delta,
UNDIAL at the target is the KL of the adjusted distribution, RMU's retain loss is 0 at the target's
activations, PDU's dual rises while the retain loss is above eps.
"""
from __future__ import annotations

import math

import pytest
import torch

from sweeper.data.refusals import REFUSALS, idk_rows, refusal
from sweeper.methods import StepScalars, make_rule
from sweeper.methods.forward import Forward, resolve_layer, run_forward
from sweeper.methods.objectives import get_objective, objective_problem
from sweeper.methods.rmu import direction
from sweeper.models.language import build_model
from sweeper.models.lm import sequence_logprobs

B, T, V, D = 2, 4, 5, 3


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def _fake(seed: int = 0) -> Forward:
    """Logits, labels and a ragged answer mask (row 0: 3 answer positions, row 1: 2)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    token_logprob = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask
    return Forward(seq_logprob=token_logprob.sum(-1), n_tokens=mask.sum(-1), token_logprob=token_logprob,
                   mask=mask, labels=labels, logits=logits,
                   hidden=torch.randn(B, T, D, generator=g, dtype=torch.float64), seed=seed)


def _softmax(row) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def _positions(f):
    return [(b, t) for b in range(B) for t in range(T) if f.mask[b, t]]


def _per_row(f, per_token) -> list[float]:
    out = [0.0] * B
    for b, t in _positions(f):
        out[b] += per_token(b, t)
    return out


def _check(values: torch.Tensor, expected: list[float]):
    assert values.shape == (B,)
    for v, e in zip(values.tolist(), expected):
        assert v == pytest.approx(e, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ sequence-level objectives


def test_simnpo_formula_gamma_and_delta():
    f = _fake()
    fn = get_objective("simnpo").fn
    for beta, gamma, delta in ((4.5, 1.0, 0.0), (2.0, 1.0, 0.3), (4.5, 0.125, 0.0)):
        expected = []
        for b in range(B):
            mean_nll = -sum(f.token_logprob[b].tolist()) / int(f.mask[b].sum())
            x = beta * (mean_nll - delta)
            expected.append(gamma * (2 / beta) * math.log(1 / (1 + math.exp(-x))))
        _check(fn(f, beta=beta, gamma=gamma, delta=delta), expected)
    # the published defaults: beta 4.5, gamma 0.125, delta 0; gamma only scales
    torch.testing.assert_close(fn(f), 0.125 * fn(f, gamma=1.0))


def test_npo_and_idk_objectives():
    f = _fake()
    f.ref_logprob = f.seq_logprob.detach() + torch.tensor([0.5, -1.0], dtype=torch.float64)
    alt = _fake(1)
    alt.ref_logprob = alt.seq_logprob.detach() - 0.25
    f.alt = alt
    beta = 0.1
    npo = [(2 / beta) * math.log(1 / (1 + math.exp(beta * (lp - r))))
           for lp, r in zip(f.seq_logprob.tolist(), f.ref_logprob.tolist())]
    _check(get_objective("npo").fn(f, beta=beta), npo)
    _check(get_objective("idknll").fn(f), alt.seq_logprob.tolist())
    dpo = []
    for b in range(B):
        win = alt.seq_logprob[b].item() - alt.ref_logprob[b].item()
        lose = f.seq_logprob[b].item() - f.ref_logprob[b].item()
        dpo.append((2 / beta) * math.log(1 / (1 + math.exp(-beta * (win - lose)))))
    _check(get_objective("idkdpo").fn(f), dpo)
    assert get_objective("idknll").unit == "alternate_tokens" and get_objective("idkdpo").unit == "sequences"


# ------------------------------------------------------------------ token-weighted ascent, CE-U


@pytest.mark.parametrize("name,params,weight", [
    ("wga", {"beta": 1.0}, lambda p: p),
    ("wga", {"beta": 2.5}, lambda p: p ** 2.5),
    ("satimp", {}, lambda p: p ** 5 * (1 - p)),
    ("satimp", {"beta1": 1.0, "beta2": 3.0}, lambda p: p * (1 - p) ** 3),
])
def test_weighted_ascent(name, params, weight):
    f = _fake()
    f.token_logprob.requires_grad_(True)

    def nll(b, t):
        return -math.log(_softmax(f.logits[b, t].tolist())[int(f.labels[b, t])])

    expected = _per_row(f, lambda b, t: weight(math.exp(-nll(b, t))) * nll(b, t))
    values = get_objective(name).fn(f, **params)
    _check(values, expected)
    # the weight is detached: d value / d log p_t = -w_t
    values.sum().backward()
    for b, t in _positions(f):
        assert f.token_logprob.grad[b, t].item() == pytest.approx(-weight(math.exp(-nll(b, t))), rel=1e-9)


def test_ce_u_against_a_loop():
    f = _fake()

    def ce(b, t):
        z, y = f.logits[b, t].tolist(), int(f.labels[b, t])
        p = _softmax(z)
        rest = sum(math.exp(z[j]) for j in range(V) if j != y)
        q = [0.0 if j == y else math.exp(z[j]) / rest for j in range(V)]
        return -sum(q[j] * math.log(p[j]) for j in range(V))

    _check(get_objective("ce_u").fn(f), [-x for x in _per_row(f, ce)])


# ------------------------------------------------------------------ UNDIAL, retain KL, RMU


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_undial_at_the_target_is_the_kl_of_the_adjusted_distribution():
    f = _fake()
    f.target_logits = f.logits[f.mask].clone()   # packed: the answer positions only
    beta = 10.0

    def kl(b, t):
        z, y = f.logits[b, t].tolist(), int(f.labels[b, t])
        adjusted = [x - beta if j == y else x for j, x in enumerate(z)]
        return _kl(_softmax(adjusted), _softmax(z))

    _check(get_objective("undial").fn(f, beta=beta), [-x for x in _per_row(f, kl)])
    # away from the target: KL(q || p) with q from the target's logits and p the model's
    target = f.logits.clone()
    f.logits = f.logits + torch.randn(B, T, V, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def kl_moved(b, t):
        zt, y = target[b, t].tolist(), int(f.labels[b, t])
        q = _softmax([x - 3.0 if j == y else x for j, x in enumerate(zt)])
        return _kl(q, _softmax(f.logits[b, t].tolist()))

    _check(get_objective("undial").fn(f, beta=3.0), [-x for x in _per_row(f, kl_moved)])


def test_retain_kl():
    f = _fake()
    target = torch.randn(B, T, V, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    f.target_logits = target[f.mask]
    kl = get_objective("kl", side="retain").fn
    expected = _per_row(f, lambda b, t: _kl(_softmax(target[b, t].tolist()), _softmax(f.logits[b, t].tolist())))
    _check(kl(f), expected)
    f.target_logits = f.logits[f.mask].clone()
    assert kl(f).abs().max().item() < 1e-12


def test_rmu_forget_and_retain():
    f = _fake(2)
    u = direction(D, f.seed)
    assert u.norm().item() == pytest.approx(1.0) and torch.equal(u, direction(D, f.seed))
    assert bool((u >= 0).all()) and not torch.equal(u, direction(D, f.seed + 1))
    coeff = 2.0

    def sq(b, t, other):
        return sum((f.hidden[b, t, d].item() - other[d]) ** 2 for d in range(D)) / D

    steer = [coeff * x for x in u.tolist()]
    _check(get_objective("rmu").fn(f, coeff=coeff), [-x for x in _per_row(f, lambda b, t: sq(b, t, steer))])
    target = torch.randn(B, T, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    f.target_hidden = target[f.mask]
    retain = get_objective("rmu", side="retain").fn
    _check(retain(f), _per_row(f, lambda b, t: sq(b, t, target[b, t].tolist())))
    f.target_hidden = f.hidden[f.mask].clone()   # at the target's activations the retain loss is 0
    assert retain(f).abs().max().item() == 0.0


def test_resolve_layer_rule():
    assert resolve_layer("auto", 32) == 7 and resolve_layer("auto", 8) == 7
    assert resolve_layer("auto", 7) == 3 and resolve_layer("auto", 2) == 1 and resolve_layer(0, 2) == 0
    with pytest.raises(ValueError, match="layer = 7 is not a block of this model, which has 2"):
        resolve_layer(7, 2)


# ------------------------------------------------------------------ the forward pass itself


def test_run_forward_matches_sequence_logprobs_and_hidden_states():
    torch.manual_seed(0)
    model = build_model("tiny-llama", vocab_size=40, pad_id=0, eos_id=1, seed=0).eval()
    ids = torch.randint(2, 40, (2, 7))
    labels = ids.clone()
    labels[:, :3] = -100
    labels[1, 5:] = -100
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    with torch.no_grad():
        seq, n = sequence_logprobs(model, batch)
        f = run_forward(model, batch, {"tokens", "hidden"}, logprobs=sequence_logprobs, layer=0)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    assert torch.equal(f.seq_logprob, seq) and torch.equal(f.n_tokens, n)
    assert torch.equal(f.mask, labels[:, 1:] != -100)
    # block 0's output is hidden_states[1]; position t predicts label t + 1
    torch.testing.assert_close(f.hidden[f.mask], out.hidden_states[1][:, :-1][f.mask].float())
    only_seq = run_forward(model, batch, {"sequence"}, logprobs=lambda m, b: (seq * 0 + 7, n))
    assert only_seq.token_logprob is None and only_seq.seq_logprob.eq(7).all()   # the task's own function


# ------------------------------------------------------------------ validation, refusals, PDU


def test_objective_params_are_checked():
    assert "unknown forget_loss 'simnpoo'" in objective_problem("simnpoo", {})
    assert "did you mean 'simnpo'" in objective_problem("simnpoo", {})
    assert objective_problem("wga", {"beta1": 1}).startswith("forget_loss 'wga' has no parameter 'beta1'")
    assert "beta = 0 must be a positive number" in objective_problem("undial", {"beta": 0})
    assert "layer = -1 must be a block index >= 0 or 'auto'" in objective_problem("rmu", {"layer": -1})
    assert objective_problem("rmu", {"layer": 3, "coeff": 6.5}) is None
    assert "unknown retain_loss 'kll'" in objective_problem("kll", {}, side="retain")


def test_refusals():
    assert len(REFUSALS) >= 50 and len(set(REFUSALS)) == len(REFUSALS)
    assert all(r.strip() and r[0].isupper() for r in REFUSALS)
    rows = [{"question": f"q{i}", "answer": "a", "id": i} for i in range(60)]
    out = idk_rows(rows, seed=3)
    assert out == idk_rows(rows, seed=3) and [r["id"] for r in out] == list(range(60))
    assert all(r["answer"] in REFUSALS for r in out) and len({r["answer"] for r in out}) >= 50
    assert refusal(0, 3) == out[0]["answer"] and rows[0]["answer"] == "a"


def _s(step: int, loss_retain: float) -> StepScalars:
    return StepScalars(step, loss_retain, 1.0, 1.0, 1.0, 0.0)


def test_pdu_dual_rises_while_retain_loss_is_above_eps():
    rule = make_rule("pdu", {"eps": 0.5, "dual_lr": 0.2, "lambda0": 1.0})
    lam = 1.0
    for t, lr_ in enumerate([0.9, 0.8, 0.7, 0.6, 0.55], start=1):   # above eps: the weight rises
        w = rule.weights(_s(t, lr_))
        assert (w.w_retain, w.w_forget) == (pytest.approx(lam), 1.0)
        new = lam + 0.2 * (lr_ - 0.5)
        assert new > lam
        lam = new
    assert rule.weights(_s(5, 0.55)).w_retain == pytest.approx(lam - 0.2 * 0.05)   # same step: no second update
    ckpt = rule.state_dict()
    for t in range(6, 40):                                   # below eps: it falls, and stops at 0
        w = rule.weights(_s(t, 0.1))
    assert w.w_retain == 0.0
    resumed = make_rule("pdu", {"eps": 0.5, "dual_lr": 0.2, "lambda0": 1.0})
    resumed.load_state_dict(ckpt)
    assert resumed.weights(_s(6, 0.1)).w_retain == pytest.approx(lam)
    # eps = 0: the bound is eps_factor x the first step's retain loss
    auto = make_rule("pdu", {"eps_factor": 2.0, "dual_lr": 1.0})
    auto.weights(_s(1, 1.0))
    assert auto.state_dict()["eps"] == 2.0 and auto.state_dict()["lambda"] == 0.0
