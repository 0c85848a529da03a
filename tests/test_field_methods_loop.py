"""The widened objective interface inside the unlearning loop, step by step on a tiny GPT-2.

* ``nll`` and ``npo`` give the numbers the loop gave before objectives could ask for more than sequence
  log-probs: ``test_field_methods_rows.json`` holds 5 steps of 4 cases recorded with that code (commit
  6ad0daa's ``Unlearner``, by the recipe in ``_record``), compared to float32's reach across CPUs (``RECORDED_RTOL``);
* every forget objective with every retain loss runs with GDiff, NGDiff, LossNorm, PDU, AutoLR;
* at the start the model IS the target: RMU's and KL's retain losses are 0, UNDIAL's value is the KL of
  the adjusted distribution;
* two workers (threads with a summing comm) give the rows of one, so counts are global and exact.
"""
from __future__ import annotations

import copy
import json
import math
import os
import threading

import pytest
import torch

from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.refusals import idk_rows
from sweeper.data.synthetic import make_authors, qa_rows
from sweeper.data.tokenizer import train_tokenizer
from sweeper.methods.objectives import known_objectives
from sweeper.models.language import build_model
from sweeper.models.lm import sequence_logprobs
from sweeper.tasks import get_task
from sweeper.unlearn.autolr import AutoLRConfig
from sweeper.unlearn.loop import LoopConfig, Unlearner
from sweeper.unlearn.targets import reference_logprobs

ROWS = os.path.join(os.path.dirname(__file__), "test_field_methods_rows.json")
#: The recorded cases (the recipe of the JSON file): name -> LoopConfig keywords.
RECORDED = {
    "gdiff_nll": dict(method="gdiff", method_params={"c": 0.3}),
    "ngdiff_nll_autolr": dict(method="ngdiff", autolr=AutoLRConfig(every=2)),
    "npo_ga": dict(method="ga", forget_loss="npo", forget_loss_params={"beta": 0.1}),
    "lossnorm_npo": dict(method="lossnorm", forget_loss="npo"),
}
#: The rows are bit-identical on the CPU that recorded them. Another CPU sums float32 reductions in
#: another order (other SIMD widths): measured up to 1.3e-5 relative (``dot``, the sum of 375k products,
#: on an AMD EPYC with AVX512), 3e-6 after AutoLR's fits. A changed formula moves rows by far more.
RECORDED_RTOL = 1e-4


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


class Env:
    """4 authors x 5 QA, the last author forgotten; the tokenizer of the recorded rows (no refusals in
    its training text, so the recorded numbers stay reproducible)."""

    def __init__(self):
        rows = qa_rows(make_authors(4, seed=0), 5)
        self.tok = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows], vocab_size=384)
        self.forget, retain = rows[-5:], rows[:-5]
        self.fds, self.rds = QADataset(self.forget, self.tok), QADataset(retain, self.tok)
        self.ads = QADataset(idk_rows(self.forget), self.tok)
        self.base = build_model("tiny-gpt2", vocab_size=len(self.tok), pad_id=self.tok.pad_token_id,
                                eos_id=self.tok.eos_token_id, seed=0)
        self.ref = reference_logprobs(get_task("tofu"), self.base, self.tok, self.forget)

    def collate(self, items):
        return collate_qa(items, self.tok.pad_token_id)

    def unlearner(self, model=None, comm=None, **cfg) -> Unlearner:
        cfg = {"batch_size": 4, "lr": 1e-3, **cfg}
        return Unlearner(model or copy.deepcopy(self.base), self.fds, self.rds, self.collate, LoopConfig(**cfg),
                         comm=comm, ref_logprobs=self.ref, alt_forget_ds=self.ads)


@pytest.fixture(scope="module")
def env():
    return Env()


def _record(env: Env) -> dict:
    """The rows the JSON file holds, computed by the loop of today (run it on the old code to record)."""
    out = {}
    for name, cfg in RECORDED.items():
        u = env.unlearner(**cfg)
        out[name] = [{k: v for k, v in u.step(t).items() if k != "wall_s" and not isinstance(v, str)}
                     for t in range(1, 6)]
    return out


def test_nll_and_npo_give_the_recorded_numbers(env):
    with open(ROWS) as f:
        recorded = json.load(f)
    now = _record(env)
    assert set(now) == set(recorded)
    for name, rows in recorded.items():
        for old, new in zip(rows, now[name]):
            assert set(old) == set(new), name
            for key, value in old.items():
                assert new[key] == pytest.approx(value, rel=RECORDED_RTOL, abs=1e-12, nan_ok=True), (name, old["step"], key)


@pytest.mark.parametrize("forget_loss", known_objectives("forget"))
def test_every_objective_with_every_rule_and_retain_loss(env, forget_loss):
    for retain_loss in known_objectives("retain"):
        for method, autolr in (("gdiff", None), ("ngdiff", AutoLRConfig(every=2)), ("lossnorm", None),
                               ("pdu", AutoLRConfig(every=2))):
            u = env.unlearner(method=method, forget_loss=forget_loss, retain_loss=retain_loss, autolr=autolr,
                              steps=3)
            before = [p.detach().clone() for p in u.params]
            rows = [u.step(t) for t in range(1, 4)]
            keys = ("loss_retain", "loss_forget", "forget_objective", "norm_retain", "norm_forget", "w_retain", "lr")
            assert all(math.isfinite(r[k]) for r in rows for k in keys), (forget_loss, retain_loss, method)
            assert any(not torch.equal(a, p) for a, p in zip(before, u.params)), (forget_loss, retain_loss, method)


def test_retain_losses_are_zero_at_the_target_and_rmu_moves_the_forget_states(env):
    for retain_loss in ("kl", "rmu"):
        u = env.unlearner(method="gdiff", forget_loss="rmu", retain_loss=retain_loss, steps=6)
        rows = [u.step(t) for t in range(1, 7)]
        assert abs(rows[0]["loss_retain"]) < 1e-6, retain_loss      # the model is the target at step 1
        assert rows[0]["norm_retain"] < 1e-3
        assert rows[-1]["loss_retain"] > rows[0]["loss_retain"]
        assert rows[-1]["forget_objective"] > rows[0]["forget_objective"]   # closer to coeff * u


def test_undial_first_step_is_the_kl_of_the_adjusted_target(env):
    u = env.unlearner(method="ga", forget_loss="undial", steps=2)
    fb = env.collate([env.fds[i] for i in u.batches.indices("forget", 1)])
    row = u.step(1)
    model = env.base.eval()
    with torch.no_grad():
        logits = model(input_ids=fb["input_ids"], attention_mask=fb["attention_mask"],
                       position_ids=(fb["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits[:, :-1].double()
    labels, total, n = fb["labels"][:, 1:], 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == -100:
                continue
            z = logits[b, t]
            adjusted = z.clone()
            adjusted[labels[b, t]] -= 10.0
            q, p = torch.softmax(adjusted, -1), torch.softmax(z, -1)
            total, n = total + float((q * (q.log() - p.log())).sum()), n + 1
    assert row["forget_objective"] == pytest.approx(-total / n, rel=1e-4)


def test_idk_objectives_lower_the_true_answer_relative_to_the_refusal(env):
    u = env.unlearner(method="ga", forget_loss="idkdpo", lr=3e-3, steps=8)
    rows = [u.step(t) for t in range(1, 9)]
    assert rows[0]["forget_objective"] == pytest.approx(-(2 / 0.1) * math.log(2), rel=1e-5)   # pi = pi_ref
    assert rows[-1]["forget_objective"] > rows[0]["forget_objective"]
    u = env.unlearner(method="ga", forget_loss="idknll", lr=3e-3, steps=8)
    rows = [u.step(t) for t in range(1, 9)]
    assert rows[-1]["forget_objective"] > rows[0]["forget_objective"]   # the refusal's log-likelihood rises
    with pytest.raises(ValueError, match="forget_loss 'rmu': layer = 5 is not a block of this model, which has 2"):
        env.unlearner(forget_loss="rmu", forget_loss_params={"layer": 5})
    with pytest.raises(ValueError, match="needs alternate"):
        Unlearner(copy.deepcopy(env.base), env.fds, env.rds, env.collate, LoopConfig(forget_loss="idknll"))


class ThreadComm:
    """W threads as W workers: all_reduce_sum sums the tensors of every thread (in rank order)."""

    def __init__(self, shared: dict, rank: int, world_size: int):
        self.shared, self.rank, self.world_size = shared, rank, world_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        box, barrier = self.shared["box"], self.shared["barrier"]
        box[self.rank] = tensor.detach().clone()
        barrier.wait()
        total = box[0].clone()
        for r in range(1, self.world_size):
            total += box[r]
        barrier.wait()
        tensor.copy_(total)
        return tensor

    def barrier(self) -> None:
        self.shared["barrier"].wait()


@pytest.mark.parametrize("forget_loss,retain_loss", [("idkdpo", "kl"), ("undial", "rmu"), ("simnpo", "nll"),
                                                     ("idknll", "nll"), ("wga", "kl")])
def test_two_workers_give_the_rows_of_one(env, forget_loss, retain_loss):
    # gdiff: NGDiff would normalise the retain gradient, which is 0 up to rounding at the target for kl and rmu
    cfg = dict(method="gdiff", forget_loss=forget_loss, retain_loss=retain_loss, batch_size=5, steps=4,
               optimizer="sgd", lr=0.05, autolr=AutoLRConfig(every=2))
    one = env.unlearner(**cfg)
    expected = [one.step(t) for t in range(1, 5)]
    shared = {"box": {}, "barrier": threading.Barrier(2)}
    results, errors = {}, []

    def work(rank):
        try:
            u = env.unlearner(comm=ThreadComm(shared, rank, 2), **cfg)
            results[rank] = [u.step(t) for t in range(1, 5)]
        except Exception as e:   # noqa: BLE001  (reported below)
            errors.append(e)
            shared["barrier"].abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for rank in (0, 1):
        for old, new in zip(expected, results[rank]):
            for key in ("loss_retain", "loss_forget", "forget_objective", "norm_retain", "norm_forget", "dot"):
                assert new[key] == pytest.approx(old[key], rel=2e-5, abs=1e-7), (rank, old["step"], key)


def test_forward_path_for_sequence_objectives_is_the_tasks_own(env):
    """nll / npo run the task's logprobs function (vision tasks keep working); token objectives do not."""
    calls = []

    def counting(model, batch):
        calls.append(1)
        return sequence_logprobs(model, batch)

    for fl, expect_calls in (("npo", True), ("wga", False)):
        calls.clear()
        u = Unlearner(copy.deepcopy(env.base), env.fds, env.rds, env.collate,
                      LoopConfig(method="gdiff", forget_loss=fl, retain_loss="kl", batch_size=4), ref_logprobs=env.ref,
                      logprobs=counting)
        u.step(1)
        assert bool(calls) == expect_calls, fl
