"""MUSE metrics (Shi et al., 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models").

- VerbMem: prompt with the first l tokens of a forget-set text, greedy-decode ``max_new_tokens``
  (128) tokens, score ROUGE-L *recall* against the true continuation truncated to
  ``max_new_tokens`` tokens (paper eq. 10; lower = less verbatim memorisation).
- KnowMem: few-shot QA. Prompt = the in-context pairs, each ``"Question: q\\nAnswer: a\\n\\n"``,
  then ``"Question: {q}\\nAnswer: "``; the greedy answer (32 tokens) is cut before ``"\\n\\n"``,
  ``"\\nQuestion"`` or ``"Question:"``; ROUGE-L recall against the reference answer (eq. 11).
  On the forget QA split it measures remaining knowledge; on the retain QA split it is MUSE's
  *utility* (eq. 12).
- PrivLeak: Min-K% Prob membership score (Shi et al., 2023) per text; AUC of telling the forget
  set from a never-seen holdout set by that score; then
  ``PrivLeak = (AUC(f_unlearn) - AUC(f_retrain)) / AUC(f_retrain) * 100`` (%). Close to 0 is good;
  strongly negative = under-unlearned (the forget set still looks memorised), positive =
  over-unlearned.

ROUGE is unstemmed (``use_stemmer=False``) as in MUSE's code.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from sweeper.metrics.generation import (
    KNOWMEM_STOP_STRINGS,
    eos_token_ids,
    eval_mode,
    greedy_generate,
    pad_token_id,
)
from sweeper.metrics.likelihood import forward_logits
from sweeper.metrics.rouge import rouge_l


def _rouge_report(outputs: list[str], references: list[str]) -> dict:
    scores = rouge_l(outputs, references, use_stemmer=False)
    recall = [s["recall"] for s in scores]
    return {
        "outputs": outputs,
        "references": references,
        "recall": recall,
        "f1": [s["f1"] for s in scores],
        "mean_recall": float(np.mean(recall)) if recall else float("nan"),
    }


def verbmem(
    model,
    tokenizer,
    prompts: Sequence[str],
    references: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 32,
    truncate_reference: bool = True,
) -> dict:
    """VerbMem: per-sample ROUGE-L recall (and F1) of the greedy continuation of each prompt
    against its ground-truth continuation ``gt``.

    With ``truncate_reference`` the reference is, as in MUSE's code, its first ``max_new_tokens``
    tokens (tokenised with special tokens, so a BOS counts) decoded back to text: the model is
    not asked to reproduce more than it may generate. Returns ``{"outputs", "references",
    "recall", "f1", "mean_recall"}``.
    """
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    refs = list(references)
    if truncate_reference:
        refs = [
            tokenizer.decode(
                tokenizer(r, add_special_tokens=True)["input_ids"][:max_new_tokens], skip_special_tokens=True
            )
            for r in refs
        ]
    outputs = greedy_generate(model, tokenizer, list(prompts), max_new_tokens, batch_size=batch_size)
    return _rouge_report(outputs, refs)


def knowmem_prompt(
    question: str, icl_pairs: Sequence[tuple[str, str]], query_template: str = "Question: {q}\nAnswer: "
) -> str:
    """MUSE's few-shot prompt: ``"Question: q\\nAnswer: a\\n\\n"`` per in-context pair, then the
    query. MUSE's query ends in ``"Answer: "`` (trailing space); pass another template to change it."""
    prefix = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl_pairs)
    return prefix + query_template.format(q=question)


def knowmem(
    model,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    icl_pairs: Sequence[tuple[str, str]],
    max_new_tokens: int = 32,
    batch_size: int = 32,
    query_template: str = "Question: {q}\nAnswer: ",
) -> dict:
    """KnowMem: per-sample ROUGE-L recall of the greedy few-shot answer against the reference.

    Prompt from ``knowmem_prompt`` (MUSE uses 10 in-context pairs); the answer is cut before the
    first ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``. Returns ``{"outputs", "references",
    "recall", "f1", "mean_recall"}``.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    prompts = [knowmem_prompt(q, icl_pairs, query_template) for q in questions]
    outputs = greedy_generate(
        model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, stop_strings=KNOWMEM_STOP_STRINGS
    )
    return _rouge_report(outputs, list(answers))


def utility(model, tokenizer, retain_questions, retain_answers, icl_pairs, **kwargs) -> dict:
    """MUSE utility: ``knowmem`` on the retain QA split (higher = better preserved)."""
    return knowmem(model, tokenizer, retain_questions, retain_answers, icl_pairs, **kwargs)


def token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``log p(x_t | x_<t)``: ``(logprobs [B, T-1], valid [B, T-1])``.

    Entry t-1 scores token t. ``valid`` is False where token t is padding or has no real token
    before it (so each row's first real token, e.g. BOS, is never scored, as in MUSE). Padding may
    be on either side. No grad; float32.
    """
    with torch.no_grad():
        logits = forward_logits(model, input_ids, attention_mask)[:, :-1, :].float()
        target = input_ids[:, 1:]
        lp = -F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    m = attention_mask.bool()
    return lp, m[:, 1:] & m[:, :-1]


def min_k_percent_score(token_logprobs, k: float = 0.4) -> float:
    """Min-K% Prob: the mean of the lowest ``k`` fraction of a text's token log-probs.

    ``floor(k * n)`` tokens as in the reference code (at least 1, so short texts get a score).
    Higher = more likely a training member. (MUSE stores the negation; ``mia_auc`` accounts for it.)
    """
    v = np.sort(np.asarray(token_logprobs, dtype=np.float64).ravel())
    if v.size == 0:
        raise ValueError("no token log-probs to score")
    if not 0 < k <= 1:
        raise ValueError("k must be in (0, 1]")
    n = max(1, math.floor(k * v.size))
    return float(v[:n].mean())


def min_k_scores(
    model, tokenizer, texts: Sequence[str], k: float = 0.4, batch_size: int = 8, max_length: int | None = None
) -> list[float]:
    """``min_k_percent_score`` of each text (tokenised with special tokens, optionally truncated)."""
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, eos_ids)
    device = next(model.parameters()).device
    encoded = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    if max_length is not None:
        encoded = [e[:max_length] for e in encoded]
    scores: list[float] = []
    with eval_mode(model):
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.tensor([e + [pad_id] * (width - len(e)) for e in chunk], dtype=torch.long)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in chunk], dtype=torch.long)
            lp, valid = token_logprobs(model, ids.to(device), mask.to(device))
            for row in range(len(chunk)):
                scores.append(min_k_percent_score(lp[row][valid[row]].cpu().numpy(), k))
    return scores


def mia_auc(forget_scores, holdout_scores) -> float:
    """MUSE's PrivLeak AUC: ``P(s_holdout > s_forget) + 0.5 * P(s_holdout == s_forget)``.

    ``s`` = Min-K% score (higher = looks more like a member). MUSE labels forget 0 and holdout 1
    and ranks by ``-(-minK)``, i.e. this is the ROC AUC of picking out the *holdout* set. A model
    that memorised the forget set gives AUC near 0, one that never saw it near 0.5. Computed as the
    Mann-Whitney U statistic / (n_forget * n_holdout), identical to sklearn's ``roc_auc_score``.
    """
    f = np.asarray(forget_scores, dtype=np.float64).ravel()
    h = np.asarray(holdout_scores, dtype=np.float64).ravel()
    if f.size == 0 or h.size == 0:
        raise ValueError("need at least one forget and one holdout score")
    # U counted on the sorted forget scores: for each holdout score, the forget scores below it count 1
    # and those equal to it one half (the U of average ranks). O(n log n), and no scipy.stats import,
    # which would cost every evaluating trial process 0.6 s.
    f = np.sort(f)
    below, not_above = np.searchsorted(f, h, side="left"), np.searchsorted(f, h, side="right")
    u_holdout = below.sum() + 0.5 * (not_above - below).sum()
    return float(u_holdout / (f.size * h.size))


class PrivLeak(NamedTuple):
    auc: float  #: ``mia_auc`` of the unlearned model
    privleak: float  #: (auc - retain_model_auc) / retain_model_auc * 100


def privleak(forget_scores, holdout_scores, retain_model_auc: float) -> PrivLeak:
    """PrivLeak = ``(AUC(f_unlearn) - AUC(f_retrain)) / AUC(f_retrain) * 100`` (percent).

    ``forget_scores`` / ``holdout_scores``: Min-K% scores of the *unlearned* model;
    ``retain_model_auc``: ``mia_auc`` of the retrained (never saw the forget set) model.
    """
    if not retain_model_auc > 0:
        raise ValueError(f"retain_model_auc must be > 0, got {retain_model_auc}")
    auc = mia_auc(forget_scores, holdout_scores)
    return PrivLeak(auc=auc, privleak=(auc - retain_model_auc) / retain_model_auc * 100.0)
