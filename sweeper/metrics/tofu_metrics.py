"""TOFU metrics (Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs").

All probabilities are *length-normalised*: for an answer a with token log-probs summing to
``logprob`` over ``len`` tokens given the question, ``P(a|q) = exp(logprob / len)`` (the geometric
mean per-token probability; TOFU's ``exp(-avg_loss)``).

- Truth ratio, per question: ``R_truth = P_wrong / P_correct`` with ``P_correct`` the normalised
  probability of the *paraphrased* correct answer (on real authors / world facts TOFU uses the
  correct answer itself) and ``P_wrong`` the geometric mean of the normalised probabilities of
  the (5) perturbed, wrong answers.
- Reported "Truth Ratio": forget set ``mean(min(R, 1/R))``; retain / real authors / world facts
  ``mean(max(0, 1 - R))`` (higher = prefers the truth).
- Forget quality: p-value of the two-sided Kolmogorov-Smirnov test between the forget-set truth
  ratios of the unlearned model and of the model retrained on the retain set only.
- Probability: retain set ``mean(P(answer|q))``; real authors / world facts (multiple choice)
  ``mean(P(correct) / (P(correct) + sum_wrong P(wrong)))``.
- ROUGE: ROUGE-L recall of the greedy answer against the reference, stemmed (``use_stemmer=True``).
- Model utility: harmonic mean of the 9 numbers {retain, real authors, world facts} x
  {Probability, ROUGE, Truth Ratio}.
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from sweeper.metrics.generation import greedy_generate
from sweeper.metrics.rouge import rouge_l

#: The 9 model-utility components (suggested keys; ``model_utility`` only checks there are 9).
UTILITY_KEYS: tuple[str, ...] = tuple(
    f"{split}_{metric}"
    for split in ("retain", "real_authors", "world_facts")
    for metric in ("prob", "rouge", "truth_ratio")
)


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _as_2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [samples, answers], got shape {a.shape}")
    return a


def answer_probability(logprob, length) -> np.ndarray:
    """Per-sample normalised probability ``exp(logprob / length)``; TOFU's retain "Probability"
    is the mean of these."""
    return np.exp(_as_1d(logprob, "logprob") / _as_1d(length, "length"))


def answer_probability_mc(correct_logprob, correct_len, wrong_logprobs, wrong_lens) -> np.ndarray:
    """Per-sample ``P(correct) / (P(correct) + sum_j P(wrong_j))`` with normalised probabilities.

    TOFU's "Probability" on the real-authors and world-facts sets (mean of these): the correct
    option's share of the probability mass over all options.
    """
    p_c = answer_probability(correct_logprob, correct_len)
    p_w = np.exp(_as_2d(wrong_logprobs, "wrong_logprobs") / _as_2d(wrong_lens, "wrong_lens"))
    return p_c / (p_c + p_w.sum(-1))


def truth_ratio(correct_logprob, correct_len, perturbed_logprobs, perturbed_lens) -> np.ndarray:
    """Per-sample ``R_truth = P_wrong / P_correct`` (see module docstring).

    ``correct_*`` [N]: the paraphrased correct answer; ``perturbed_*`` [N, K]: the K wrong answers.
    ``P_wrong = (prod_j P_j)^(1/K)``. Computed in log space so tiny probabilities do not underflow.
    """
    log_p_correct = _as_1d(correct_logprob, "correct_logprob") / _as_1d(correct_len, "correct_len")
    log_p_wrong = (
        _as_2d(perturbed_logprobs, "perturbed_logprobs") / _as_2d(perturbed_lens, "perturbed_lens")
    ).mean(-1)
    return np.exp(log_p_wrong - log_p_correct)


def truth_ratio_forget_aggregate(r) -> float:
    """TOFU's forget-set "Truth Ratio": ``mean(min(R, 1/R))`` (1 = indifferent between true and false)."""
    r = _as_1d(r, "r")
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_retain_aggregate(r) -> float:
    """TOFU's retain / real-authors / world-facts "Truth Ratio": ``mean(max(0, 1 - R))``."""
    r = _as_1d(r, "r")
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(unlearned_forget_r, retain_model_forget_r) -> float:
    """Two-sided KS-test p-value between forget-set truth ratios of the unlearned and retain models.

    High (close to 1) = the unlearned model's truth-ratio distribution on the forget set is
    indistinguishable from a model never trained on it. ``scipy.stats.ks_2samp`` with its default
    (exact for these sizes) method, as TOFU's code calls it.
    """
    a = _as_1d(unlearned_forget_r, "unlearned_forget_r")
    b = _as_1d(retain_model_forget_r, "retain_model_forget_r")
    from scipy import stats  # here, not at the top: 0.4 s of imports in every trial process, for one test
    return float(stats.ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float], allow_partial: bool = False) -> float:
    """Harmonic mean of the 9 utility components (``UTILITY_KEYS``), as TOFU's ``hmean``.

    Raises if there are not exactly 9 values (unless ``allow_partial``) or any value is negative
    or not finite. A component equal to 0 (a collapsed model) gives utility 0, the harmonic-mean
    limit, which is what scipy's ``hmean`` and TOFU report.
    """
    if not values:
        raise ValueError("no utility components given")
    if len(values) != len(UTILITY_KEYS) and not allow_partial:
        raise ValueError(f"model utility needs {len(UTILITY_KEYS)} values, got {len(values)}: {sorted(values)}")
    v = np.asarray(list(values.values()), dtype=np.float64)
    bad = {k: x for k, x in values.items() if not np.isfinite(x) or x < 0}
    if bad:
        raise ValueError(f"utility components must be finite and >= 0: {bad}")
    if np.any(v == 0):
        return 0.0
    return float(statistics.harmonic_mean(v.tolist()))  # scipy.stats.hmean's value; the stdlib's import is free


def generation_rouge(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    template: str = "Question: {q}\nAnswer:",
    max_new_tokens: int = 200,
    batch_size: int = 32,
    use_stemmer: bool = True,
) -> dict:
    """TOFU "ROUGE": per-sample ROUGE-L recall of the greedy answer to ``template.format(q=...)``.

    Returns ``{"outputs", "recall", "f1", "mean_recall"}`` (per-sample lists plus the mean).
    """
    prompts = [template.format(q=q) for q in questions]
    outputs = greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size)
    scores = rouge_l(outputs, list(answers), use_stemmer=use_stemmer)
    recall = [s["recall"] for s in scores]
    return {
        "outputs": outputs,
        "recall": recall,
        "f1": [s["f1"] for s in scores],
        "mean_recall": float(np.mean(recall)) if recall else float("nan"),
    }
