"""TofuTask.evaluate: TOFU's metrics on the offline twin, checked against sweeper.metrics.tofu_metrics
and against log-probabilities computed by hand with one unbatched forward pass."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from fitting import short_fit
from sweeper.metrics import tofu_metrics as tm
from sweeper.store.results import SAMPLE_SCHEMA, SUMMARY_SCHEMA, to_table
from sweeper.tasks.tofu import TofuTask

MODEL = {"name": "tiny-gpt2", "dtype": "float32", "trust_remote_code": False}
EVAL = {"max_questions": 20, "max_new_tokens": 24, "batch_size": 32}
KEYS = ["rouge_forget", "rouge_retain", "rouge_f1_forget", "rouge_f1_retain", "exact_forget", "exact_retain",
        "final_loss_forget", "final_loss_retain", "prob_forget", "prob_retain", "truth_ratio_forget",
        "truth_ratio_retain", "model_utility", "forget_quality"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: more threads only spin against other processes
    task = TofuTask()
    splits = task.prepare({"source": "builtin", "n_authors": 6, "qa_per_author": 5, "forget_split": "forget10",
                           "seed": 0, "kind": "tofu"}, str(tmp_path_factory.mktemp("tofu")))
    tok = task.make_tokenizer(MODEL, splits)
    model = task.build_model(MODEL, tok, seed=0)
    # A short fit, so that no utility component is 0 (a random model's ROUGE is): the answers of every
    # split, plus the retain paraphrases (else the model prefers the perturbed answers' template).
    rows = (splits["forget"] + splits["retain"] + splits["real_authors"] + splits["world_facts"]
            + [{"question": r["question"], "answer": r["paraphrased_answer"]} for r in splits["retain_perturbed"]])
    short_fit(task, model, tok, rows)
    summary, samples = task.evaluate(model, tok, splits, EVAL)
    yield {"task": task, "splits": splits, "tok": tok, "model": model, "summary": summary, "samples": samples}
    torch.set_num_threads(threads)


def values(samples, split, metric):
    rows = sorted((r for r in samples if r["split"] == split and r["metric"] == metric), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return np.array([r["value"] for r in rows])


def hand_logprob(model, tok, question, answer):
    """log p(" answer" + eos | "Question: q\\nAnswer:") and its token count, one unpadded forward pass."""
    prompt = f"Question: {question}\nAnswer:"
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(prompt + " " + answer)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids))), len(ids) - n_prompt


def test_every_key_in_range(env):
    s = env["summary"]
    assert set(KEYS) <= set(s) and set(s) <= set(SUMMARY_SCHEMA.names)
    for k in KEYS[:6] + ["prob_forget", "prob_retain", "truth_ratio_forget", "truth_ratio_retain", "model_utility"]:
        assert 0.0 <= s[k] <= 1.0, (k, s[k])
    assert s["final_loss_forget"] > 0 and s["final_loss_retain"] > 0
    assert s["model_utility"] > 0  # every component is positive after the short fit
    assert s["forget_quality"] is None  # no reference given
    to_table([{"run": "r", "trial_id": "t", **s}], SUMMARY_SCHEMA)


def test_curve_metrics_are_the_summary_columns(env):
    curve = env["task"].curve_metrics(env["model"], env["tok"], env["splits"], EVAL)
    assert set(curve) == {"rouge_forget", "rouge_retain", "rouge_f1_forget", "rouge_f1_retain", "exact_forget",
                          "exact_retain", "final_loss_forget", "final_loss_retain"}
    assert curve == {k: env["summary"][k] for k in curve}


def test_means_and_model_utility_from_samples(env):
    s, samples = env["summary"], env["samples"]
    n = {"forget": 5, "retain": 5, "real_authors": 12, "world_facts": 12}
    for split, rows in n.items():
        for metric in ("rouge_recall", "prob", "truth_ratio"):
            assert len(values(samples, split, metric)) == rows
    for split in ("forget", "retain"):
        assert s[f"rouge_{split}"] == pytest.approx(values(samples, split, "rouge_recall").mean())
        assert s[f"prob_{split}"] == pytest.approx(values(samples, split, "prob").mean())
    r_f, r_r = values(samples, "forget", "truth_ratio"), values(samples, "retain", "truth_ratio")
    assert s["truth_ratio_forget"] == pytest.approx(np.mean(np.minimum(r_f, 1 / r_f)))
    assert s["truth_ratio_retain"] == pytest.approx(np.mean(np.maximum(0, 1 - r_r)))
    parts = []
    for split in ("retain", "real_authors", "world_facts"):
        r = values(samples, split, "truth_ratio")
        parts += [values(samples, split, "prob").mean(), values(samples, split, "rouge_recall").mean(),
                  np.mean(np.maximum(0, 1 - r))]
    assert len(parts) == 9 and min(parts) > 0
    assert s["model_utility"] == pytest.approx(stats.hmean(parts), rel=1e-12)


def test_truth_ratio_and_probability_by_hand(env):
    model, tok, splits, samples = env["model"], env["tok"], env["splits"], env["samples"]
    for split, rows, base in (("forget", "forget_perturbed", "paraphrased_answer"),
                              ("retain", "retain_perturbed", "paraphrased_answer"),
                              ("real_authors", "real_authors", "answer")):
        i = 1
        row = splits[rows][i]
        correct = hand_logprob(model, tok, row["question"], row[base])
        wrong = [hand_logprob(model, tok, row["question"], p) for p in row["perturbed_answer"]]
        r = tm.truth_ratio([correct[0]], [correct[1]], [[w[0] for w in wrong]], [[w[1] for w in wrong]])[0]
        assert values(samples, split, "truth_ratio")[i] == pytest.approx(r, rel=1e-4)
        ans = hand_logprob(model, tok, row["question"], row["answer"])
        if split == "real_authors":  # multiple choice: P(correct) / sum over the 4 options
            p = tm.answer_probability_mc([ans[0]], [ans[1]], [[w[0] for w in wrong]], [[w[1] for w in wrong]])[0]
            assert len(wrong) == 3
        else:
            p = math.exp(ans[0] / ans[1])
            assert len(wrong) == 5
        assert values(samples, split, "prob")[i] == pytest.approx(p, rel=1e-4)


def test_forget_quality_against_reference(env):
    task, model, tok, splits = env["task"], env["model"], env["tok"], env["splits"]
    ref = task.reference_data(model, tok, splits, EVAL)
    own = values(env["samples"], "forget", "truth_ratio")
    assert set(ref) == {"forget_truth_ratio", "privleak_auc"} and np.allclose(ref["forget_truth_ratio"], own)
    same, _ = task.evaluate(model, tok, splits, EVAL, ref)
    assert same["forget_quality"] == 1.0
    assert same["forget_quality"] == tm.forget_quality(own, ref["forget_truth_ratio"])
    far, _ = task.evaluate(model, tok, splits, EVAL, {"forget_truth_ratio": [x + 100.0 for x in own]})
    assert far["forget_quality"] < 0.01  # 5 vs 5 fully separated samples: exact p = 2 / C(10, 5)
    assert far["forget_quality"] == pytest.approx(2 / math.comb(10, 5))


def test_samples_validate_against_schema(env):
    rows = [{"run": "r", "trial_id": "t", **r} for r in env["samples"]]
    table = to_table(rows, SAMPLE_SCHEMA)
    # per row: 5 TOFU values (+ exact memorisation and extraction strength on forget / retain, + the 4
    # membership-inference scores on forget / holdout), with the question and answers beside each
    assert table.num_rows == len(rows) == 5 * (5 + 5 + 12 + 12) + 2 * (5 + 5) + 4 * (5 + 5)
    assert set(table.column("metric").to_pylist()) == {"rouge_recall", "rouge_f1", "exact", "prob", "truth_ratio",
                                                       "exact_mem", "extraction_strength", "mia_loss_score",
                                                       "mia_zlib_score", "mia_min_k_score", "mia_min_k_plus_plus_score"}
    assert all(np.isfinite(table.column("value").to_numpy()))


def test_first_rows_only_and_missing_splits(env):
    task, model, tok, splits = env["task"], env["model"], env["tok"], env["splits"]
    cfg = {**EVAL, "max_questions": 2}
    s2, samples2 = task.evaluate(model, tok, splits, cfg)
    for split in ("forget", "retain", "real_authors", "world_facts"):
        for metric in ("rouge_recall", "prob", "truth_ratio"):
            assert np.allclose(values(samples2, split, metric), values(env["samples"], split, metric)[:2])
    # Only forget and retain (a source without TOFU's evaluation sets): no truth ratio, no utility.
    bare = {"forget": splits["forget"], "retain": splits["retain"]}
    s, samples = task.evaluate(model, tok, bare, EVAL, {"forget_truth_ratio": [1.0, 2.0]})
    assert s["truth_ratio_forget"] is None and s["truth_ratio_retain"] is None
    assert s["model_utility"] is None and s["forget_quality"] is None
    assert 0 <= s["prob_forget"] <= 1 and len(values(samples, "retain", "prob")) == 20
    assert {r["metric"] for r in samples} == {"rouge_recall", "rouge_f1", "exact", "prob", "exact_mem",
                                              "extraction_strength"}
    assert task.reference_data(model, tok, bare, EVAL) == {}
