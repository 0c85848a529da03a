"""Log-likelihoods of token sequences under a causal LM.

For a sequence x_1..x_T and label positions S (tokens whose label is not -100)::

    sum_logprob = sum_{t in S} log p(x_t | x_<t)        n_tokens = |S|

with the causal-LM shift: the logits at position t-1 predict the label at position t, so a label
on the first position is never scored. ``exp(sum_logprob / n_tokens)`` is the length-normalised
probability TOFU's "Probability" and Truth Ratio are built on.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from sweeper.metrics.generation import eos_token_ids, eval_mode, pad_token_id

IGNORE_INDEX = -100


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row, whatever side the padding is on.

    GPT-2 and friends default to ``arange(T)`` positions, which is wrong for left-padded rows;
    passing these makes padded and unpadded scoring agree.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _accepts_position_ids(model) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] with position ids derived from the attention mask (see above)."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if _accepts_position_ids(model):
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    return model(**kwargs).logits


def sequence_logprobs(
    model, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_logprob [B], n_tokens [B])`` over label positions (``labels != -100``), causal shift.

    Does not touch grad mode or train/eval mode: wrap in ``torch.no_grad()`` for evaluation, or
    backpropagate through ``sum_logprob`` for a loss. Computed in float32 whatever the model dtype.
    """
    logits = forward_logits(model, input_ids, attention_mask)
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    # cross_entropy = -log softmax at the label, 0 at ignored positions; avoids materialising a
    # second [B, T, V] log-softmax tensor.
    nll = F.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    n_tokens = (shift_labels != IGNORE_INDEX).sum(-1)
    return -nll.sum(-1), n_tokens


def _pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def answer_logprobs(
    model,
    tokenizer,
    questions: list[str],
    answers: list[str],
    template=None,
    batch_size: int = 16,
    append_eos: bool = True,
) -> tuple[list[float], list[int]]:
    """Per-sample ``log p(answer | prompt)`` summed over answer tokens, and the answer token counts.

    As TOFU builds its eval batches: the prompt template's (``template``, default the tokenizer's own,
    ``sweeper.data.templates``) prompt and answer are tokenised together with special tokens, the
    prompt's tokens are masked out of the labels, and (``append_eos=True``, TOFU's collator) one EOS
    token is scored as part of the answer. The model is put in eval mode and scored under ``no_grad``.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    from sweeper.data.templates import template_of
    template = template or template_of(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, eos_ids)
    rows, label_rows = [], []
    for q, a in zip(questions, answers):
        ids, n_prompt = template.encode(tokenizer, q, a)
        if not append_eos and len(ids) > n_prompt + 1 and ids[-1] == tokenizer.eos_token_id:
            ids = ids[:-1]
        rows.append(ids)
        label_rows.append([IGNORE_INDEX] * n_prompt + ids[n_prompt:])
    device = next(model.parameters()).device
    sums: list[float] = []
    counts: list[int] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            input_ids = _pad_right(chunk, pad_id)
            labels = _pad_right(label_rows[start : start + batch_size], IGNORE_INDEX)
            mask = _pad_right([[1] * len(r) for r in chunk], 0)
            s, n = sequence_logprobs(model, input_ids.to(device), labels.to(device), mask.to(device))
            sums.extend(s.tolist())
            counts.extend(n.tolist())
    return sums, counts
