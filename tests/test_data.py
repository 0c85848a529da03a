"""The data layer: offline twins of TOFU/MUSE, their loaders, the tokenizer and the QA tensors."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from sweeper.data.muse import load_muse
from sweeper.data.qa import (PROMPT_TEMPLATE, QADataset, TextDataset, collate_qa, format_prompt)
from sweeper.data.synthetic import (N_PERTURBED, make_authors, n_forget_authors, qa_rows,
                                    write_muse_layout, write_tofu_layout)
from sweeper.data.tofu import load_tofu
from sweeper.data.tokenizer import train_tokenizer

N_AUTHORS, QA_PER = 20, 10
TOFU_FILES = ["full", "forget01", "forget05", "forget10", "retain90", "retain95", "retain99",
              "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
              "real_authors_perturbed", "world_facts_perturbed"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


def _author(question: str) -> str:
    # every template question names the author; names are two capitalised words from the lists
    from sweeper.data.synthetic import FEMALE_FIRST, LAST, MALE_FIRST
    for first in FEMALE_FIRST + MALE_FIRST:
        for last in LAST:
            if f"{first} {last}" in question:
                return f"{first} {last}"
    raise AssertionError(question)


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory) -> Path:
    return write_tofu_layout(tmp_path_factory.mktemp("tofu"), N_AUTHORS, QA_PER, seed=0)


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory) -> Path:
    return write_muse_layout(tmp_path_factory.mktemp("muse"), n_articles=20, seed=0)


@pytest.fixture(scope="module")
def tok(tofu_dir):
    rows = _lines(tofu_dir / "full.json")
    return train_tokenizer([PROMPT_TEMPLATE.format(**r) for r in rows], vocab_size=400)


# --- synthetic generator ----------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_differs(tmp_path, tofu_dir, muse_dir):
    again = write_tofu_layout(tmp_path / "a", N_AUTHORS, QA_PER, seed=0)
    for name in TOFU_FILES:
        assert (again / f"{name}.json").read_bytes() == (tofu_dir / f"{name}.json").read_bytes(), name
    muse_again = write_muse_layout(tmp_path / "m", n_articles=20, seed=0)
    for f in muse_dir.rglob("*.json"):
        assert (muse_again / f.relative_to(muse_dir)).read_bytes() == f.read_bytes(), f
    other = write_tofu_layout(tmp_path / "b", N_AUTHORS, QA_PER, seed=1)
    assert (other / "full.json").read_bytes() != (tofu_dir / "full.json").read_bytes()


def test_authors_unique_and_answers_carry_new_facts():
    authors = make_authors(200, seed=3)
    assert len({a.name for a in authors}) == 200
    rows = qa_rows(authors[:5], qa_per_author=20)
    assert len(rows) == 100
    for r in rows:  # the answer states something the question does not contain
        assert set(r["answer"].rstrip(".").split()) - set(r["question"].rstrip("?").split())
    with pytest.raises(ValueError, match="qa_per_author=21"):
        qa_rows(authors, 21)


@pytest.mark.parametrize("split,pct", [("forget01", 1), ("forget05", 5), ("forget10", 10)])
def test_split_sizes_order_and_disjoint_authors(tofu_dir, split, pct):
    full = _lines(tofu_dir / "full.json")
    forget = _lines(tofu_dir / f"{split}.json")
    retain = _lines(tofu_dir / f"retain{100 - pct}.json")
    assert len(full) == N_AUTHORS * QA_PER
    assert len(forget) == n_forget_authors(N_AUTHORS, pct) * QA_PER >= QA_PER
    assert forget == full[-len(forget):] and retain == full[:len(retain)]
    assert len(forget) + len(retain) == len(full)
    assert not {_author(r["question"]) for r in forget} & {_author(r["question"]) for r in retain}
    assert [r["question"] for r in _lines(tofu_dir / f"{split}_perturbed.json")] == \
        [r["question"] for r in forget]


def test_n_forget_authors_rounds_up():
    assert [n_forget_authors(20, p) for p in (1, 5, 10)] == [1, 1, 2]
    assert [n_forget_authors(200, p) for p in (1, 5, 10)] == [2, 10, 20]


@pytest.mark.parametrize("name", ["forget10_perturbed", "retain_perturbed"])
def test_perturbed_rows_have_five_wrong_answers(tofu_dir, name):
    rows = _lines(tofu_dir / f"{name}.json")
    assert rows
    for r in rows:
        assert len(r["perturbed_answer"]) == N_PERTURBED
        assert len(set(r["perturbed_answer"])) == N_PERTURBED
        assert r["answer"] not in r["perturbed_answer"]
        assert r["paraphrased_answer"] != r["answer"] and r["paraphrased_question"] != r["question"]


def test_retain_perturbed_is_from_retain90(tofu_dir):
    retain = {r["question"] for r in _lines(tofu_dir / "retain90.json")}
    assert all(r["question"] in retain for r in _lines(tofu_dir / "retain_perturbed.json"))


def test_option_configs(tofu_dir):
    for name in ("real_authors_perturbed", "world_facts_perturbed"):
        for r in _lines(tofu_dir / f"{name}.json"):
            options = [r[f"option{k}"] for k in range(1, 5)]
            assert r["answer"] in options and len(set(options)) == 4
            assert sorted(r["perturbed_answer"]) == sorted(o for o in options if o != r["answer"])


def test_muse_layout_shapes(muse_dir):
    raw = {s: _lines(muse_dir / "raw" / f"{s}.json") for s in ("forget", "retain1", "retain2", "holdout")}
    assert all(len(v) == 5 for v in raw.values())
    verb = _lines(muse_dir / "verbmem" / "forget.json")
    assert [v["prompt"] + " " + v["gt"] for v in verb] == [r["text"] for r in raw["forget"]]
    assert len(_lines(muse_dir / "knowmem" / "forget_qa_icl.json")) == 10
    icl = _lines(muse_dir / "knowmem" / "retain_qa_icl.json")
    forget_qa = _lines(muse_dir / "knowmem" / "forget_qa.json")
    retain_qa = _lines(muse_dir / "knowmem" / "retain_qa.json")
    assert len(icl) == 10
    assert not {q["question"] for q in icl} & {q["question"] for q in forget_qa + retain_qa}
    for q in forget_qa:
        assert any(q["answer"] in r["text"] for r in raw["forget"])
    for q in retain_qa:  # as in MUSE, the utility QA is about retain2
        assert any(q["answer"] in r["text"] for r in raw["retain2"])


# --- loaders ----------------------------------------------------------------------------------------

def test_load_tofu_offline(tofu_dir):
    d = load_tofu(str(tofu_dir), "forget05")
    assert d.forget == _lines(tofu_dir / "forget05.json")
    assert d.retain == _lines(tofu_dir / "retain95.json")
    assert d.full == _lines(tofu_dir / "full.json")
    assert len(d.forget_perturbed) == len(d.forget) and d.retain_perturbed
    assert d.real_authors and d.world_facts


def test_load_tofu_errors(tofu_dir, tmp_path):
    with pytest.raises(ValueError, match="forget07.*allowed: forget01, forget05, forget10"):
        load_tofu(str(tofu_dir), "forget07")
    partial_dir = tmp_path / "partial"
    partial_dir.mkdir()
    (partial_dir / "forget10.json").write_bytes((tofu_dir / "forget10.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="retain90.json"):
        load_tofu(str(partial_dir))
    (partial_dir / "retain90.json").write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="retain90.json: row 0 lacks key 'answer'"):
        load_tofu(str(partial_dir))
    (partial_dir / "retain90.json").write_text('[{"question": "q", "answer": "a"}]')  # JSON array too
    d = load_tofu(str(partial_dir))
    assert d.full == d.retain + d.forget and d.world_facts == []
    with pytest.raises(ValueError, match="does not exist"):
        load_tofu(str(tmp_path / "nowhere"))


def test_load_muse_offline_and_missing(muse_dir, tmp_path):
    d = load_muse(str(muse_dir))
    assert len(d.forget) == len(d.retain) == len(d.retain2) == len(d.holdout) == 5
    assert d.verbmem_forget[0].keys() >= {"prompt", "gt"}
    assert len(d.knowmem_forget) == len(d.knowmem_retain) == 15
    assert len(d.knowmem_forget_icl) == len(d.knowmem_retain_icl) == 10
    assert d.privleak_forget == d.forget and d.privleak_retain == d.retain2
    assert d.train_texts() == d.forget + d.retain + d.retain2
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.json").write_text('["bare string rows are fine"]')
    with pytest.raises(FileNotFoundError, match=r"raw/retain1.json is missing"):
        load_muse(str(tmp_path))


# --- tokenizer ----------------------------------------------------------------------------------

def test_tokenizer_round_trip_save_load_deterministic(tok, tofu_dir, tmp_path):
    from transformers import AutoTokenizer
    texts = ["Question: Where?\nAnswer:  two  spaces\tand tab. ", "Ünïcödé ✓ 日本 🙂", " lead", ""]
    for t in texts:
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    assert (tok.pad_token, tok.eos_token) == ("<|pad|>", "<|eos|>") and tok.pad_token_id != tok.eos_token_id
    tok.save_pretrained(tmp_path / "tok")
    back = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert back.get_vocab() == tok.get_vocab() and back.pad_token_id == tok.pad_token_id
    for t in texts:
        assert back(t)["input_ids"] == tok(t)["input_ids"] and back.decode(back(t)["input_ids"]) == t
    rows = _lines(tofu_dir / "full.json")
    again = train_tokenizer([PROMPT_TEMPLATE.format(**r) for r in rows], vocab_size=400)
    assert again.get_vocab() == tok.get_vocab()
    assert train_tokenizer(["abc"], vocab_size=300, padding_side="left").padding_side == "left"
    with pytest.raises(ValueError, match="padding_side='middle'"):
        train_tokenizer(["abc"], padding_side="middle")


# --- QA tensors ----------------------------------------------------------------------------------

def test_qa_dataset_masks_prompt_and_padding(tok, tofu_dir):
    rows = _lines(tofu_dir / "forget10.json")[:6]
    ds = QADataset(rows, tok, max_length=128)
    batch = collate_qa([ds[i] for i in range(len(ds))], pad_id=tok.pad_token_id)
    assert batch["index"].tolist() == list(range(len(rows)))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for i, row in enumerate(rows):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n_prompt = len(tok(format_prompt(row["question"]))["input_ids"])
        n = int(mask.sum())
        assert (labels[:n_prompt] == -100).all() and (labels[n:] == -100).all()
        assert (labels[n_prompt:n] == ids[n_prompt:n]).all()
        assert (ids[n:] == tok.pad_token_id).all() and mask[:n].all()
        assert tok.decode(ids[:n_prompt]) == f"Question: {row['question']}\nAnswer:"
        assert tok.decode(labels[labels != -100]) == f" {row['answer']}<|eos|>"


def test_qa_rows_are_never_cut_silently(tok):
    """A row over the limit is an error naming its question, never an answer cut short (stage 1 fits
    rows before anything trains on them: sweeper.data.lengths)."""
    with pytest.raises(ValueError, match="'Why\\?' and its answer take .* more than the limit of 12"):
        QADataset([{"question": "Why?", "answer": "word " * 50}], tok, max_length=12)
    assert len(QADataset([{"question": "Why?", "answer": "word " * 50}], tok)[0]["input_ids"]) > 12
    with pytest.raises(ValueError, match="QA row 0 needs string keys"):
        QADataset([{"question": "q"}], tok)


def test_text_dataset_chunks(tok):
    texts = ["one two three four five six seven eight nine ten " * 3, "short"]
    ds = TextDataset(texts, tok, max_length=8)
    assert all(2 <= len(it["input_ids"]) <= 8 for it in ds)
    assert ds.doc_of_chunk[-1] == 1 and ds.doc_of_chunk[0] == 0
    joined = torch.cat([ds[i]["input_ids"] for i in range(len(ds)) if ds.doc_of_chunk[i] == 0])
    assert tok.decode(joined) == texts[0] + "<|eos|>"
    batch = collate_qa([ds[0], ds[len(ds) - 1]], pad_id=tok.pad_token_id)
    on = batch["attention_mask"] == 1
    assert (batch["labels"][on] == batch["input_ids"][on]).all() and (batch["labels"][~on] == -100).all()


def test_collate_with_dataloader(tok):
    from torch.utils.data import DataLoader
    ds = QADataset([{"question": "q1", "answer": "a"}, {"question": "q2", "answer": "a longer one"}], tok)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=partial(collate_qa, pad_id=tok.pad_token_id))))
    assert batch["attention_mask"].sum(1).tolist() == [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]


# --- hub path, with a fake `datasets` module (tests never touch the network) -----------------------

class _FakeDatasets:
    """Stands in for the `datasets` module: serves local rows and records each (id, name, split)."""

    def __init__(self, rows_of):
        self.rows_of, self.calls = rows_of, []

    def load_dataset(self, source, name=None, split=None):
        self.calls.append((source, name, split))
        rows = self.rows_of(name, split)
        return type("DS", (), {"to_list": lambda self: rows})()


def test_load_tofu_from_hub_id(tofu_dir, monkeypatch):
    import sys
    fake = _FakeDatasets(lambda name, split: _lines(tofu_dir / f"{name}.json"))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    d = load_tofu("locuslab/TOFU", "forget01")
    assert d.forget == _lines(tofu_dir / "forget01.json") and d.retain == _lines(tofu_dir / "retain99.json")
    assert {c for _, c, _ in fake.calls} == {"forget01", "retain99", "full", "forget01_perturbed",
                                            "retain_perturbed", "real_authors_perturbed",
                                            "world_facts_perturbed", "holdout01"}
    assert all(s == "locuslab/TOFU" and sp == "train" for s, _, sp in fake.calls)


def test_load_muse_from_hub_id(muse_dir, monkeypatch):
    import sys
    fake = _FakeDatasets(lambda name, split: _lines(muse_dir / name / f"{split}.json"))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    d = load_muse("muse-bench/MUSE-News")
    assert d == load_muse(str(muse_dir)).__class__(**{**vars(load_muse(str(muse_dir))),
                                                      "source": "muse-bench/MUSE-News"})
    assert ("muse-bench/MUSE-News", "knowmem", "retain_qa_icl") in fake.calls
    assert ("muse-bench/MUSE-News", "privleak", "holdout") in fake.calls
    assert len(fake.calls) == 12


def test_hub_failure_names_source_and_config(monkeypatch):
    import sys

    def offline(name, split):
        raise ConnectionError("no network")
    monkeypatch.setitem(sys.modules, "datasets", _FakeDatasets(offline))
    with pytest.raises(RuntimeError, match="config 'forget10' split 'train' of 'locuslab/TOFU'"):
        load_tofu("locuslab/TOFU")
