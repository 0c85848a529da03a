"""Length modes of the offline twins: "short" output is frozen byte for byte, "real" output has the real
benchmarks' lengths and keeps every property the evaluation relies on."""
from __future__ import annotations

import hashlib
import json
import random
import statistics
from pathlib import Path

import pytest

from sweeper.data.synthetic import (LENGTHS, TEMPLATES, make_authors, perturbed_rows, qa_rows,
                                    write_muse_layout, write_tofu_layout)
from sweeper.data.synthetic_news import _article, _news_events

# sha256 of every file written before "real" lengths existed, by write_tofu_layout(tmp, 20, 10, 0) and
# write_muse_layout(tmp, 40, 0). Cached targets are keyed by these contents: they must never change.
SHORT_TOFU_SHA256 = {
    "forget01.json": "45e41cb7741d371b6d53451819dad3d186615e237241ae2c9743746e5687d120",
    "forget01_perturbed.json": "d28c4ba1d3b604fc04dbef80ea0a7456fb244a4d314399faeeeedcad3375195a",
    "forget05.json": "45e41cb7741d371b6d53451819dad3d186615e237241ae2c9743746e5687d120",
    "forget05_perturbed.json": "d28c4ba1d3b604fc04dbef80ea0a7456fb244a4d314399faeeeedcad3375195a",
    "forget10.json": "558b1e78287dde1e9b6f043195e99e2f6c8f22ae05d79c826d165838fe60c2a7",
    "forget10_perturbed.json": "2d6578723bea8c488092795eec8386a0ce39c23aec6d91da39a9f055eff8dbe4",
    "full.json": "acb224a73cb015762f74271d0d3e0e89ac4beca06d7ef006c1c3f6b992a31211",
    "real_authors.json": "49d5e7461a04d4303b4eee4bd30944250e21689280f906e51baa25ac031ccd20",
    "real_authors_perturbed.json": "5e7dd04fa7738bc78a23005371a9ea39df87a19774c4f9d6cabc3ebaeb2a44fc",
    "retain90.json": "aa75dad79b79f3b1a58c581b1113a871361672219ff717698e4efe97e3a5a5b8",
    "retain95.json": "c54dd3f55740f463a352ac4e37ba4736eac0125bdde09c4f7eff65574af213df",
    "retain99.json": "c54dd3f55740f463a352ac4e37ba4736eac0125bdde09c4f7eff65574af213df",
    "retain_perturbed.json": "20bdf4b434303eb7b65e1bc46feb705cf20acc31d2324497829d8fcb42b31962",
    "world_facts.json": "9bccd63e0d8da56d5ebb8aa75ba9146d3390e782dd43da999ebce190b72ab2f0",
    "world_facts_perturbed.json": "371438808bf6f62151c85a55d4c6e479977bfaaf451aa460c627ff1a9279b5e0",
}
SHORT_MUSE_SHA256 = {
    "knowmem/forget_qa.json": "070401d4b51a900bce12d93b0a72646a5c777faad51395207ac96d850a0c4694",
    "knowmem/forget_qa_icl.json": "a172c4516a1676998a3cf27665d503e864e25158a7891cea412b60f1fd6b1925",
    "knowmem/retain_qa.json": "338942936e37e859da03849751a7075711c9a339da3f9ea756afddedf64e321a",
    "knowmem/retain_qa_icl.json": "5a1462fe72af02c30402ce3beb932ad4739779de6157226b6eda281d05092fbc",
    "privleak/forget.json": "eeb35481e1e38dce52b8c94328ec995b99edfe3c63d10cdb2d1f4e6b6931f28f",
    "privleak/holdout.json": "c82635ac241716fbb57d1290bd786d744775adc5d1c8000b73552bbf0270a52a",
    "privleak/retain.json": "a60d87132112ddda3a953ca3b2f44b21d3086b86bf65200a7e0a8ec15696b682",
    "raw/forget.json": "eeb35481e1e38dce52b8c94328ec995b99edfe3c63d10cdb2d1f4e6b6931f28f",
    "raw/holdout.json": "c82635ac241716fbb57d1290bd786d744775adc5d1c8000b73552bbf0270a52a",
    "raw/retain1.json": "fd4ba3fa5d129ad72f036b5f5dbf6be31380b2b52e034ce7fe3f5b6b406610c3",
    "raw/retain2.json": "a60d87132112ddda3a953ca3b2f44b21d3086b86bf65200a7e0a8ec15696b682",
    "verbmem/forget.json": "2930cb4fa376e88564fef9bca98cfe78415869f279b063aa4c097e355a461b2b",
}
N_AUTHORS, QA_PER = 20, 20  # every template, as in the length targets


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


def _words(text: str) -> int:
    return len(text.split())


def _sha256s(root: Path) -> dict[str, str]:
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*.json"))}


@pytest.fixture(scope="module")
def real_tofu(tmp_path_factory) -> Path:
    return write_tofu_layout(tmp_path_factory.mktemp("tofu_real"), N_AUTHORS, QA_PER, seed=0, lengths="real")


@pytest.fixture(scope="module")
def real_muse(tmp_path_factory) -> Path:
    return write_muse_layout(tmp_path_factory.mktemp("muse_real"), n_articles=40, seed=0, lengths="real")


# --- "short": frozen -------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [None, "short"])
def test_short_output_is_byte_identical_to_before(tmp_path, lengths):
    kw = {} if lengths is None else {"lengths": lengths}
    tofu = _sha256s(write_tofu_layout(tmp_path / "tofu", 20, 10, 0, **kw))
    # Only the holdout01/05/10 files (authors never trained on) were added since.
    assert {k: v for k, v in tofu.items() if not k.startswith("holdout")} == SHORT_TOFU_SHA256
    assert sorted(k for k in tofu if k.startswith("holdout")) == ["holdout01.json", "holdout05.json", "holdout10.json"]
    assert _sha256s(write_muse_layout(tmp_path / "muse", 40, 0, **kw)) == SHORT_MUSE_SHA256


def test_lengths_constant_and_bad_value(tmp_path):
    assert LENGTHS == ("short", "real")
    authors = make_authors(2, seed=0)
    msg = r"lengths='long' is not a length mode; allowed: \"short\", \"real\"\."
    for call in (lambda: write_tofu_layout(tmp_path / "unused", lengths="long"),
                 lambda: write_muse_layout(tmp_path / "unused", lengths="long"),
                 lambda: qa_rows(authors, 2, lengths="long"),
                 lambda: perturbed_rows(authors, 2, 0, lengths="long")):
        with pytest.raises(ValueError, match=msg):
            call()
    assert not (tmp_path / "unused").exists()  # the check comes before anything is written


# --- "real": TOFU ----------------------------------------------------------------------------------

def test_real_tofu_lengths(real_tofu):
    full = _lines(real_tofu / "full.json")
    answers, questions = [_words(r["answer"]) for r in full], [_words(r["question"]) for r in full]
    assert len(full) == N_AUTHORS * QA_PER
    assert 22 <= statistics.median(answers) <= 28 and 55 <= max(answers) <= 66   # TOFU: 25 and 66
    assert 10 <= statistics.median(questions) <= 20 and 30 <= max(questions) <= 39
    perturbed = _lines(real_tofu / "forget10_perturbed.json") + _lines(real_tofu / "retain_perturbed.json")
    for r in perturbed:
        assert max(map(_words, [r["paraphrased_answer"], *r["perturbed_answer"]])) <= 66
        assert _words(r["paraphrased_question"]) <= 39


def test_real_tofu_elaborates_the_short_rows(real_tofu, tmp_path):
    """Every "real" text is its "short" text plus an elaboration; the perturbed answers carry the
    paraphrase's elaboration word for word, so only the facts differ."""
    short = write_tofu_layout(tmp_path, N_AUTHORS, QA_PER, seed=0)
    for name in ("forget10_perturbed", "retain_perturbed"):
        for r, s in zip(_lines(real_tofu / f"{name}.json"), _lines(short / f"{name}.json"), strict=True):
            assert r["answer"].startswith(s["answer"] + " ") and r["question"].endswith(s["question"])
            assert r["paraphrased_question"].endswith(s["paraphrased_question"])
            assert r["paraphrased_answer"].startswith(s["paraphrased_answer"] + " ")
            tail = r["paraphrased_answer"][len(s["paraphrased_answer"]):]
            assert r["perturbed_answer"] == [p + tail for p in s["perturbed_answer"]]
            assert len(set(r["perturbed_answer"])) == len(r["perturbed_answer"]) == 5
            assert not {r["answer"], r["paraphrased_answer"]} & set(r["perturbed_answer"])


def test_real_tofu_splits_and_no_answer_in_question(real_tofu):
    full, forget = _lines(real_tofu / "full.json"), _lines(real_tofu / "forget10.json")
    assert forget == full[-len(forget):]
    perturbed = _lines(real_tofu / "forget10_perturbed.json")
    assert [r["question"] for r in perturbed] == [r["question"] for r in forget]
    authors = make_authors(N_AUTHORS, seed=0)
    for i, r in enumerate(full):  # the context before a question never states what the answer states
        a, (fields, *_) = authors[i // QA_PER], TEMPLATES[i % QA_PER]
        for k in fields:
            value = getattr(a, k)
            if isinstance(value, str):
                assert value not in r["question"], (k, r["question"])


def test_real_tofu_answer_is_a_function_of_author_template_seed(real_tofu, tmp_path):
    # An author's rows do not depend on which other authors are generated with it: memorisable facts.
    full = _lines(real_tofu / "full.json")
    one = make_authors(N_AUTHORS, seed=0)[7:8]
    assert qa_rows(one, QA_PER, seed=0, lengths="real") == full[7 * QA_PER:8 * QA_PER]
    again = write_tofu_layout(tmp_path / "a", N_AUTHORS, QA_PER, seed=0, lengths="real")
    assert _sha256s(again) == _sha256s(real_tofu)
    other = write_tofu_layout(tmp_path / "b", N_AUTHORS, QA_PER, seed=1, lengths="real")
    assert (other / "full.json").read_bytes() != (real_tofu / "full.json").read_bytes()


def test_real_tofu_option_configs_unchanged(real_tofu):
    for name in ("real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed"):
        assert hashlib.sha256((real_tofu / f"{name}.json").read_bytes()).hexdigest() == \
            SHORT_TOFU_SHA256[f"{name}.json"]


# --- "real": MUSE-NEWS -----------------------------------------------------------------------------

def test_real_muse_lengths(real_muse):
    texts = [r["text"] for s in ("forget", "retain1", "retain2", "holdout")
             for r in _lines(real_muse / "raw" / f"{s}.json")]
    words = [_words(t) for t in texts]
    assert len(texts) == 40
    assert 280 <= min(words) <= 400 and 1700 <= max(words) <= 2100
    assert 600 <= statistics.median(words) <= 900
    assert len(set(texts)) == 40 and all("\n\n" in t for t in texts)  # paragraphs, like news articles


def test_real_muse_keeps_facts_splits_and_qa(real_muse, tmp_path):
    raw = {s: [r["text"] for r in _lines(real_muse / "raw" / f"{s}.json")]
           for s in ("forget", "retain1", "retain2", "holdout")}
    assert all(len(v) == 10 for v in raw.values())
    # The lead is the short article (its first letter capitalised), so the knowmem QA is the same files.
    events = _news_events(60, random.Random("muse-0"))[:40]  # as write_muse_layout draws them
    leads = [_article(e) for e in events]
    for text, lead in zip(raw["forget"] + raw["retain1"] + raw["retain2"] + raw["holdout"], leads):
        assert text.split("\n\n")[0] == lead[:1].upper() + lead[1:]
    for name in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"):
        path = f"knowmem/{name}.json"
        assert hashlib.sha256((real_muse / path).read_bytes()).hexdigest() == SHORT_MUSE_SHA256[path]
    for q in _lines(real_muse / "knowmem" / "forget_qa.json"):
        assert any(q["answer"] in t for t in raw["forget"])
    for q in _lines(real_muse / "knowmem" / "retain_qa.json"):
        assert any(q["answer"] in t for t in raw["retain2"])
    verb = _lines(real_muse / "verbmem" / "forget.json")
    assert [v["prompt"] + " " + v["gt"] for v in verb] == raw["forget"]
    assert [r["text"] for r in _lines(real_muse / "privleak" / "retain.json")] == raw["retain2"]
    again = write_muse_layout(tmp_path / "m", n_articles=40, seed=0, lengths="real")
    assert _sha256s(again) == _sha256s(real_muse)
    other = write_muse_layout(tmp_path / "o", n_articles=40, seed=1, lengths="real")
    assert (other / "raw" / "forget.json").read_bytes() != (real_muse / "raw" / "forget.json").read_bytes()


def test_old_imports_still_work():
    from sweeper.data import write_muse_layout as w1, write_tofu_layout as w2
    from sweeper.data.synthetic import (  # noqa: F401
        FEMALE_FIRST, LAST, MALE_FIRST, MAX_QA_PER_AUTHOR, N_PERTURBED, Author, n_forget_authors, write_jsonl)
    from sweeper.data.synthetic_news import write_muse_layout
    assert w1 is write_muse_layout and w2 is write_tofu_layout and MAX_QA_PER_AUTHOR == 20 == len(TEMPLATES)
