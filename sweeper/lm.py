"""Causal-LM log-probabilities of the labelled (answer) tokens, the one place losses come from.

``labels`` use -100 for positions without loss (the prompt and the padding), as in transformers; the
label at position t is predicted from the logits at t - 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logprobs(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of answer-token log-probabilities and the number of answer tokens ([B], [B]).

    Differentiable; wrap in ``torch.no_grad()`` for evaluation.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    mask = labels != -100
    token_logprob = -F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return (token_logprob * mask).sum(dim=1), mask.sum(dim=1)
