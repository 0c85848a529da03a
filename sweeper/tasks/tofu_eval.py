"""TOFU's evaluation of one model (Maini et al. 2024, ``evaluate_util.py`` + ``aggregate_eval_stat.py``).

Evaluation sets, as TOFU's ``eval_everything`` config names them (each cut to its first
``max_questions`` rows, so the choice is deterministic):

============  ==========================================  =====================  ==================
split         rows                                        truth-ratio "correct"  Probability
============  ==========================================  =====================  ==================
forget        ``forget_perturbed`` (else ``forget``)      ``paraphrased_answer`` P(answer)
retain        ``retain_perturbed`` (else ``retain``)      ``paraphrased_answer`` P(answer)
real_authors  ``real_authors`` (TOFU's ``_perturbed``)    ``answer``             P(c) / sum P(opts)
world_facts   ``world_facts`` (TOFU's ``_perturbed``)     ``answer``             P(c) / sum P(opts)
============  ==========================================  =====================  ==================

Per row (``sweeper.metrics.tofu_metrics`` holds the formulas):

- ROUGE: ROUGE-L recall (and F1) of the greedy answer to ``Question: {q}\\nAnswer:`` against
  ``answer``, stemmed as TOFU's scorer; exact: the greedy answer equals ``answer`` after whitespace
  and case normalisation.
- P(a|q) = exp(log p(" a" + eos | prompt) / tokens), the length-normalised probability (TOFU's
  ``exp(-avg_gt_loss)``; its collator scores one eos after the answer, so do we).
- Truth ratio r = P_wrong / P_correct with P_wrong the geometric mean of the perturbed answers'
  normalised probabilities (TOFU's ``exp(avg_paraphrased_loss - mean(avg_perturbed_loss))``).

Aggregates: ``prob_*`` the mean of the per-row probabilities; ``truth_ratio_forget`` mean(min(r, 1/r));
``truth_ratio_retain`` (and the real-author / world-fact utility components) mean(max(0, 1 - r));
``model_utility`` the harmonic mean of {retain, real_authors, world_facts} x {Prob., ROUGE, Truth
Ratio}; ``forget_quality`` the two-sided KS-test p-value between this model's forget truth ratios and
those of the retain-only model (KS is invariant under r -> 1/r, so it equals TOFU's on 1/r);
``final_loss_*`` the mean answer-token NLL over the rows (the loop's L_F / L_R on evaluation rows).

All log-probabilities of one evaluation (answers, paraphrases, perturbed answers and options of
every split) are scored in one length-sorted, batched pass; duplicate (question, answer) pairs once.
"""
from __future__ import annotations

import math

import numpy as np

from sweeper.metrics.evaluate import answer_nll, greedy_answers
from sweeper.metrics import tofu_metrics as tm
from sweeper.metrics.likelihood import answer_logprobs
from sweeper.metrics.rouge import exact_match, rouge_l

#: Evaluation splits in the order they are reported; each maps to (rows' split names, base answer key).
EVAL_SPLITS = {
    "forget": (("forget_perturbed", "forget"), "paraphrased_answer"),
    "retain": (("retain_perturbed", "retain"), "paraphrased_answer"),
    "real_authors": (("real_authors",), "answer"),
    "world_facts": (("world_facts",), "answer"),
}
#: Splits whose Probability is multiple choice (the correct option's share of all options' mass).
MC_SPLITS = ("real_authors", "world_facts")
#: TOFU uses the stemmed ROUGE-L scorer.
USE_STEMMER = True


def eval_rows(splits: dict[str, list], split: str, n: int) -> list[dict]:
    """The first ``n`` rows of ``split``'s evaluation set (see the table above); [] when absent."""
    for name in EVAL_SPLITS[split][0]:
        if splits.get(name):
            return list(splits[name][:n])
    return []


def has_perturbed(rows: list[dict], base_key: str) -> bool:
    return bool(rows) and all(isinstance(r.get(base_key), str) and r.get("perturbed_answer") for r in rows)


def generation_scores(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int,
                      with_loss: bool = True) -> dict:
    """Per-row ROUGE-L recall / F1 and exact match of greedy answers, and the mean answer NLL."""
    if not rows:
        return {"recall": [], "f1": [], "exact": [], "loss": float("nan"), "answers": []}
    answers = greedy_answers(model, tokenizer, rows, max_new_tokens, batch_size)
    scores = rouge_l(answers, [r["answer"] for r in rows], use_stemmer=USE_STEMMER)
    return {"recall": [s["recall"] for s in scores], "f1": [s["f1"] for s in scores],
            "exact": [float(exact_match(a, r["answer"])) for a, r in zip(answers, rows)],
            "loss": answer_nll(model, tokenizer, rows, batch_size) if with_loss else float("nan"),
            "answers": answers}


def score_pairs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int) -> dict:
    """``{(question, answer): (sum log-prob, tokens)}`` of distinct pairs, scored in batches of
    similar length (less padding; the padding is masked, so the values do not depend on it)."""
    unique = list(dict.fromkeys(pairs))
    order = sorted(range(len(unique)), key=lambda i: len(unique[i][0]) + len(unique[i][1]))
    qs = [unique[i][0] for i in order]
    ans = [unique[i][1] for i in order]
    sums, counts = answer_logprobs(model, tokenizer, qs, ans, batch_size=batch_size) if unique else ([], [])
    return {unique[i]: (float(s), int(c)) for i, s, c in zip(order, sums, counts)}


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def likelihood_scores(model, tokenizer, rows_by_split: dict[str, list[dict]], batch_size: int,
                      scored: dict | None = None) -> dict:
    """Per split: per-row ``prob`` and (where the rows have perturbed answers) ``truth_ratio``.
    ``scored``: ``{(question, answer): TokenStats}`` already computed (``tofu_field.answer_stats``),
    whose sums are used instead of scoring those pairs again."""
    scored = scored or {}
    wanted: list[tuple[str, str]] = []
    for split, rows in rows_by_split.items():
        base = EVAL_SPLITS[split][1]
        perturbed = has_perturbed(rows, base)
        for r in rows:
            wanted.append((r["question"], r["answer"]))
            if perturbed:
                wanted.append((r["question"], r[base]))
                wanted += [(r["question"], p) for p in r["perturbed_answer"]]
    lp = score_pairs(model, tokenizer, [p for p in wanted if p not in scored], batch_size)
    lp.update({p: (st.sum_logprob, st.n) for p, st in scored.items()})
    out = {}
    for split, rows in rows_by_split.items():
        base = EVAL_SPLITS[split][1]
        perturbed = has_perturbed(rows, base)
        probs, ratios = [], []
        for r in rows:
            q = r["question"]
            a_lp, a_n = lp[(q, r["answer"])]
            if perturbed:
                w = [lp[(q, p)] for p in r["perturbed_answer"]]
                w_lp, w_n = [[x[0] for x in w]], [[x[1] for x in w]]
                b_lp, b_n = lp[(q, r[base])]
                ratios.append(float(tm.truth_ratio([b_lp], [b_n], w_lp, w_n)[0]))
            if split in MC_SPLITS and perturbed:
                probs.append(float(tm.answer_probability_mc([a_lp], [a_n], w_lp, w_n)[0]))
            else:
                probs.append(float(tm.answer_probability([a_lp], [a_n])[0]))
        out[split] = {"prob": probs, "truth_ratio": ratios if perturbed else []}
    return out


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def utility_components(gen: dict, lik: dict) -> dict[str, float] | None:
    """TOFU's 9 model-utility values (``tofu_metrics.UTILITY_KEYS``), or None if a split is missing."""
    values = {}
    for split in ("retain", "real_authors", "world_facts"):
        if split not in gen or not lik.get(split, {}).get("truth_ratio"):
            return None
        values[f"{split}_prob"] = _mean(lik[split]["prob"])
        values[f"{split}_rouge"] = _mean(gen[split]["recall"])
        values[f"{split}_truth_ratio"] = tm.truth_ratio_retain_aggregate(lik[split]["truth_ratio"])
    return values


def model_utility(values: dict[str, float] | None) -> float | None:
    """Harmonic mean of the 9 components; None without them, NaN when one is not finite (a diverged
    model) rather than an error that would lose the trial's other results."""
    if values is None:
        return None
    if not _finite(*values.values()):
        return float("nan")
    return tm.model_utility(values)


def forget_quality(forget_r: list[float], reference: dict | None) -> float | None:
    """KS p-value against ``reference["forget_truth_ratio"]``; None without both samples."""
    ref = (reference or {}).get("forget_truth_ratio")
    if not ref or not forget_r:
        return None
    if not (np.all(np.isfinite(forget_r)) and np.all(np.isfinite(ref))):
        return float("nan")
    return tm.forget_quality(forget_r, ref)


def _cfg(eval_cfg: dict) -> tuple[int, int, int]:
    return (int(eval_cfg["max_questions"]), int(eval_cfg.get("max_new_tokens", 24)),
            int(eval_cfg.get("batch_size", 32)))


def curve_scores(model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> tuple[dict, dict]:
    """(summary's cheap columns, per-row generation scores of forget and retain)."""
    n, tokens, bs = _cfg(eval_cfg)
    gen = {s: generation_scores(model, tokenizer, eval_rows(splits, s, n), tokens, bs) for s in ("forget", "retain")}
    summary = {}
    for s in ("forget", "retain"):
        summary[f"rouge_{s}"] = _mean(gen[s]["recall"])
        summary[f"rouge_f1_{s}"] = _mean(gen[s]["f1"])
        summary[f"exact_{s}"] = _mean(gen[s]["exact"])
        summary[f"final_loss_{s}"] = gen[s]["loss"]
    return summary, gen


def forget_truth_ratios(model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> list[float]:
    """Per-row truth ratios r on the forget evaluation rows ([] without perturbed answers)."""
    n, _, bs = _cfg(eval_cfg)
    return likelihood_scores(model, tokenizer, {"forget": eval_rows(splits, "forget", n)}, bs)["forget"]["truth_ratio"]


def sample_rows(split: str, rows: list[dict], per_metric: dict[str, list], answers: list[str] | None = None) -> list[dict]:
    """Per-sample rows of ``samples.parquet``: one per (row, metric), each with the question, the
    reference answer and (where generated) the model's greedy answer, so a score can be read back to
    the answer that caused it."""
    out = []
    for metric, values in per_metric.items():
        for i, v in enumerate(values):
            out.append({"split": split, "metric": metric, "index": i, "value": float(v),
                        "question": rows[i]["question"], "reference_answer": rows[i]["answer"],
                        "generated_answer": answers[i] if answers else None})
    return out


def curve_samples(gen: dict, splits: dict[str, list], eval_cfg: dict) -> list[dict]:
    """The per-sample rows of a curve evaluation (``curve_scores``'s ``gen``): ROUGE and exact per question."""
    n = _cfg(eval_cfg)[0]
    return [r for s in ("forget", "retain") if gen[s]["answers"]
            for r in sample_rows(s, eval_rows(splits, s, n), {"rouge_recall": gen[s]["recall"],
                                 "rouge_f1": gen[s]["f1"], "exact": gen[s]["exact"]}, gen[s]["answers"])]


def evaluate_tofu(model, tokenizer, splits: dict[str, list], eval_cfg: dict, reference: dict | None = None,
                  selected: set[str] | None = None) -> tuple[dict, list[dict]]:
    """(summary columns, per-sample rows); see the module docstring and ``tofu_field`` for every
    definition. Selected metrics (``selected``, default all) left blank are named in one line."""
    from sweeper.tasks import tofu_field as tf
    n, tokens, bs = _cfg(eval_cfg)
    summary, gen = curve_scores(model, tokenizer, splits, eval_cfg)
    rows = {s: eval_rows(splits, s, n) for s in EVAL_SPLITS}
    rows = {s: r for s, r in rows.items() if r}
    for s in MC_SPLITS:
        if s in rows:
            gen[s] = generation_scores(model, tokenizer, rows[s], tokens, bs, with_loss=False)
    token_rows = {"forget": rows.get("forget", []), "retain": rows.get("retain", []),
                  "holdout": tf.holdout_rows(splits, len(rows.get("forget", [])))}
    stats = tf.answer_stats(model, tokenizer, token_rows, bs)
    lik = likelihood_scores(model, tokenizer, rows, bs, scored=stats)
    for s in ("forget", "retain"):
        summary[f"prob_{s}"] = _mean(lik[s]["prob"]) if s in lik else None
    fr = lik.get("forget", {}).get("truth_ratio", [])
    rr = lik.get("retain", {}).get("truth_ratio", [])
    summary["truth_ratio_forget"] = tm.truth_ratio_forget_aggregate(fr) if fr else None
    summary["truth_ratio_retain"] = tm.truth_ratio_retain_aggregate(rr) if rr else None
    summary["model_utility"] = model_utility(utility_components(gen, lik))
    summary["forget_quality"] = forget_quality(fr, reference)
    field, field_rows, blank = tf.field_metrics(stats, token_rows, reference)
    summary.update(field)
    if not fr:
        why = "the forget rows have no perturbed answers: the data's <forget split>_perturbed.json was missing"
        blank.update({"truth_ratio_forget": why, "forget_quality": why})
    elif summary["forget_quality"] is None:
        blank["forget_quality"] = "no retrained reference; set eval.retrained_reference: true"
    if (line := tf.blank_note(blank, selected if selected is not None else set(summary))):
        print(line, flush=True)
    samples = []
    for s in rows:
        per_metric = {"rouge_recall": gen.get(s, {}).get("recall", []), "rouge_f1": gen.get(s, {}).get("f1", []),
                      "exact": gen.get(s, {}).get("exact", []), "prob": lik[s]["prob"],
                      "truth_ratio": lik[s]["truth_ratio"], **field_rows.get(s, {})}
        samples += sample_rows(s, rows[s], per_metric, gen.get(s, {}).get("answers"))
    if "holdout" in field_rows:
        samples += sample_rows("holdout", token_rows["holdout"], field_rows["holdout"])
    return summary, samples
