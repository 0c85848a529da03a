"""Per-token statistics of answers under teacher forcing, from one forward pass per batch.

For each (question, answer) pair, encoded exactly as ``answer_logprobs`` encodes it (the tokenizer's
prompt template, the answer's tokens plus one eos scored), at every scored position t::

    logprob[t]  = log p(y_t | x, y_<t)                       (the token's log-probability)
    hit[t]      = argmax_v p(v | x, y_<t) == y_t             (teacher-forced greedy agreement)
    mu[t]       = sum_v p(v) log p(v)                        (mean log-prob of the vocabulary)
    sigma2[t]   = sum_v p(v) (log p(v))^2 - mu[t]^2          (its variance; Min-K%++'s normaliser)

The sum of ``logprob`` is the same number ``answer_logprobs`` returns (same cross-entropy, same masks),
so the TOFU evaluation scores the forget / retain / holdout answers once, here, and reads Probability,
Truth Ratio, the membership-inference scores (``sweeper.metrics.mia``) and extraction strength / exact
memorisation (``sweeper.metrics.extraction``) from the same pass. ``mu`` and ``sigma2`` are computed
on the answer positions only (a [tokens, vocab] log-softmax, never [batch, length, vocab]).

Usage::

    stats = answer_token_stats(model, tokenizer, ["Who wrote X?"], ["Jane Doe wrote X."])
    stats[0].logprob.sum(), stats[0].hit.mean()
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sweeper.metrics.generation import eos_token_ids, eval_mode, pad_token_id
from sweeper.metrics.likelihood import IGNORE_INDEX, _pad_right, forward_logits


@dataclass
class TokenStats:
    """One answer's per-token values (numpy, float64 / bool), in answer order."""

    logprob: np.ndarray
    hit: np.ndarray
    mu: np.ndarray
    sigma2: np.ndarray

    @property
    def n(self) -> int:
        return int(self.logprob.size)

    @property
    def sum_logprob(self) -> float:
        return float(self.logprob.sum())


def _encode(tokenizer, questions, answers) -> tuple[list[list[int]], list[list[int]]]:
    from sweeper.data.templates import template_of
    template = template_of(tokenizer)
    rows, labels = [], []
    for q, a in zip(questions, answers):
        ids, n_prompt = template.encode(tokenizer, q, a)
        rows.append(ids)
        labels.append([IGNORE_INDEX] * n_prompt + ids[n_prompt:])
    return rows, labels


@torch.no_grad()
def _batch_stats(model, input_ids, labels, mask) -> list[TokenStats]:
    logits = forward_logits(model, input_ids, mask)[:, :-1, :].float()
    target = labels[:, 1:]
    # The same cross-entropy as sequence_logprobs: summed, it gives answer_logprobs' numbers bit for bit.
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    scored = target != IGNORE_INDEX
    out = []
    for b in range(input_ids.shape[0]):
        pos = scored[b]
        lg = logits[b][pos]                       # [tokens, vocab]: answer positions only
        logp = torch.log_softmax(lg, -1)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma2 = (p * logp.square()).sum(-1) - mu.square()
        out.append(TokenStats(logprob=(-nll[b][pos]).double().cpu().numpy(),
                              hit=(lg.argmax(-1) == target[b][pos]).cpu().numpy(),
                              mu=mu.double().cpu().numpy(), sigma2=sigma2.double().cpu().numpy()))
    return out


def answer_token_stats(model, tokenizer, questions: list[str], answers: list[str],
                       batch_size: int = 16) -> list[TokenStats]:
    """``TokenStats`` of each answer given its question (see the module docstring); eval mode, no grad."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    rows, label_rows = _encode(tokenizer, questions, answers)
    pad_id = pad_token_id(tokenizer, eos_token_ids(model, tokenizer))
    device = next(model.parameters()).device
    out: list[TokenStats] = []
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            input_ids = _pad_right(chunk, pad_id).to(device)
            labels = _pad_right(label_rows[start:start + batch_size], IGNORE_INDEX).to(device)
            mask = _pad_right([[1] * len(r) for r in chunk], 0).to(device)
            out += _batch_stats(model, input_ids, labels, mask)
    return out
