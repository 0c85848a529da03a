"""Evaluation metrics of the TOFU and MUSE benchmarks, per sample so they can be stored.

- ``rouge``: ROUGE-L (recall / precision / F1) and exact match.
- ``generation``: greedy continuations, batched (left padding) and one prompt at a time.
- ``likelihood``: summed log-probabilities of label tokens (answers given prompts).
- ``tofu_metrics``: truth ratio, forget quality (KS test), probability, model utility (hmean).
- ``muse_metrics``: VerbMem, KnowMem, utility, Min-K% Prob and PrivLeak.
"""
from sweeper.metrics.generation import greedy_generate, greedy_generate_sequential
from sweeper.metrics.likelihood import answer_logprobs, sequence_logprobs
from sweeper.metrics.rouge import exact_match, rouge_l, rouge_l_recall

__all__ = [
    "answer_logprobs",
    "exact_match",
    "greedy_generate",
    "greedy_generate_sequential",
    "rouge_l",
    "rouge_l_recall",
    "sequence_logprobs",
]
