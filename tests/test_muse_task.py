"""The MUSE task end to end on the offline twin: prepare, a tiny GPT-2 target fine-tuned a little through
``sweeper.unlearn.targets.fine_tune``, evaluation keys and ranges, datasets and log-probs, three NGDiff steps of the
unlearning loop on the task's datasets, and a grid with a ``kind: muse`` data entry."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from sweeper.grid.load import GridError, expand, load_grid
from sweeper.unlearn.loop import LoopConfig, Unlearner
from sweeper.unlearn.targets import fine_tune, reference_logprobs
from sweeper.tasks import get_task, known_tasks
from sweeper.metrics.muse_metrics import knowmem_prompt
from sweeper.tasks.muse import ChunkDataset, chunk_rows, context_limit, fit_icl, fit_prompt, knowmem_icl

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"name": "tiny-gpt2", "dtype": "float32", "trust_remote_code": False}
RECIPE = {"optimizer": "adamw", "lr": 3e-3, "batch_size": 3, "max_epochs": 30, "check_every": 10,
          "exact_match_gate": 0.75, "seed": 0}   # VerbMem recall 0.80 at epoch 20: stops there
EVAL = {"max_questions": 4, "max_new_tokens": 16, "batch_size": 32, "every": 0, "retrained_reference": False}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    task = get_task("muse")
    data = {"kind": "muse", **task.data_defaults, "n_articles": 12}
    splits = task.prepare(data, str(tmp_path_factory.mktemp("muse")))
    tok = task.make_tokenizer(MODEL, splits)
    model = task.build_model(MODEL, tok, seed=0)
    logs = []
    metrics = fine_tune(task, model, tok, task.train_rows(splits, "full"), splits, RECIPE, log=logs.append)
    return task, splits, tok, model, metrics, logs


def test_registered_and_defaults():
    assert "muse" in known_tasks()
    task = get_task("muse")
    assert task.kind == "muse"
    assert task.data_defaults == {"source": "builtin", "n_articles": 40, "seed": 0, "max_length": 128, "lengths": "short",
                                  "knowmem_in_target": False}


def test_prepare_splits(env):
    task, splits, *_ = env
    want = {"forget", "retain", "retain2", "verbmem_forget", "knowmem_forget", "knowmem_retain",
            "knowmem_forget_icl", "knowmem_retain_icl", "privleak_forget", "privleak_holdout"}
    assert want <= set(splits)
    assert len(splits["forget"]) == 3 and len(splits["verbmem_forget"]) == 3   # 12 articles: 3 forget
    assert len(splits["knowmem_forget"]) == 9 and len(splits["knowmem_forget_icl"]) == 10
    assert set(splits["verbmem_forget"][0]) == {"prompt", "gt"}
    assert set(splits["knowmem_retain"][0]) == {"question", "answer"}
    assert set(splits["forget"][0]) == {"text", "doc", "eos", "max_length"}
    import json
    json.dumps(splits)   # saved with the target as JSON lines
    # the target trains on forget + retain1 + retain2; the retrained reference on retain1 + retain2
    full, retain_only = task.train_rows(splits, "full"), task.train_rows(splits, "retain_only")
    assert full == splits["forget"] + splits["retain"] + splits["retain2"]
    assert retain_only == splits["retain"] + splits["retain2"]


def test_chunk_rows_concatenate_back_and_end_with_eos_once():
    texts = ["one two three four five six seven", "alpha beta"]
    rows = chunk_rows(texts, max_length=6)   # 3 words per piece
    assert [r["text"] for r in rows] == ["one two three", " four five six", " seven", "alpha beta"]
    for d, text in enumerate(texts):
        assert "".join(r["text"] for r in rows if r["doc"] == d) == text
    assert [r["eos"] for r in rows] == [False, False, True, True]


def test_dataset_items_index_labels_and_logprobs(env):
    task, splits, tok, model, *_ = env
    ds = task.dataset(splits["forget"], tok)
    assert isinstance(ds, ChunkDataset) and len(ds) == len(splits["forget"])   # 1:1 with forget rows
    for i in range(len(ds)):
        item = ds[i]
        assert item["index"] == i
        assert torch.equal(item["labels"], item["input_ids"])            # loss on every token
        assert len(item["input_ids"]) <= splits["forget"][i]["max_length"]
        assert item["input_ids"][-1].item() == tok.eos_token_id         # each article ends with eos
    batch = task.collate(tok)([ds[i] for i in range(len(ds))])
    logp, n = task.logprobs(model, batch)
    assert logp.shape == n.shape == (len(ds),)
    assert torch.equal(n, (batch["labels"][:, 1:] != -100).sum(1))       # every token but the first
    assert torch.all(logp < 0)
    ref = reference_logprobs(task, model, tok, splits["forget"])
    assert ref.shape == (len(splits["forget"]),)
    assert torch.allclose(ref, logp.detach(), atol=1e-4)
    # a row longer than max_length tokens is split further, never truncated
    long = ChunkDataset([{"text": splits["forget"][0]["text"], "doc": 0, "eos": True, "max_length": 8}], tok)
    assert len(long) > 1 and all(len(x) <= 8 for x in long.items)
    assert sum(len(x) for x in long.items) == len(tok(splits["forget"][0]["text"])["input_ids"]) + 1


def test_fine_tune_memorises_and_evaluate_in_range(env):
    task, splits, tok, model, metrics, logs = env
    assert metrics["epochs"] >= 10 and len(logs) >= 1
    assert 0 <= metrics["gate_exact"] <= 1
    assert metrics["gate_passed"] and metrics["epochs"] < RECIPE["max_epochs"]   # VerbMem recall from ~0.1 to >= 0.75
    curves = task.curve_metrics(model, tok, splits, EVAL)
    assert set(curves) == {"rouge_forget", "rouge_retain", "final_loss_forget", "final_loss_retain"}
    scores, samples = task.evaluate(model, tok, splits, EVAL)
    for key in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "rouge_forget", "rouge_retain"):
        assert 0 <= scores[key] <= 1, key
    assert scores["rouge_forget"] == scores["verbmem_forget"]
    assert scores["rouge_retain"] == scores["knowmem_retain"]
    assert "privleak" not in scores                     # no retrained reference given
    for key in ("final_loss_forget", "final_loss_retain"):
        assert 0 < scores[key] < math.log(len(tok)), key  # trained below a uniform guess
    from sweeper.store.results import SAMPLE_SCHEMA, SUMMARY_SCHEMA, to_table
    to_table([scores], SUMMARY_SCHEMA)
    to_table(samples, SAMPLE_SCHEMA)
    assert len([s for s in samples if s["metric"] == "verbmem_rouge_recall"]) == len(splits["verbmem_forget"])
    assert len([s for s in samples if s["split"] == "retain"]) == len(splits["knowmem_retain"])
    # PrivLeak against the retrained model's AUC
    ref = task.reference_data(model, tok, splits, EVAL)
    assert 0 <= ref["privleak_auc"] <= 1
    scores, samples = task.evaluate(model, tok, splits, EVAL, reference={"privleak_auc": 0.5})
    assert -100 <= scores["privleak"] <= 100
    assert {s["split"] for s in samples if s["metric"] == "min_k"} == {"forget", "holdout"}


def test_prompts_fit_the_context(env):
    task, splits, tok, model, *_ = env
    limit = context_limit(model)
    assert limit == 256
    long = " ".join(r["text"] for r in splits["retain"] + splits["retain2"]) * 2
    cut = fit_prompt(tok, long, 40)
    assert len(tok(cut)["input_ids"]) <= 40 and long.endswith(cut.strip())
    icl = [(r["question"], r["answer"]) for r in splits["knowmem_forget_icl"]]
    q = [r["question"] for r in splits["knowmem_forget"]]
    assert fit_icl(tok, q, icl, 10_000) == icl
    few = fit_icl(tok, q, icl, 120)
    assert len(few) < len(icl) and few == icl[len(icl) - len(few):]


def test_unlearner_runs_ngdiff_on_the_task(env):
    task, splits, tok, model, *_ = env
    import copy
    m = copy.deepcopy(model)
    ref = reference_logprobs(task, m, tok, splits["forget"])
    u = Unlearner(m, task.dataset(splits["forget"], tok), task.dataset(splits["retain"], tok), task.collate(tok),
                  LoopConfig(method="ngdiff", steps=3, batch_size=2, lr=1e-3), ref_logprobs=ref,
                  logprobs=task.logprobs)
    rows = [u.step(t) for t in (1, 2, 3)]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["loss_forget"]) and math.isfinite(r["loss_retain"])
        assert r["norm_forget"] > 0 and r["norm_retain"] > 0
    assert rows[-1]["loss_forget"] > rows[0]["loss_forget"]   # forgetting: the forget loss goes up


def _grid(tmp_path: Path, data: dict) -> Path:
    doc = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    doc["data"] = [data]
    path = tmp_path / "muse_grid.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_grid_with_muse_data_validates_and_expands(tmp_path):
    specs = expand(load_grid(_grid(tmp_path, {"name": "news", "kind": "muse", "source": "builtin", "n_articles": 12})))
    assert len(specs) == 8
    for s in specs:
        assert s.data == {"kind": "muse", "name": "news", "source": "builtin", "n_articles": 12, "seed": 0,
                          "max_length": 128, "lengths": "short", "knowmem_in_target": False}
    assert len({s.target_hash for s in specs}) == 1


def test_grid_unknown_muse_key_is_one_sentence(tmp_path):
    path = _grid(tmp_path, {"name": "news", "kind": "muse", "source": "builtin", "n_article": 12})
    with pytest.raises(GridError) as e:
        expand(load_grid(path))
    assert len(e.value.problems) == 1
    msg = e.value.problems[0]
    assert "data[0]" in msg and "'n_article'" in msg and "did you mean 'n_articles'" in msg
    assert "\n" not in msg and msg.count(". ") == 0


def test_knowmem_in_target_trains_the_target_on_the_knowmem_prompts(env, tmp_path):
    """A tiny twin cannot answer KnowMem questions from the articles alone (MUSE's 7B targets can);
    ``knowmem_in_target`` also trains the target on each QA pair as KnowMem asks it, so the utility axis
    (KnowMem retain) starts high and unlearning can lower it (the training itself: the slow test below)."""
    task, _, tok, plain_model, *_ = env
    data = {"kind": "muse", **task.data_defaults, "n_articles": 12, "knowmem_in_target": True}
    splits = task.prepare(data, str(tmp_path))
    splits, _ = task.fit_lengths(splits, tok, {**data, "name": "news"}, "tiny-gpt2", 256)
    for side in ("forget", "retain"):
        icl = knowmem_icl(tok, splits[f"knowmem_{side}"], splits[f"knowmem_{side}_icl"], 256)
        assert 0 < len(icl) < len(splits[f"knowmem_{side}_icl"])   # the tiny context keeps only the last pairs
        rows = splits[f"target_qa_{side}"]
        assert [(r["prompt"], r["answer"]) for r in rows] == [
            (knowmem_prompt(r["question"], icl), r["answer"]) for r in splits[f"knowmem_{side}"]]
        # the same pairs as the evaluation of any subset uses (fitted over the whole split)
        assert task._icl(plain_model, tok, splits, side) == icl
    # prompt and answer are tokenized apart: the prompt's trailing space is its own token, as when decoding
    row = splits["target_qa_retain"][0]
    item = ChunkDataset([row], tok)[0]["input_ids"].tolist()
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert item == ids(row["prompt"]) + ids(row["answer"]) + [tok.eos_token_id]
    assert item[:-1] != ids(row["prompt"] + row["answer"])
    # the target sees both QA sets, the retrained model only the retain one; unlearning only the articles
    full, retain_only = task.train_rows(splits, "full"), task.train_rows(splits, "retain_only")
    assert full == splits["forget"] + splits["target_qa_forget"] + splits["retain"] + splits["retain2"] + \
        splits["target_qa_retain"]
    assert retain_only == splits["retain"] + splits["retain2"] + splits["target_qa_retain"]


@pytest.mark.slow
def test_knowmem_in_target_lifts_the_twins_knowmem_retain(env, tmp_path):
    """Trained on its KnowMem QA too, the tiny twin answers its retain questions (~10 s)."""
    task, plain_splits, tok, plain_model, *_ = env
    data = {"kind": "muse", **task.data_defaults, "n_articles": 12, "knowmem_in_target": True}
    splits, _ = task.fit_lengths(task.prepare(data, str(tmp_path)), tok, {**data, "name": "news"}, "tiny-gpt2", 256)
    full = task.train_rows(splits, "full")
    model = task.build_model(MODEL, tok, seed=0)
    fine_tune(task, model, tok, full, splits, {**RECIPE, "exact_match_gate": 0.95}, log=lambda _: None)
    with_qa = task.curve_metrics(model, tok, splits, EVAL)["rouge_retain"]
    without = task.curve_metrics(plain_model, tok, plain_splits, EVAL)["rouge_retain"]
    assert with_qa >= 0.5 and with_qa > without + 0.25, (with_qa, without)


def test_knowmem_in_target_off_keeps_the_ids_runs_had_before_the_key(tmp_path):
    """A key added later does, at its default, what runs did before it existed: their targets and trials
    keep their hashes (a resumed run finds them); turned on, both change."""
    base = {"name": "news", "kind": "muse", "source": "builtin", "n_articles": 12}
    before = expand(load_grid(_grid(tmp_path, base)))[0]
    data = {k: v for k, v in before.data.items() if k != "knowmem_in_target"}   # a spec of an older run
    from dataclasses import replace
    old = replace(before, data=data)
    assert (old.target_hash, old.config_hash) == (before.target_hash, before.config_hash)
    on = expand(load_grid(_grid(tmp_path, {**base, "knowmem_in_target": True})))[0]
    assert on.target_hash != before.target_hash and on.config_hash != before.config_hash


def test_grid_bad_muse_values(tmp_path):
    path = _grid(tmp_path, {"name": "news", "kind": "muse", "n_articles": 2, "max_length": 1,
                            "knowmem_in_target": "yes"})
    with pytest.raises(GridError) as e:
        expand(load_grid(path))
    assert len(e.value.problems) == 3
    assert any("knowmem_in_target = 'yes' must be true or false" in p for p in e.value.problems)
    assert any("n_articles = 2" in p for p in e.value.problems)
    assert any("max_length = 1" in p for p in e.value.problems)
