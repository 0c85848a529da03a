"""Evaluation of a model on QA rows: greedy answers scored by ROUGE-L recall and exact match, and the
mean answer-token NLL. Used for the No-unlearn target, for curves during unlearning and at the end.

Usage::

    scores = evaluate_qa(model, tokenizer, rows[:20], max_new_tokens=24)
    scores["rouge"], scores["exact"], scores["loss"]
"""
from __future__ import annotations

import torch

from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.templates import template_of
from sweeper.models.lm import sequence_logprobs
from sweeper.metrics.generation import greedy_generate
from sweeper.metrics.rouge import exact_match, rouge_l_recall


def greedy_answers(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy answers to the rows' questions, prompted in the tokenizer's template."""
    template = template_of(tokenizer)
    prompts = [template.encode_prompt(tokenizer, r["question"]) for r in rows]
    return [a.strip() for a in greedy_generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size)]


@torch.no_grad()
def answer_nll(model, tokenizer, rows: list[dict], batch_size: int = 32) -> float:
    """Mean answer-token NLL over ``rows`` (the L_R / L_F of the paper's Figure 1, on eval rows)."""
    ds = QADataset(rows, tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(ds), batch_size):
        batch = collate_qa([ds[i] for i in range(start, min(start + batch_size, len(ds)))], tokenizer.pad_token_id)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        logp, n = sequence_logprobs(model, batch)
        total, count = total - float(logp.sum()), count + int(n.sum())
    model.train(was_training)
    return total / max(count, 1)


def evaluate_qa(model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int = 32) -> dict:
    """ROUGE-L recall and exact match of greedy answers, and the answer NLL, averaged over ``rows``."""
    answers = greedy_answers(model, tokenizer, rows, max_new_tokens, batch_size)
    refs = [r["answer"] for r in rows]
    rouge = rouge_l_recall(answers, refs)
    exact = [exact_match(a, r) for a, r in zip(answers, refs)]
    return {"rouge": sum(rouge) / len(rouge), "exact": sum(exact) / len(exact),
            "loss": answer_nll(model, tokenizer, rows, batch_size), "answers": answers}
