"""Causal-LM log-probabilities of the labelled (answer) tokens, in the batch form the loop uses.

``labels`` use -100 for positions without loss (the prompt and the padding), as in transformers; the
label at position t is predicted from the logits at t - 1. The computation itself lives in
``sweeper.metrics.likelihood`` (position ids from the attention mask, float32), shared with evaluation.
"""
from __future__ import annotations

import torch

from sweeper.metrics.likelihood import sequence_logprobs as _sequence_logprobs


def sequence_logprobs(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of answer-token log-probabilities and the number of answer tokens ([B], [B]).

    Differentiable; wrap in ``torch.no_grad()`` for evaluation.
    """
    return _sequence_logprobs(model, batch["input_ids"], batch["labels"], batch["attention_mask"])
