"""Exact memorisation and extraction strength of an answer, from teacher-forced argmax agreement.

``hit[t]`` says whether the model's argmax at answer position t, given the question and the true answer
tokens before t, is the true token (``sweeper.metrics.token_stats``). For an answer of n tokens:

- exact memorisation (Tirumala et al. 2022; open-unlearning's ``exact_memorization``):
  ``EM = mean_t hit[t]``, the fraction of answer tokens the model would predict;
- extraction strength (Carlini et al. 2021, as open-unlearning's ``extraction_strength``):
  ``ES = 1 - k* / n`` with ``k* = min{k in 0..n : greedy completion from the answer's first k tokens
  reproduces the rest}``. Greedy decoding from a true prefix reproduces the rest exactly iff every
  later position is a hit, so ``k*`` is one past the last miss (0 when every token is a hit, ES = 1;
  n when the last token is a miss, ES = 0). open-unlearning's loop stops at k = n - 1, so where the
  last token is a miss it reports 1/n instead of 0; everywhere else the two agree.

Usage::

    exact_memorisation([True, False, True]), extraction_strength([True, False, True])   # 0.667, 0.333
"""
from __future__ import annotations

import numpy as np


def exact_memorisation(hit) -> float:
    """Fraction of answer tokens whose teacher-forced argmax is the true token."""
    h = np.asarray(hit, dtype=bool).ravel()
    if h.size == 0:
        raise ValueError("an answer without scored tokens has no exact memorisation")
    return float(h.mean())


def extraction_strength(hit) -> float:
    """``1 - k*/n``: the share of the answer the model completes on its own from the shortest true prefix."""
    h = np.asarray(hit, dtype=bool).ravel()
    if h.size == 0:
        raise ValueError("an answer without scored tokens has no extraction strength")
    misses = np.flatnonzero(~h)
    k_star = 0 if misses.size == 0 else int(misses[-1]) + 1
    return 1.0 - k_star / h.size
