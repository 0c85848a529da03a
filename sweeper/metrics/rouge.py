"""ROUGE-L and exact match between generated and reference text.

ROUGE-L (Lin, 2004) as computed by Google's ``rouge_score`` package, the implementation both TOFU
and MUSE call. Both strings are tokenised by ``rouge_score`` (lower-cased, every run of
non-alphanumeric characters is a separator, optional Porter stemming); with LCS the length of the
longest common subsequence of the two token lists::

    recall    = LCS / len(reference tokens)
    precision = LCS / len(prediction tokens)
    f1        = 2 * precision * recall / (precision + recall)   (0 when either is 0)

The benchmarks score *recall* (what fraction of the reference the model reproduced). Stemming:
TOFU uses ``use_stemmer=True``, MUSE ``use_stemmer=False``.
"""
from __future__ import annotations

import sys
from functools import lru_cache

#: nltk's optional integrations, imported by ``import nltk`` when installed but never used by ROUGE.
NLTK_EXTRAS_UNUSED = ("sklearn", "scipy.stats")


def _import_rouge_scorer():
    """``rouge_score.rouge_scorer``, imported without nltk's scikit-learn and scipy.stats integrations.

    rouge_score imports nltk for its Porter stemmer, and ``import nltk`` imports every nltk subpackage,
    which import scikit-learn and scipy.stats when they are installed: 1.0 of the 1.3 s that every
    evaluating process (each target build, trial process and Ray Train worker) would spend. nltk
    imports both inside ``try/except ImportError``, so for this one import they read as absent and
    nltk takes its own fallbacks; the stemmer and tokenizer ROUGE uses need neither. Modules already
    imported are left alone, and both import normally afterwards."""
    hidden = [name for name in NLTK_EXTRAS_UNUSED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # a None entry makes ``import name`` raise ImportError
    try:
        from rouge_score import rouge_scorer
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return rouge_scorer


@lru_cache(maxsize=2)
def _scorer(use_stemmer: bool) -> "rouge_scorer.RougeScorer":
    # Imported here, only where ROUGE is scored. Building a scorer is cheap but not free; sweeps call
    # this thousands of times.
    return _import_rouge_scorer().RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(predictions: list[str], references: list[str], use_stemmer: bool = False) -> list[dict]:
    """Per-sample ROUGE-L ``{"recall", "precision", "f1"}`` of each prediction against its reference.

    See the module docstring for the definition; recall is relative to the *reference* length.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = _scorer(bool(use_stemmer))
    out = []
    for pred, ref in zip(predictions, references):
        # rouge_score's argument order is score(target, prediction).
        s = scorer.score(ref, pred)["rougeL"]
        out.append({"recall": s.recall, "precision": s.precision, "f1": s.fmeasure})
    return out


def rouge_l_recall(predictions: list[str], references: list[str], use_stemmer: bool = False) -> list[float]:
    """Per-sample ROUGE-L recall, LCS / len(reference tokens) (shorthand for ``rouge_l``)."""
    return [s["recall"] for s in rouge_l(predictions, references, use_stemmer)]


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(pred: str, ref: str) -> bool:
    """True when ``pred`` and ``ref`` are equal after normalisation.

    Normalisation: every run of whitespace (spaces, tabs, newlines) becomes one space, leading and
    trailing whitespace is dropped, and case is folded (``str.casefold``). Punctuation is kept.
    """
    return _normalise(pred) == _normalise(ref)
