"""The length policy: every QA row a target holds fits its token limit, and no answer is ever cut.

Stage 1 measures every row's tokens (the longest of its question-answer pairs: answer, paraphrase and
each perturbed answer, in the model's prompt template) and fits the rows to ``limit`` = the smaller of
the data's ``max_length`` and the model's context:

* ``truncation: question`` (default): a row that is too long loses words from the *start* of its
  question until every pair fits; the answer is kept whole.
* ``truncation: drop``: a row that is too long is dropped.

A row whose answer alone does not fit is dropped under either policy. Both are counted per split and
reported (stage 1's log, the target's ``metrics.json``). When more than 1 % of a split's rows, and more
than one row, are too long (the 99th percentile then exceeds the limit), or a split loses every row, the
combination is refused before any training, in one sentence naming the data, the length, the model and
its limit::

    fitted, report = fit_qa_splits(splits, tokenizer, limit=512, truncation="question")
    refuse_if_too_long(report, limit=512, data_name="tofu", model_name="tiny-gpt2", context=512, max_length=512)
"""
from __future__ import annotations

import numpy as np

from sweeper.data.templates import RowTooLong, template_of

TRUNCATIONS = ("question", "drop")


def answer_texts(row: dict) -> list[str]:
    """Every answer a row's question is scored with: answer, paraphrased answer, perturbed answers."""
    out = [row["answer"]]
    if isinstance(row.get("paraphrased_answer"), str):
        out.append(row["paraphrased_answer"])
    out += [a for a in row.get("perturbed_answer") or [] if isinstance(a, str)]
    return out


def row_tokens(tokenizer, question: str, row: dict) -> int:
    """Tokens of the row's longest (prompt + answer + eos) encoding under the tokenizer's template."""
    template = template_of(tokenizer)
    return max(len(template.encode(tokenizer, question, a)[0]) for a in answer_texts(row))


def fit_row(tokenizer, row: dict, limit: int, truncation: str) -> tuple[dict | None, int]:
    """``(row or None, tokens before fitting)``: the row unchanged when it fits, its question cut from
    the left (``truncation='question'``), or None (dropped) when it cannot fit without cutting an answer."""
    n = row_tokens(tokenizer, row["question"], row)
    if n <= limit:
        return row, n
    words = row["question"].split(" ")
    if truncation == "drop" or row_tokens(tokenizer, "", row) > limit:
        return None, n
    lo, hi = 1, len(words)  # the fewest leading words to drop; dropping all of them fits (checked above)
    while lo < hi:
        mid = (lo + hi) // 2
        if row_tokens(tokenizer, " ".join(words[mid:]), row) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return {**row, "question": " ".join(words[lo:]), "question_words_cut": lo}, n


def fit_qa_splits(splits: dict[str, list], tokenizer, limit: int, truncation: str = "question",
                  qa_splits: tuple[str, ...] | None = None) -> tuple[dict[str, list], dict]:
    """Fit every QA split's rows to ``limit`` tokens; returns the fitted splits and a per-split report
    ``{split: {rows, max_tokens, p99_tokens, cut, dropped}}``."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {truncation!r} is not allowed; allowed: {', '.join(TRUNCATIONS)}")
    out, report = dict(splits), {}
    for name in qa_splits or [s for s, rows in splits.items() if rows and "question" in rows[0]]:
        kept, lengths, cut, dropped = [], [], 0, 0
        for row in splits[name]:
            fitted, n = fit_row(tokenizer, row, limit, truncation)
            lengths.append(n)
            if fitted is None:
                dropped += 1
                continue
            cut += fitted is not row
            kept.append(fitted)
        out[name] = kept
        report[name] = {"rows": len(lengths), "max_tokens": int(max(lengths, default=0)),
                        "p99_tokens": int(np.ceil(np.percentile(lengths, 99))) if lengths else 0,
                        "too_long": sum(n > limit for n in lengths), "cut": cut, "dropped": dropped}
    return out, report


def refuse_if_too_long(report: dict, *, limit: int, data_name: str, model_name: str, context: int | None,
                       max_length: int) -> None:
    """Raise :class:`RowTooLong` with one sentence when more than 1 % of a split's rows (and more than
    one row) exceed ``limit``, or a split loses every row. A single long row in a small split (TOFU's
    forget01 has 40) is cut or dropped and reported, not refused."""
    for split, r in report.items():
        too_long = r.get("too_long", r["cut"] + r["dropped"])
        if (too_long <= max(1, 0.01 * r["rows"])) and (r["rows"] == 0 or r["dropped"] < r["rows"]):
            continue
        if context is not None and context < max_length:
            why = (f"more than the {context}-token context of model {model_name!r}; use a model with a longer "
                   f"context or shorter rows")
        else:
            why = (f"more than data max_length {max_length} (model {model_name!r} allows "
                   f"{context if context else 'any length'}); raise max_length")
        raise RowTooLong(f"data {data_name!r}: {too_long} of the {r['rows']} rows of split {split!r} are too long "
                         f"(99th percentile {r['p99_tokens']} tokens, the longest {r['max_tokens']}), {why}")


def summarize(report: dict) -> str:
    """One log line: the longest row, the 99th percentile, and what was cut or dropped."""
    if not report:
        return "no QA rows"
    longest = max(r["max_tokens"] for r in report.values())
    p99 = max(r["p99_tokens"] for r in report.values())
    cut = sum(r["cut"] for r in report.values())
    dropped = sum(r["dropped"] for r in report.values())
    where = ", ".join(f"{s}: {r['cut']} cut, {r['dropped']} dropped" for s, r in report.items()
                      if r["cut"] or r["dropped"])
    return (f"rows up to {longest} tokens (99th percentile {p99}); {cut} question(s) cut, {dropped} row(s) "
            f"dropped" + (f" ({where})" if where else ""))
