"""The field's privacy and memorisation metrics (sweeper.metrics.mia, .extraction, .token_stats and
sweeper.tasks.tofu_field), each checked against a direct computation: scikit-learn's roc_auc_score, loops
over sorted token log-probs, one unpadded forward pass per answer, and greedy decoding from every prefix."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fitting import short_fit
from sweeper.metrics import extraction, mia
from sweeper.metrics.likelihood import answer_logprobs
from sweeper.metrics.token_stats import answer_token_stats
from sweeper.tasks.tofu import TofuTask
from sweeper.tasks.tofu_field import FIELD_COLUMNS

MODEL = {"name": "tiny-gpt2", "dtype": "float32", "trust_remote_code": False}
EVAL = {"max_questions": 20, "max_new_tokens": 24, "batch_size": 32}
DATA = {"source": "builtin", "n_authors": 6, "qa_per_author": 5, "forget_split": "forget10", "seed": 0, "kind": "tofu"}


# --- pure functions against loops and scikit-learn ------------------------------------------------

def loop_min_k(values, k):
    """Min-K% the slow way: pick the smallest value one at a time."""
    left, picked = list(values), []
    for _ in range(max(1, int(len(values) * k))):
        smallest = min(left)
        left.remove(smallest)
        picked.append(smallest)
    return -sum(picked) / len(picked)


@pytest.mark.parametrize("seed", range(5))
def test_scores_and_aucs_against_loops_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    lps = [rng.normal(-2, 1.5, rng.integers(1, 30)) for _ in range(12)]
    for lp in lps:
        assert mia.min_k_score(lp, 0.4) == pytest.approx(loop_min_k(lp, 0.4))
        assert mia.loss_score(lp) == pytest.approx(-sum(lp) / len(lp))
        text = "x" * len(lp) + " answer"
        assert mia.zlib_score(lp, text) == pytest.approx((-sum(lp) / len(lp)) / len(zlib.compress(text.encode())))
    forget, holdout = rng.normal(0, 1, 9).round(1), rng.normal(0.5, 1, 7).round(1)  # rounded: ties happen
    labels = [0] * len(forget) + [1] * len(holdout)
    assert mia.field_auc(forget, holdout) == pytest.approx(roc_auc_score(labels, np.r_[forget, holdout]))


def test_min_k_plus_plus_against_a_vocabulary_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (11, 7))   # 11 positions, vocabulary of 7
    tokens = rng.integers(0, 7, 11)
    lp_all = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    z = []
    for t in range(11):  # mean and variance of log p under p, one position at a time
        p = np.exp(lp_all[t])
        mu = sum(p[v] * lp_all[t, v] for v in range(7))
        var = sum(p[v] * (lp_all[t, v] - mu) ** 2 for v in range(7))
        z.append((lp_all[t, tokens[t]] - mu) / math.sqrt(var))
    lp = lp_all[np.arange(11), tokens]
    mu = (np.exp(lp_all) * lp_all).sum(-1)
    sigma2 = (np.exp(lp_all) * lp_all ** 2).sum(-1) - mu ** 2
    assert mia.min_k_plus_plus_score(lp, mu, sigma2, 0.4) == pytest.approx(loop_min_k(z, 0.4))


def test_privleak_is_muse_formula_on_the_complement_auc():
    f = {"min_k": [0.1, 0.2, 0.3, 0.9]}
    h = {"min_k": [0.5, 0.6, 0.25]}
    auc_field = mia.field_auc(f["min_k"], h["min_k"])
    assert mia.privleak_auc(f, h) == pytest.approx(1 - auc_field)
    assert mia.privleak_from(f, h, 0.4) == pytest.approx((1 - auc_field - 0.4) / 0.4 * 100)


@pytest.mark.parametrize("hits,em,es", [([1, 1, 1], 1.0, 1.0), ([0, 1, 1, 1], 0.75, 0.75), ([1, 1, 0], 2 / 3, 0.0),
                                        ([1, 0, 1, 1], 0.75, 0.5), ([0], 0.0, 0.0)])
def test_exact_memorisation_and_extraction_strength_by_hand(hits, em, es):
    assert extraction.exact_memorisation(np.array(hits, bool)) == pytest.approx(em)
    assert extraction.extraction_strength(np.array(hits, bool)) == pytest.approx(es)


# --- on a model: one unpadded forward pass per answer, greedy decoding from every prefix -----------

@pytest.fixture(scope="module")
def env(tmp_path_factory, one_torch_thread):
    task = TofuTask()
    splits = task.prepare(DATA, str(tmp_path_factory.mktemp("tofu")))
    tok = task.make_tokenizer(MODEL, splits)
    model = task.build_model(MODEL, tok, seed=0)
    short_fit(task, model, tok, splits["forget"] + splits["retain"])  # part of each answer memorised
    summary, samples = task.evaluate(model, tok, splits, EVAL)
    return {"task": task, "splits": splits, "tok": tok, "model": model, "summary": summary, "samples": samples}


def hand_tokens(model, tok, question, answer):
    """(ids, n_prompt, per-token log-probs, argmax hits, mu, var) from one unpadded forward pass, float64."""
    prompt = f"Question: {question}\nAnswer:"
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(prompt + " " + answer)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    pos = range(n_prompt - 1, len(ids) - 1)
    lp = np.array([float(logp[t, ids[t + 1]]) for t in pos])
    hit = np.array([int(logp[t].argmax()) == ids[t + 1] for t in pos])
    mu = np.array([float((logp[t].exp() * logp[t]).sum()) for t in pos])
    var = np.array([float((logp[t].exp() * (logp[t] - mu[i]) ** 2).sum()) for i, t in enumerate(pos)])
    return ids, n_prompt, lp, hit, mu, var


def greedy_es(model, ids, n_prompt):
    """Extraction strength by its definition: the shortest answer prefix from which greedy decoding (the
    model's own tokens fed back, one unpadded sequence) reproduces the rest of the answer exactly."""
    answer = ids[n_prompt:]
    for k in range(len(answer) + 1):
        seq = ids[:n_prompt + k]
        while len(seq) < len(ids):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            if nxt != ids[len(seq)]:
                break
            seq = seq + [nxt]
        if len(seq) == len(ids):
            return 1 - k / len(answer)
    raise AssertionError("k = len(answer) always reproduces the (empty) rest")


def test_token_stats_against_one_unpadded_pass(env):
    model, tok, rows = env["model"], env["tok"], env["splits"]["forget"] + env["splits"]["holdout"]
    stats = answer_token_stats(model, tok, [r["question"] for r in rows], [r["answer"] for r in rows], batch_size=4)
    sums, counts = answer_logprobs(model, tok, [r["question"] for r in rows], [r["answer"] for r in rows])
    for r, st, s, c in zip(rows, stats, sums, counts):
        _, _, lp, hit, mu, var = hand_tokens(model, tok, r["question"], r["answer"])
        assert np.allclose(st.logprob, lp, atol=1e-4) and (st.hit == hit).all()
        assert np.allclose(st.mu, mu, atol=1e-4) and np.allclose(st.sigma2, var, atol=1e-4)
        assert st.n == c and st.sum_logprob == pytest.approx(s, abs=1e-4)  # the Probability pass's numbers


def test_extraction_strength_and_exact_memorisation_against_greedy_decoding(env):
    model, tok, samples = env["model"], env["tok"], env["samples"]
    rows = env["splits"]["forget"]
    es_rows = sorted((r for r in samples if r["split"] == "forget" and r["metric"] == "extraction_strength"),
                     key=lambda r: r["index"])
    em_rows = {r["index"]: r["value"] for r in samples if r["split"] == "forget" and r["metric"] == "exact_mem"}
    ess, ems = [], []
    for i, r in enumerate(rows):
        ids, n_prompt, _, hit, _, _ = hand_tokens(model, tok, r["question"], r["answer"])
        ess.append(greedy_es(model, ids, n_prompt))
        ems.append(hit.mean())
        assert es_rows[i]["value"] == pytest.approx(ess[-1]) and em_rows[i] == pytest.approx(ems[-1])
    assert 0 < np.mean(ess) < 1, "the short fit should leave answers partly memorised"
    assert env["summary"]["extraction_strength_forget"] == pytest.approx(np.mean(ess))
    assert env["summary"]["exact_mem_forget"] == pytest.approx(np.mean(ems))


def test_mia_columns_against_sklearn_on_hand_scores(env):
    model, tok, splits, s = env["model"], env["tok"], env["splits"], env["summary"]
    hand = {}
    for split in ("forget", "holdout"):
        rows = splits[split]
        per = [hand_tokens(model, tok, r["question"], r["answer"]) for r in rows]
        hand[split] = {"loss": [-lp.mean() for _, _, lp, _, _, _ in per],
                       "zlib": [-lp.mean() / len(zlib.compress(r["answer"].encode())) for (_, _, lp, _, _, _), r in zip(per, rows)],
                       "min_k": [loop_min_k(lp, 0.4) for _, _, lp, _, _, _ in per],
                       "min_k_plus_plus": [loop_min_k((lp - mu) / np.sqrt(var), 0.4) for _, _, lp, _, mu, var in per]}
    labels = [0] * len(splits["forget"]) + [1] * len(splits["holdout"])
    for attack in mia.ATTACKS:
        want = roc_auc_score(labels, hand["forget"][attack] + hand["holdout"][attack])
        assert s[f"mia_{attack}"] == pytest.approx(want), attack
    assert set(FIELD_COLUMNS) <= set(s)


def test_privleak_against_the_retrained_reference(env):
    task, model, tok, splits = env["task"], env["model"], env["tok"], env["splits"]
    ref = task.reference_data(model, tok, splits, EVAL)
    assert ref["privleak_auc"] == pytest.approx(1 - env["summary"]["mia_min_k"])
    other, _ = task.evaluate(model, tok, splits, EVAL, {**ref, "privleak_auc": 0.5})
    assert other["privleak"] == pytest.approx(((1 - env["summary"]["mia_min_k"]) - 0.5) / 0.5 * 100)
    if ref["privleak_auc"] > 0:  # MUSE's formula divides by the reference's AUC: 0 leaves the cell blank
        same, _ = task.evaluate(model, tok, splits, EVAL, ref)
        assert same["privleak"] == pytest.approx(0.0)  # the model is its own reference


def test_no_holdout_rows_blank_cells_and_one_line(env, capsys):
    task, model, tok = env["task"], env["model"], env["tok"]
    splits = {k: v for k, v in env["splits"].items() if k != "holdout"}
    capsys.readouterr()
    s, samples = task.evaluate(model, tok, splits, EVAL)
    assert all(s[c] is None for c in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "privleak"))
    assert s["exact_mem_forget"] is not None
    lines = [line for line in capsys.readouterr().out.splitlines() if "mia_loss" in line]
    assert len(lines) == 1 and "holdout" in lines[0] and "privleak" in lines[0]
    assert not any(r["split"] == "holdout" for r in samples)


def test_folder_without_forget01_perturbed_says_so_once(env, tmp_path, capsys):
    from sweeper.data.synthetic import write_tofu_layout
    folder = write_tofu_layout(tmp_path / "tofu", n_authors=6, qa_per_author=5, seed=0)
    (folder / "forget01_perturbed.json").unlink()
    capsys.readouterr()
    splits = env["task"].prepare({**DATA, "source": str(folder), "forget_split": "forget01"}, str(tmp_path))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "forget01_perturbed.json" in out[0] and "truth_ratio_forget" in out[0]
    s, _ = env["task"].evaluate(env["model"], env["tok"], splits, EVAL)
    assert s["truth_ratio_forget"] is None and s["forget_quality"] is None
    lines = [line for line in capsys.readouterr().out.splitlines() if "truth_ratio_forget" in line]
    assert len(lines) == 1 and "_perturbed.json" in lines[0]  # one line per evaluation, not per question


def test_builtin_holdout_rows(tmp_path):
    import json
    from sweeper.data.synthetic import write_tofu_layout
    folder = write_tofu_layout(tmp_path, n_authors=20, qa_per_author=10, seed=0)
    read = lambda name: [json.loads(x) for x in (folder / f"{name}.json").read_text().splitlines()]  # noqa: E731
    full_names = {r["question"] for r in read("full")}
    for pct in ("01", "05", "10"):
        holdout, forget = read(f"holdout{pct}"), read(f"forget{pct}")
        assert len(holdout) == len(forget) and not {r["question"] for r in holdout} & full_names
    assert read("holdout05") == read("holdout10")[:len(read("holdout05"))]
    again = write_tofu_layout(tmp_path / "again", n_authors=20, qa_per_author=10, seed=0)
    assert (again / "holdout10.json").read_bytes() == (folder / "holdout10.json").read_bytes()


def test_metric_needing_holdout_is_refused_before_training(tmp_path):
    from sweeper.data.synthetic import write_tofu_layout
    from sweeper.grid.checks import _check_metrics
    folder = write_tofu_layout(tmp_path / "tofu", n_authors=6, qa_per_author=5, seed=0)
    data = [{"name": "mine", "kind": "tofu", "source": str(folder), "forget_split": "forget05"}]
    assert _check_metrics("g.yaml", ["mia_min_k", "privleak"], data) == []
    (folder / "holdout05.json").unlink()
    problems = _check_metrics("g.yaml", ["mia_min_k", "rouge_forget"], data)
    assert len(problems) == 1 and "'mia_min_k'" in problems[0] and "holdout05.json" in problems[0]
    assert _check_metrics("g.yaml", ["mia_min_k"], [{"name": "b", "kind": "tofu", "source": "builtin"}]) == []
