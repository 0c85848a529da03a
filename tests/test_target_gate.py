"""The fine-tune gate measures what a target is trained on (fast, no model, ~1 s):

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_target_gate.py

the No-unlearn target is gated on its forget rows (TOFU and vision: half forget, half retain; MUSE: VerbMem
of the forget articles); the retrained reference never sees the forget rows, so it is gated on its retain
rows (MUSE: the retain articles cut the way VerbMem cuts the forget ones). Gated on the forget rows, it
never passed and trained to ``max_epochs`` every time, with a warning to raise them."""
from __future__ import annotations

import torch

import sweeper.tasks.tofu as tofu
from sweeper.grid.spec import target_hash
from sweeper.tasks import get_task
from sweeper.tasks.muse import GATE_SAMPLE as MUSE_GATE, continuation_rows
from sweeper.tasks.tofu import GATE_SAMPLE as TOFU_GATE
from sweeper.unlearn.targets import fine_tune


def test_tofu_gates_the_retrained_reference_on_retain_questions(monkeypatch):
    seen = []
    monkeypatch.setattr(tofu, "evaluate_qa", lambda model, tok, rows, max_new_tokens: seen.append(rows) or {"exact": 1})
    splits = {"forget": [{"id": f"f{i}"} for i in range(40)], "retain": [{"id": f"r{i}"} for i in range(400)]}
    task = get_task("tofu")
    task.memorisation(None, None, splits)
    assert [r["id"][0] for r in seen[-1]].count("f") == TOFU_GATE // 2 == [r["id"][0] for r in seen[-1]].count("r")
    task.memorisation(None, None, splits, "retain_only")
    assert len(seen[-1]) == TOFU_GATE and all(r["id"].startswith("r") for r in seen[-1])
    assert len({r["id"] for r in seen[-1]}) == TOFU_GATE  # spread over the retain split, no repeats


def test_vision_gates_the_retrained_reference_on_retain_images(monkeypatch):
    task = get_task("vision")
    seen = []
    monkeypatch.setattr(task, "predict", lambda model, rows: (seen.append(rows) or torch.ones(len(rows)).numpy(), None))
    splits = {"forget": [{"side": "f"}] * 300, "retain": [{"side": "r"}] * 900}
    task.memorisation(None, None, splits)
    assert {r["side"] for r in seen[-1]} == {"f", "r"}
    assert task.memorisation(None, None, splits, "retain_only") == 1.0 and {r["side"] for r in seen[-1]} == {"r"}


def test_muse_gates_the_retrained_reference_on_its_retain_articles(monkeypatch):
    task = get_task("muse")
    seen = []
    monkeypatch.setattr(task, "_verbmem", lambda model, tok, rows, new, bs: seen.append(rows) or {"mean_recall": 0.5})
    article = " ".join(f"w{i}" for i in range(200))
    splits = {"verbmem_forget": [{"prompt": "forget", "gt": "article"}],
              "retain": [{"text": "one two three four five"}, {"text": " " + article}, {"text": "solo"}]}
    task.memorisation(None, None, splits)
    assert seen[-1] == splits["verbmem_forget"]
    task.memorisation(None, None, splits, "retain_only")
    short, long_ = seen[-1]  # a one-word text has nothing to continue
    assert short == {"prompt": "one two", "gt": "three four five"}
    # at most 64 words of prompt and of reference (a chunk's leading space dropped)
    assert long_["prompt"] == " ".join(f"w{i}" for i in range(64)) and long_["gt"].split() == [f"w{i}" for i in range(64, 128)]
    assert len(continuation_rows([{"text": article}] * 100)) == 100 and MUSE_GATE < 100


class _Tiny:
    """The least a task needs for ``fine_tune``: rows are numbers, the loss pulls one weight to them."""

    def __init__(self):
        self.variants = []

    def dataset(self, rows, tokenizer):
        return rows

    def collate(self, tokenizer):
        return lambda items: {"x": torch.tensor(items, dtype=torch.float32)}

    def logprobs(self, model, batch):
        return -(model.weight.sum() - batch["x"]) ** 2, torch.ones(len(batch["x"]))

    def memorisation(self, model, tokenizer, splits, variant="full"):
        self.variants.append(variant)
        return 1.0


def test_fine_tune_passes_the_variant_to_the_gate():
    task, recipe = _Tiny(), dict(optimizer="adam", lr=1e-2, batch_size=2, max_epochs=5, check_every=1,
                                 exact_match_gate=0.9, seed=0)
    metrics = fine_tune(task, torch.nn.Linear(1, 1), None, [1.0, 2.0], {}, recipe, log=lambda _: None,
                        variant="retain_only")
    assert task.variants == ["retain_only"] and metrics["epochs"] == 1 and metrics["gate_passed"]
    fine_tune(task, torch.nn.Linear(1, 1), None, [1.0], {}, recipe, log=lambda _: None)
    assert task.variants[-1] == "full"


def test_a_fine_tuned_retrained_reference_gets_a_new_hash_and_the_target_keeps_its_own():
    """Caches built with the old gate (trained to max_epochs) are not reused for the retrained model; the
    No-unlearn target's hash, and every trial id built on it, is unchanged."""
    model = {"name": "tiny-gpt2"}
    data = {"name": "authors", "source": "builtin"}
    recipe = {"lr": 1e-3}
    assert target_hash(model, data, recipe) == "8dfe93c9e41a4d98"  # as before the gate measured trained rows
    assert target_hash(model, data, recipe, "retain_only") not in ("7354ffb9c8aa2336", target_hash(model, data, recipe))
    published = {**model, "retrained_reference": "org/retain-{retain_split}"}
    a, b = target_hash(published, data, recipe, "retain_only"), target_hash(published, data, {"lr": 2e-3}, "retain_only")
    assert a == b  # a published reference is loaded, not fine-tuned: no recipe and no gate in its hash
