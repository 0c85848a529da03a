"""The unlearning loop in one process, against gradients computed independently with torch.autograd.

A tiny GPT-2 twin, a tokenizer trained on the rows, 6 fictitious authors x 5 QA; the forget set is the
last author. Gradients are recomputed by hand on the exact batches the loop used (the loop's
``StepBatches`` is deterministic), so the flat-buffer plumbing, the rule weights and the update
``g = w_R g_R - w_F g_F`` are checked against the paper's formulas, not against the loop itself.
"""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.synthetic import make_authors, qa_rows
from sweeper.data.tokenizer import train_tokenizer
from sweeper.models.lm import sequence_logprobs
from sweeper.unlearn.loop import Diverged, LoopConfig, StepBatches, Unlearner
from sweeper.methods import StepScalars, known_rules, make_rule
from sweeper.methods.registry import _RULES
from sweeper.models.language import build_model
from sweeper.unlearn.targets import reference_logprobs
from sweeper.tasks import get_task

KEYS = ("loss_retain", "loss_forget", "forget_objective", "norm_retain", "norm_forget", "dot",
        "w_retain", "w_forget", "lr")


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Bit-for-bit reproducibility (resume test) and fair sharing of the CPUs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Env:
    def __init__(self):
        rows = qa_rows(make_authors(6, seed=0), 5)
        self.tok = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows], vocab_size=512)
        self.rows, self.forget, self.retain = rows, rows[-5:], rows[:-5]
        self.fds, self.rds = QADataset(self.forget, self.tok), QADataset(self.retain, self.tok)
        self.base = build_model("tiny-gpt2", vocab_size=len(self.tok), pad_id=self.tok.pad_token_id,
                                eos_id=self.tok.eos_token_id, seed=0)
        self._target = None

    def collate(self, items):
        return collate_qa(items, self.tok.pad_token_id)

    def unlearner(self, model, **cfg) -> Unlearner:
        ref = cfg.pop("ref_logprobs", None)
        return Unlearner(model, self.fds, self.rds, self.collate, LoopConfig(**cfg), ref_logprobs=ref)

    @property
    def target(self):
        """The base model fine-tuned 60 steps on forget U retain (memorises most of it)."""
        if self._target is None:
            torch.manual_seed(0)
            model = copy.deepcopy(self.base)
            all_ds = QADataset(self.rows, self.tok)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            for _ in range(60):
                idx = torch.randperm(len(all_ds), generator=g)[:10].tolist()
                logp, n = sequence_logprobs(model, self.collate([all_ds[i] for i in idx]))
                loss = -logp.sum() / n.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            self._target = model
        return self._target

    def full_loss(self, model, ds) -> float:
        """Mean answer-token NLL over a whole dataset."""
        model.eval()
        with torch.no_grad():
            logp, n = sequence_logprobs(model, self.collate([ds[i] for i in range(len(ds))]))
        model.train()
        return float(-logp.sum() / n.sum())

    def step_batches(self, u: Unlearner, t: int):
        rb = self.collate([self.rds[i] for i in u.batches.indices("retain", t)])
        fb = self.collate([self.fds[i] for i in u.batches.indices("forget", t)])
        return rb, fb


@pytest.fixture(scope="module")
def env():
    return Env()


def _flat_grad(model, loss) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def hand_grads(model, rb, fb):
    """g_R = grad of the mean retain token NLL, g_F = grad of the mean forget token NLL, on a copy."""
    m = copy.deepcopy(model)
    logp_r, n_r = sequence_logprobs(m, rb)
    logp_f, n_f = sequence_logprobs(m, fb)
    return _flat_grad(m, -logp_r.sum() / n_r.sum()), _flat_grad(m, -logp_f.sum() / n_f.sum())


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


# --- every rule: logged weights are the rule's formula of the logged scalars --------------------------

def _gradnorm_reference():
    """Appendix B, Algorithm 3 for two tasks, written out independently of sweeper.methods.gradnorm."""
    state = {}

    def weights(s, alpha=1.5, lr_w=0.025):
        if not state:
            state.update(l0=(s.loss_retain, s.loss_forget), w=(1.0, 1.0))
        w, (l0r, l0f) = state["w"], state["l0"]
        n = (s.norm_retain, s.norm_forget)
        big_g = (w[0] * n[0], w[1] * n[1])
        g_mean = sum(big_g) / 2
        rates = (s.loss_retain / l0r, l0f / s.loss_forget)
        r_mean = sum(rates) / 2
        new = [max(w[i] - lr_w * np.sign(big_g[i] - g_mean * (rates[i] / r_mean) ** alpha) * n[i], 0.0)
               for i in range(2)]
        state["w"] = (2 * new[0] / sum(new), 2 * new[1] / sum(new))
        return w

    return weights


def _formulas(seed: int):
    def rlw(s):
        l1, l2 = np.random.default_rng([seed, s.step]).standard_normal(2)
        c = math.exp(l1) / (math.exp(l1) + math.exp(l2))
        return c, 1 - c

    def pcgrad(s):
        if s.dot <= 0:
            return 1.0, 1.0
        return 1 + s.dot / s.sq_norm_retain, 1 + s.dot / s.sq_norm_forget

    def pcgrad_paper(s):
        k = 1 + s.dot / s.sq_norm_retain
        return (k, 1.0) if k < 0 else (k / (1 + k), 1 / (1 + k))

    def imtlg(s):
        c = s.norm_forget / (s.norm_forget + s.norm_retain)
        return c, 1 - c

    return {
        "ga": lambda s: (0.0, 1.0),
        "gd": lambda s: (1.0, 0.0),
        "gdiff": lambda s: (0.3, 0.7),
        "lossnorm": lambda s: (1 / abs(s.loss_retain), 1 / abs(s.loss_forget)),
        "ngdiff": lambda s: (1 / s.norm_retain, 1 / s.norm_forget),
        "pcgrad": pcgrad,
        "pcgrad_paper": pcgrad_paper,
        "imtlg": imtlg,
        "rlw": rlw,
        "gradnorm": _gradnorm_reference(),
    }


def _scalars(row) -> StepScalars:
    return StepScalars(step=row["step"], loss_retain=row["loss_retain"], loss_forget=row["forget_objective"],
                       sq_norm_retain=row["norm_retain"] ** 2, sq_norm_forget=row["norm_forget"] ** 2,
                       dot=row["dot"])


# Built-in rules only: test plugins imported by other test modules register into the same registry.
BUILTIN_RULES = [r for r in known_rules() if _RULES[r].fn.__module__.startswith("sweeper.methods.")]


@pytest.mark.parametrize("rule", BUILTIN_RULES)
def test_every_rule_logs_its_formula(env, rule):
    seed = 3
    params = {"c": 0.3} if rule == "gdiff" else {}
    u = env.unlearner(copy.deepcopy(env.base), method=rule, method_params=params, optimizer="adam",
                      lr=1e-3, batch_size=4, seed=seed)
    formula = _formulas(seed).get(rule)
    replay = make_rule(rule, params, seed=seed)  # for rules registered by plugins (no formula here)
    for t in range(1, 21):
        row = u.step(t)
        assert row["step"] == t
        assert all(math.isfinite(row[k]) for k in KEYS), row
        s = _scalars(row)
        w_r, w_f = formula(s) if formula else (replay.weights(s).w_retain, replay.weights(s).w_forget)
        assert row["w_retain"] == pytest.approx(w_r, rel=1e-9, abs=1e-12), (rule, t)
        assert row["w_forget"] == pytest.approx(w_f, rel=1e-9, abs=1e-12), (rule, t)
        total = row["w_retain"] + row["w_forget"]
        if total:
            assert row["c_t"] == pytest.approx(row["w_retain"] / total)
        # nll objective: the rule's L_F is the logged forget NLL
        assert row["forget_objective"] == pytest.approx(row["loss_forget"], rel=1e-6)


def test_flat_gradients_match_autograd_and_lemma4(env):
    """At step 3 the logged norms / dot equal torch's on the same batch; g_NGDiff satisfies Eq. (7)."""
    lr = 1e-2
    model = copy.deepcopy(env.base)
    u = env.unlearner(model, method="ngdiff", optimizer="sgd", lr=lr, batch_size=4)
    u.step(1)
    u.step(2)
    rb, fb = env.step_batches(u, 3)
    g_r, g_f = hand_grads(model, rb, fb)
    theta0 = flat_params(model)
    row = u.step(3)
    assert row["norm_retain"] == pytest.approx(float(g_r.norm()), rel=1e-4)
    assert row["norm_forget"] == pytest.approx(float(g_f.norm()), rel=1e-4)
    assert row["dot"] == pytest.approx(float(g_r @ g_f), rel=1e-3, abs=1e-4 * float(g_r.norm() * g_f.norm()))
    # Lemma 4 for the direction the optimizer actually took: theta1 = theta0 - lr g
    g = (theta0 - flat_params(model)) / lr
    g_ngdiff = g_r / g_r.norm() - g_f / g_f.norm()
    torch.testing.assert_close(g, g_ngdiff, rtol=1e-3, atol=1e-4 * float(g_ngdiff.abs().max()))
    assert float(g_r @ g) >= 0 >= float(g_f @ g)
    # and the exact identity behind it: g_R.g = ||g_R|| (1 - cos) = -(||g_R||/||g_F||) g_F.g
    cos = float(g_r @ g_f / (g_r.norm() * g_f.norm()))
    assert float(g_r @ g_ngdiff) == pytest.approx(float(g_r.norm()) * (1 - cos), rel=1e-3)


@pytest.mark.parametrize("method,params", [("gdiff", {"c": 0.3}), ("ngdiff", {}), ("pcgrad", {})])
def test_sgd_update_is_weighted_gradient_difference(env, method, params):
    lr = 0.05
    model = copy.deepcopy(env.base)
    u = env.unlearner(model, method=method, method_params=params, optimizer="sgd", lr=lr, batch_size=4)
    for t in (1, 2):
        rb, fb = env.step_batches(u, t)
        g_r, g_f = hand_grads(model, rb, fb)
        theta0 = flat_params(model)
        row = u.step(t)
        expected = -lr * (row["w_retain"] * g_r - row["w_forget"] * g_f)
        delta = flat_params(model) - theta0
        torch.testing.assert_close(delta, expected, rtol=1e-3, atol=2e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("c,equivalent", [(1.0, "gd"), (0.0, "ga")])
def test_gdiff_endpoints_equal_gd_and_ga(env, c, equivalent):
    """Remark 3.1: c = 1 is GD and c = 0 is GA, bit for bit."""
    runs = []
    for method, params in (("gdiff", {"c": c}), (equivalent, {})):
        model = copy.deepcopy(env.base)
        u = env.unlearner(model, method=method, method_params=params, optimizer="adam", lr=1e-3, batch_size=4)
        rows = [u.step(t) for t in range(1, 6)]
        runs.append((model, rows))
    (m1, rows1), (m2, rows2) = runs
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert [r["loss_forget"] for r in rows1] == [r["loss_forget"] for r in rows2]
    assert not torch.equal(flat_params(m1), flat_params(env.base))


# --- behaviour on a memorised target ------------------------------------------------------------------

@pytest.fixture(scope="module")
def unlearned(env):
    """(L_F, L_R) on the whole forget / retain sets before and after 20 steps of each method."""
    target = env.target
    before = (env.full_loss(target, env.fds), env.full_loss(target, env.rds))
    out = {}
    for name, method, params in (("gdiff", "gdiff", {"c": 0.5}), ("ngdiff", "ngdiff", {}),
                                 ("ga", "ga", {}), ("gd", "gd", {})):
        model = copy.deepcopy(target)
        u = env.unlearner(model, method=method, method_params=params, optimizer="adam", lr=1e-4, batch_size=8)
        for t in range(1, 21):
            u.step(t)
        out[name] = (env.full_loss(model, env.fds), env.full_loss(model, env.rds))
    return before, out


def test_target_memorised(env, unlearned):
    (lf0, lr0), _ = unlearned
    assert lf0 < 1.0 and lr0 < 1.0
    assert env.full_loss(env.base, env.fds) > 4 * lf0


def test_gdiff_and_ngdiff_forget_and_keep_retain(unlearned):
    (lf0, lr0), out = unlearned
    for name in ("gdiff", "ngdiff"):
        lf, lr_ = out[name]
        assert lf > 2 * lf0, (name, lf0, lf)
        assert lr_ < 4 * lr0, (name, lr0, lr_)
        assert lr_ < out["ga"][1], name  # much less retain damage than plain ascent
    assert out["ngdiff"][1] < 1.5 * lr0


def test_ga_forgets_and_gd_retains(unlearned):
    (lf0, lr0), out = unlearned
    assert out["ga"][0] > 4 * lf0
    assert out["gd"][1] < lr0


# --- NPO ------------------------------------------------------------------------------------------------

def test_npo_reference_and_first_step(env):
    target = env.target
    ref = reference_logprobs(get_task("tofu"), target, env.tok, env.forget, batch_size=3)
    assert ref.shape == (len(env.forget),)
    with torch.no_grad():
        one_by_one = torch.cat([sequence_logprobs(target, env.collate([env.fds[i]]))[0]
                                for i in range(len(env.fds))])
    torch.testing.assert_close(ref, one_by_one, rtol=1e-5, atol=1e-4)
    assert bool((ref < 0).all())

    with pytest.raises(ValueError, match="reference log-probs"):
        env.unlearner(copy.deepcopy(target), method="ga", forget_loss="npo")

    beta = 0.1
    model = copy.deepcopy(target)
    u = env.unlearner(model, method="ga", forget_loss="npo", forget_loss_params={"beta": beta}, optimizer="sgd",
                      lr=1e-3, batch_size=4, ref_logprobs=ref)
    rb, fb = env.step_batches(u, 1)
    m = copy.deepcopy(model)
    logp_f, _ = sequence_logprobs(m, fb)
    g_seq = _flat_grad(m, -logp_f.sum() / fb["input_ids"].shape[0])
    row = u.step(1)
    # pi = pi_ref: (2/beta) log sigmoid(0) = -(2/beta) ln 2
    assert row["forget_objective"] == pytest.approx(-(2 / beta) * math.log(2), abs=1e-4)
    assert row["forget_objective"] == pytest.approx((2 / beta) * math.log(1 / (1 + math.exp(0))), abs=1e-4)
    # d/dtheta (2/beta) log sigmoid(-beta (lp - ref)) = -sigmoid(beta (lp - ref)) * 2 grad lp = -grad lp at pi = pi_ref
    assert row["norm_forget"] == pytest.approx(float(g_seq.norm()), rel=1e-3)
    # the NLL column stays the token NLL
    assert row["loss_forget"] > 0 and row["forget_objective"] < 0
    for t in range(2, 6):
        row = u.step(t)
    assert row["forget_objective"] > -(2 / beta) * math.log(2)  # ascending -L_NPO lowers pi on F


# --- batches ---------------------------------------------------------------------------------------------

def test_step_batches_deterministic():
    a = StepBatches({"forget": 7, "retain": 23}, batch_size=4, seed=5)
    b = StepBatches({"forget": 7, "retain": 23}, batch_size=4, seed=5)
    for t in range(1, 30):
        for split in ("forget", "retain"):
            assert a.indices(split, t) == b.indices(split, t)
    c = StepBatches({"forget": 7, "retain": 23}, batch_size=4, seed=6)
    assert [a.indices("retain", t) for t in range(1, 6)] != [c.indices("retain", t) for t in range(1, 6)]
    # access order does not matter (a resumed trial starts in the middle)
    fresh = StepBatches({"forget": 7, "retain": 23}, batch_size=4, seed=5)
    assert fresh.indices("retain", 17) == a.indices("retain", 17)


def test_step_batches_ranks_interleave_to_global_batch():
    sizes = {"forget": 10, "retain": 37}
    one = StepBatches(sizes, batch_size=6, seed=1)
    r0 = StepBatches(sizes, batch_size=6, seed=1, rank=0, world_size=2)
    r1 = StepBatches(sizes, batch_size=6, seed=1, rank=1, world_size=2)
    for t in range(1, 25):
        for split in sizes:
            merged = [None] * 6
            merged[0::2], merged[1::2] = r0.indices(split, t), r1.indices(split, t)
            assert merged == one.indices(split, t) == one.global_indices(split, t)
            assert len(r0.indices(split, t)) == len(r1.indices(split, t)) == 3


def test_step_batches_cover_each_row_once_per_epoch():
    n, bs = 7, 3
    sb = StepBatches({"forget": n, "retain": 50}, batch_size=bs, seed=0)
    stream = [i for t in range(1, 15) for i in sb.indices("forget", t)]   # 42 = 6 epochs, crossing boundaries
    epochs = [stream[e * n:(e + 1) * n] for e in range(len(stream) // n)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1   # reshuffled per epoch


# --- divergence and resume -------------------------------------------------------------------------------

def test_nan_parameter_raises_diverged(env):
    model = copy.deepcopy(env.base)
    u = env.unlearner(model, method="ngdiff", optimizer="adam", lr=1e-3, batch_size=4)
    u.step(1)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(Diverged, match="is not finite at step 2") as e:
        u.step(2)
    assert e.value.step == 2


def test_resume_from_state_dict_is_exact(env):
    from sweeper.unlearn.autolr import AutoLRConfig

    cfg = dict(method="gradnorm", optimizer="adam", lr=1e-3, batch_size=4, seed=2,
               autolr=AutoLRConfig(every=3))
    straight_model = copy.deepcopy(env.base)
    straight = env.unlearner(straight_model, **cfg)
    rows_a = [straight.step(t) for t in range(1, 11)]

    first_model = copy.deepcopy(env.base)
    first = env.unlearner(first_model, **cfg)
    rows_b = [first.step(t) for t in range(1, 6)]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)        # as the trial's checkpoint does
    buf.seek(0)
    resumed_model = copy.deepcopy(env.base)    # a fresh worker: the target's weights again
    resumed = env.unlearner(resumed_model, **cfg)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    rows_b += [resumed.step(t) for t in range(6, 11)]

    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(rows_a) == strip(rows_b)
    assert any(r.get("autolr_status") == "accepted" for r in rows_a)
    assert rows_a[-1]["lr"] != 1e-3
    for p1, p2 in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(p1, p2)


# --- mixed precision --------------------------------------------------------------------------------

def test_bf16_compute_keeps_float32_weights_that_move_at_small_lr(env):
    """A grid's dtype bfloat16 is the compute dtype (sweeper.models.language.compute_precision): weights, gradients
    and Adam state stay float32, the forward runs in bf16, and at the paper's lr 1e-5 the weights move --
    where a model cast to bf16 loses most Adam steps to rounding (the reason for mixed precision)."""
    from sweeper.models.language import compute_precision

    def changed_after_one_step(model, precision) -> tuple[float, torch.dtype]:
        before = [p.detach().clone() for p in model.parameters()]
        u = env.unlearner(model, method="ngdiff", lr=1e-5, steps=1, batch_size=4)
        with precision:
            u.step(1)
            logits_dtype = model(**env.collate([env.rds[0]]), use_cache=False).logits.dtype
        moved = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before))
        return moved / sum(b.numel() for b in before), logits_dtype

    mixed = copy.deepcopy(env.target)
    share, logits_dtype = changed_after_one_step(mixed, compute_precision("bfloat16", "cpu"))
    assert logits_dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in mixed.parameters())
    assert share > 0.9  # the rest have no gradient in this batch (unused token / position embeddings)
    pure, _ = changed_after_one_step(copy.deepcopy(env.target).to(torch.bfloat16), compute_precision("float32", "cpu"))
    assert pure < share / 4  # measured 0.10 vs 0.93: most bf16 weights lose the step to rounding


def test_bf16_compute_sees_weights_changed_inside_the_block(env):
    """One compute_precision block spans a whole trial (steps, AutoLR probes, evaluation), so a weight
    changed in place inside it must change the next forward pass (autocast's cast cache would not)."""
    from sweeper.models.language import compute_precision
    model = copy.deepcopy(env.target)
    batch = env.collate([env.rds[0]])
    with compute_precision("bfloat16", "cpu"), torch.no_grad():
        before = model(**batch, use_cache=False).logits.clone()
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(0.5)
        after = model(**batch, use_cache=False).logits
    assert not torch.allclose(before, after)
    # Three steps in one block equal three steps in a block each (a stale cache would differ from step 2).
    one_block, block_each = (env.unlearner(copy.deepcopy(env.target), method="ngdiff", lr=1e-3, steps=3,
                                           batch_size=4) for _ in range(2))
    with compute_precision("bfloat16", "cpu"):
        one = [one_block.step(t)["loss_forget"] for t in (1, 2, 3)]
    each = []
    for t in (1, 2, 3):
        with compute_precision("bfloat16", "cpu"):
            each.append(block_each.step(t)["loss_forget"])
    assert one == each
