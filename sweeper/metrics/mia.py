"""Membership-inference attacks on answers, forget vs holdout, as the field's open-unlearning framework
reports them (``mia_loss``, ``mia_zlib``, ``mia_min_k``, ``mia_min_k_plus_plus``).

Each attack gives a text a *non-membership* score s (higher = looks less like training data), from its
answer tokens' log-probabilities ``lp_1..lp_n`` (``sweeper.metrics.token_stats``):

- LOSS (Yeom et al. 2018): ``s = -mean(lp)``, the mean token NLL;
- zlib (Carlini et al. 2021): ``s = -mean(lp) / len(zlib.compress(text.encode("utf-8")))``;
- Min-K% (Shi et al. 2023): ``s = -mean`` of the ``max(1, floor(k n))`` lowest ``lp`` (k = 0.4);
- Min-K%++ (Zhang et al. 2024): the same on ``z_t = (lp_t - mu_t) / sqrt(sigma2_t)``, where mu_t and
  sigma2_t are the mean and variance of log p over the vocabulary at position t (sigma2 clamped at 1e-6).

The AUC is the ROC AUC of telling holdout (label 1) from forget (label 0) by s, i.e.
``P(s_holdout > s_forget) + P(=) / 2`` (``sklearn.metrics.roc_auc_score``'s number): 1 = the forget
answers still look memorised, 0.5 = the model treats them like answers it never saw (a retrained model's
value, up to chance). MUSE's ``mia_auc`` (``sweeper.metrics.muse_metrics``) ranks by membership scores
instead, so it is 1 minus this one; PrivLeak keeps MUSE's convention and formula (``privleak_from``).

Usage::

    aucs = mia_aucs(forget_stats, holdout_stats, forget_answers, holdout_answers)
    aucs["mia_min_k"]
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from sweeper.metrics.muse_metrics import mia_auc, privleak

#: The field's k for Min-K% and Min-K%++ (open-unlearning's and MUSE's default).
MIN_K = 0.4
#: Attack name -> summary column.
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
COLUMNS = {a: f"mia_{a}" for a in ATTACKS}


def _bottom_mean(values: np.ndarray, k: float) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("no token values to score")
    return float(v[:max(1, math.floor(k * v.size))].mean())


def loss_score(logprob) -> float:
    """LOSS: the answer's mean token NLL."""
    return float(-np.mean(logprob))


def zlib_score(logprob, text: str) -> float:
    """zlib: the mean token NLL over the zlib-compressed size of the answer text in bytes."""
    return loss_score(logprob) / len(zlib.compress(text.encode("utf-8")))


def min_k_score(logprob, k: float = MIN_K) -> float:
    """Min-K%: minus the mean of the lowest k fraction of token log-probs (at least one token)."""
    return -_bottom_mean(logprob, k)


def min_k_plus_plus_score(logprob, mu, sigma2, k: float = MIN_K) -> float:
    """Min-K%++: Min-K% on the log-probs standardised by the vocabulary's mean and std at each position."""
    z = (np.asarray(logprob, float) - np.asarray(mu, float)) / np.sqrt(np.maximum(np.asarray(sigma2, float), 1e-6))
    return -_bottom_mean(z, k)


def attack_scores(stats: Sequence, texts: Sequence[str], k: float = MIN_K) -> dict[str, list[float]]:
    """Per-answer non-membership scores of every attack, from ``TokenStats`` and the answer texts."""
    return {"loss": [loss_score(s.logprob) for s in stats],
            "zlib": [zlib_score(s.logprob, t) for s, t in zip(stats, texts)],
            "min_k": [min_k_score(s.logprob, k) for s in stats],
            "min_k_plus_plus": [min_k_plus_plus_score(s.logprob, s.mu, s.sigma2, k) for s in stats]}


def field_auc(forget_scores, holdout_scores) -> float:
    """ROC AUC of holdout (1) vs forget (0) by non-membership score: ``P(s_h > s_f) + P(s_h = s_f) / 2``."""
    return mia_auc(forget_scores, holdout_scores)  # the same Mann-Whitney statistic, applied to s


def mia_aucs(forget: dict[str, list[float]], holdout: dict[str, list[float]]) -> dict[str, float]:
    """``{"mia_loss": AUC, ...}`` from ``attack_scores`` of the forget and the holdout answers."""
    return {COLUMNS[a]: field_auc(forget[a], holdout[a]) for a in ATTACKS}


def privleak_auc(forget: dict[str, list[float]], holdout: dict[str, list[float]]) -> float:
    """MUSE's PrivLeak AUC (Min-K% membership scores, forget 0 / holdout 1): 1 - ``mia_min_k``."""
    return mia_auc([-s for s in forget["min_k"]], [-s for s in holdout["min_k"]])


def privleak_from(forget: dict[str, list[float]], holdout: dict[str, list[float]], retrained_auc: float) -> float:
    """MUSE's PrivLeak in %: ``(AUC - AUC_retrained) / AUC_retrained * 100`` with ``privleak_auc``."""
    return privleak([-s for s in forget["min_k"]], [-s for s in holdout["min_k"]], retrained_auc).privleak
