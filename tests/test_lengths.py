"""The length policy (sweeper.data.lengths) with the project's byte-level tokenizer and the question_answer
template: rows are fitted to the limit by cutting the question from the left (never the answer) or dropped,
counted per split, and a combination whose 99th-percentile row does not fit is refused in one sentence."""
from __future__ import annotations

import numpy as np
import pytest

from sweeper.data.lengths import (TRUNCATIONS, answer_texts, fit_qa_splits, fit_row, refuse_if_too_long,
                                  row_tokens, summarize)
from sweeper.data.qa import QADataset
from sweeper.data.templates import RowTooLong, attach, get_template
from sweeper.data.tokenizer import train_tokenizer

TEMPLATE = get_template("question_answer")
LONG_Q = ("In the years after the war, when the family had moved from the northern coast to a small town near "
          "the mountains and her father had started a bookshop, which novel did the author Jane Doe write first?")
SHORT = {"question": "Who wrote the book?", "answer": "The book was written by John Smith."}
LONG = {"question": LONG_Q, "answer": "Her first novel was The Northern Coast."}
CORPUS = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in (SHORT, LONG)] * 4


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def tok():
    return attach(train_tokenizer(CORPUS, vocab_size=400), "question_answer")


def measured(tok, question: str, row: dict) -> int:
    """The row's longest prompt + answer + eos, encoded here independently of lengths.row_tokens."""
    answers = [row["answer"]]
    if isinstance(row.get("paraphrased_answer"), str):
        answers.append(row["paraphrased_answer"])
    answers += [a for a in row.get("perturbed_answer") or [] if isinstance(a, str)]
    return max(len(TEMPLATE.encode(tok, question, a)[0]) for a in answers)


def check_cut(tok, original: dict, fitted: dict, limit: int) -> None:
    """The fitted row: same answers, a question that is a suffix of the original's words, within the limit,
    and minimal (keeping one more word would not fit)."""
    words = original["question"].split(" ")
    cut = fitted["question_words_cut"]
    assert 1 <= cut <= len(words)
    assert fitted["question"] == " ".join(words[cut:])
    assert {k: v for k, v in fitted.items() if k not in ("question", "question_words_cut")} == \
        {k: v for k, v in original.items() if k != "question"}
    assert measured(tok, fitted["question"], original) <= limit
    assert measured(tok, " ".join(words[cut - 1:]), original) > limit


# --- 1. fit_row -----------------------------------------------------------------------------------------------

def test_fitting_row_is_returned_unchanged(tok):
    n = measured(tok, SHORT["question"], SHORT)
    for truncation in TRUNCATIONS:
        for limit in (n, n + 1, 512):
            fitted, got = fit_row(tok, SHORT, limit, truncation)
            assert fitted is SHORT and got == n


def test_too_long_question_is_cut_from_the_left(tok):
    n = measured(tok, LONG_Q, LONG)
    floor = measured(tok, "", LONG)               # the answer and an empty question
    assert n > floor + 20
    before = dict(LONG)
    for limit in range(floor, n, 3):
        fitted, got = fit_row(tok, LONG, limit, "question")
        assert got == n and fitted is not None and fitted is not LONG, limit
        assert fitted["answer"] == LONG["answer"]                       # the answer is kept whole
        check_cut(tok, LONG, fitted, limit)
        assert TEMPLATE.encode(tok, fitted["question"], fitted["answer"])[0][-1] == tok.eos_token_id
    assert LONG == before                                               # the input row is not modified
    # at the floor every word goes: the empty question still fits
    fitted, _ = fit_row(tok, LONG, floor, "question")
    assert fitted["question"] == "" and fitted["question_words_cut"] == len(LONG_Q.split(" "))


def test_drop_policy_drops_a_too_long_row(tok):
    n = measured(tok, LONG_Q, LONG)
    assert fit_row(tok, LONG, n - 1, "drop") == (None, n)
    fitted, got = fit_row(tok, LONG, n, "drop")
    assert fitted is LONG and got == n


def test_row_whose_answer_alone_does_not_fit_is_dropped_under_both_policies(tok):
    row = {"question": "Who?", "answer": " ".join(["The book was written by John Smith."] * 6)}
    floor = measured(tok, "", row)
    n = measured(tok, "Who?", row)
    for truncation in TRUNCATIONS:
        assert fit_row(tok, row, floor - 1, truncation) == (None, n)
    assert fit_row(tok, row, floor, "question")[0]["question"] == ""


# --- 2. every answer of a row counts ----------------------------------------------------------------------

def test_limit_applies_to_the_longest_of_all_pairs(tok):
    row = {"question": LONG_Q, "answer": "Yes.",
           "paraphrased_answer": "It was The Northern Coast.",
           "perturbed_answer": ["No.", "Her first novel was a long book about the war and the family and the "
                                       "small town near the mountains.", None]}
    assert answer_texts(row) == ["Yes.", row["paraphrased_answer"], *row["perturbed_answer"][:2]]
    n = measured(tok, LONG_Q, row)
    assert row_tokens(tok, LONG_Q, row) == n > measured(tok, LONG_Q, {"answer": "Yes."}) + 10
    floor = measured(tok, "", row)
    for limit in (floor, (floor + n) // 2, n - 1):
        fitted, got = fit_row(tok, row, limit, "question")
        assert got == n
        check_cut(tok, row, fitted, limit)
        for a in answer_texts(row):
            assert len(TEMPLATE.encode(tok, fitted["question"], a)[0]) <= limit
    assert fit_row(tok, row, n, "question")[0] is row
    assert fit_row(tok, row, floor - 1, "question") == (None, n)


def test_row_dropped_for_a_perturbed_answer_even_when_its_answer_fits(tok):
    long_perturbed = " ".join(["Her first novel was a long book about the war and the family."] * 4)
    row = {"question": LONG_Q, "answer": "Yes.", "perturbed_answer": ["No.", long_perturbed]}
    limit = measured(tok, LONG_Q, {"answer": "Yes."})          # the answer fits with its whole question
    assert measured(tok, "", {"answer": long_perturbed}) > limit
    n = measured(tok, LONG_Q, row)
    for truncation in TRUNCATIONS:
        assert fit_row(tok, row, limit, truncation) == (None, n)


# --- 3. fit_qa_splits -------------------------------------------------------------------------------------

def _rows(n_short: int, n_long: int, tag: str = "") -> list[dict]:
    short = [{"question": f"Who wrote the book {i}{tag}?", "answer": SHORT["answer"]} for i in range(n_short)]
    long = [{"question": f"{LONG_Q} ({i}{tag})", "answer": LONG["answer"]} for i in range(n_long)]
    return short + long


def test_fit_qa_splits_report(tok):
    forget, retain = _rows(6, 3, "f"), _rows(20, 1, "r")
    impossible = {"question": "Who?", "answer": " ".join([LONG["answer"]] * 8)}
    retain.append(impossible)
    text = [{"text": "An article. " * 50}, {"text": "Another one."}]
    splits = {"forget": forget, "retain": retain, "forget_text": text, "empty": []}
    limit = measured(tok, LONG_Q, LONG) - 10
    assert measured(tok, "Who?", impossible) > measured(tok, "", impossible) > limit
    for truncation, cut_f, cut_r, dropped_r in (("question", 3, 1, 1), ("drop", 0, 0, 2)):
        fitted, report = fit_qa_splits(splits, tok, limit, truncation)
        assert set(report) == {"forget", "retain"}                       # text and empty splits left alone
        assert fitted["forget_text"] is text and fitted["empty"] == []
        for name, cut, dropped in (("forget", cut_f, 3 - cut_f), ("retain", cut_r, dropped_r)):
            lengths = [measured(tok, r["question"], r) for r in splits[name]]
            assert report[name] == {"rows": len(splits[name]), "max_tokens": max(lengths),
                                    "p99_tokens": int(np.ceil(np.percentile(lengths, 99))),
                                    "too_long": sum(x > limit for x in lengths),
                                    "cut": cut, "dropped": dropped}, (truncation, name)
            assert report[name]["too_long"] == cut + dropped
            assert len(fitted[name]) == len(splits[name]) - dropped
            assert all(measured(tok, r["question"], r) <= limit for r in fitted[name])
            # every fitted row now encodes within the limit, as training requires
            assert len(QADataset(fitted[name], tok, max_length=limit)) == len(fitted[name])
        assert impossible not in fitted["retain"]
    assert splits["forget"] == forget and len(splits["retain"]) == 22        # the input is not modified
    with pytest.raises(RowTooLong):
        QADataset(splits["forget"], tok, max_length=limit)                 # unfitted rows are refused


def test_fit_qa_splits_named_splits_and_bad_truncation(tok):
    splits = {"forget": _rows(2, 1), "retain": _rows(2, 1)}
    limit = measured(tok, LONG_Q, LONG) - 10
    fitted, report = fit_qa_splits(splits, tok, limit, qa_splits=("forget",))
    assert set(report) == {"forget"} and report["forget"]["cut"] == 1
    assert fitted["retain"] is splits["retain"]
    for bad in ("left", "", None):
        with pytest.raises(ValueError) as e:
            fit_qa_splits(splits, tok, limit, truncation=bad)
        assert all(t in str(e.value) for t in TRUNCATIONS)


# --- 4. refuse_if_too_long -----------------------------------------------------------------------------

def _refuse(report, limit, context, max_length):
    refuse_if_too_long(report, limit=limit, data_name="tofu", model_name="tiny-gpt2", context=context,
                       max_length=max_length)


@pytest.mark.parametrize("n_rows,n_long", [(200, 1), (200, 2), (100, 1), (40, 1)])
def test_at_most_one_percent_or_one_row_too_long_passes(tok, n_rows, n_long):
    rows = _rows(n_rows - n_long, n_long)
    limit = measured(tok, LONG_Q, LONG) - 10
    for truncation in TRUNCATIONS:
        _, report = fit_qa_splits({"forget": rows}, tok, limit, truncation)
        assert report["forget"]["too_long"] == n_long and report["forget"]["max_tokens"] > limit
        _refuse(report, limit, context=limit, max_length=512)
        _refuse(report, limit, context=1024, max_length=limit)


def test_exactly_one_percent_too_long_passes_with_the_rest_at_the_limit(tok):
    # the interpolated 99th percentile exceeds the limit here (ceil(limit + 0.01 * (longest - limit))),
    # yet only 1 row in 100 is too long: not refused
    rows = [{"question": "Who wrote the book?", "answer": SHORT["answer"]}] * 99 + [LONG]
    limit = measured(tok, SHORT["question"], SHORT)          # the 99 short rows are exactly at the limit
    assert measured(tok, LONG_Q, LONG) > limit + 10
    _, report = fit_qa_splits({"forget": rows}, tok, limit)
    assert report["forget"]["cut"] == report["forget"]["too_long"] == 1
    assert report["forget"]["p99_tokens"] > limit
    _refuse(report, limit, context=limit, max_length=limit)


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg and msg.count(". ") == 0 and msg[0].islower()


@pytest.mark.parametrize("n_rows,n_long", [(200, 10), (200, 3), (40, 2)])
def test_refused_when_more_than_one_percent_do_not_fit(tok, n_rows, n_long):
    limit = measured(tok, LONG_Q, LONG) - 10
    _, report = fit_qa_splits({"forget": _rows(10, 0), "retain": _rows(n_rows - n_long, n_long)}, tok, limit)
    r = report["retain"]
    assert r["too_long"] == r["cut"] == n_long and report["forget"]["too_long"] == 0
    # the model's context binds
    with pytest.raises(RowTooLong) as e:
        _refuse(report, limit, context=limit, max_length=512)
    msg = str(e.value)
    _one_sentence(msg)
    for part in ("'tofu'", "'retain'", f"{n_long} of the {n_rows} rows", f"{r['p99_tokens']} tokens",
                 f"longest {r['max_tokens']}", "'tiny-gpt2'", f"{limit}-token context"):
        assert part in msg, (part, msg)
    assert "max_length" not in msg
    # the data's max_length binds
    with pytest.raises(RowTooLong) as e:
        _refuse(report, limit, context=2048, max_length=limit)
    msg = str(e.value)
    _one_sentence(msg)
    for part in ("'tofu'", "'retain'", f"{r['p99_tokens']} tokens", "'tiny-gpt2'", f"max_length {limit}",
                 "allows 2048"):
        assert part in msg, (part, msg)
    assert "context of" not in msg
    # context == max_length: max_length is named; a model that does not say its context
    with pytest.raises(RowTooLong, match=f"max_length {limit}"):
        _refuse(report, limit, context=limit, max_length=limit)
    with pytest.raises(RowTooLong, match=f"max_length {limit}") as e:
        _refuse(report, limit, context=None, max_length=limit)
    _one_sentence(str(e.value))


def test_refused_when_a_split_loses_every_row(tok):
    limit = measured(tok, LONG_Q, LONG) - 10
    _, report = fit_qa_splits({"forget": _rows(0, 1)}, tok, limit, "drop")
    assert report["forget"] == {**report["forget"], "rows": 1, "too_long": 1, "dropped": 1}
    with pytest.raises(RowTooLong, match="'forget'") as e:       # one row only, but none is left
        _refuse(report, limit, context=limit, max_length=limit)
    _one_sentence(str(e.value))
    lost = {"forget": {"rows": 3, "max_tokens": 30, "p99_tokens": 30, "too_long": 3, "cut": 0, "dropped": 3}}
    with pytest.raises(RowTooLong, match="'forget'"):
        _refuse(lost, 20, context=None, max_length=20)
    # an empty split, or one that kept its rows, is fine
    _refuse({"forget": {"rows": 0, "max_tokens": 0, "p99_tokens": 0, "too_long": 0, "cut": 0, "dropped": 0}},
            20, None, 20)
    _refuse({"forget": {"rows": 3, "max_tokens": 30, "p99_tokens": 20, "too_long": 1, "cut": 0, "dropped": 1}},
            20, None, 20)


# --- 5. summarize ------------------------------------------------------------------------------------------

def test_summarize_is_one_line_with_the_counts(tok):
    report = {"forget": {"rows": 40, "max_tokens": 90, "p99_tokens": 70, "cut": 2, "dropped": 1},
              "retain": {"rows": 400, "max_tokens": 120, "p99_tokens": 60, "cut": 0, "dropped": 0},
              "holdout": {"rows": 40, "max_tokens": 50, "p99_tokens": 50, "cut": 0, "dropped": 3}}
    line = summarize(report)
    assert line == ("rows up to 120 tokens (99th percentile 70); 2 question(s) cut, 4 row(s) dropped "
                    "(forget: 2 cut, 1 dropped, holdout: 0 cut, 3 dropped)")
    assert summarize({"retain": report["retain"]}) == \
        "rows up to 120 tokens (99th percentile 60); 0 question(s) cut, 0 row(s) dropped"
    assert summarize({}) == "no QA rows"
    # from a real report
    limit = measured(tok, LONG_Q, LONG) - 10
    _, real = fit_qa_splits({"forget": _rows(3, 2)}, tok, limit)
    line = summarize(real)
    assert "\n" not in line and "2 question(s) cut, 0 row(s) dropped (forget: 2 cut, 0 dropped)" in line
    assert line.startswith(f"rows up to {real['forget']['max_tokens']} tokens")
