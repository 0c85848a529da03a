"""The vision task (the paper's Appendix D) on real data that ships with scikit-learn: the 8x8 digits.

A small ResNet is fine-tuned with the shared ``sweeper.unlearn.targets.fine_tune`` until it classifies its
training images, then the shared ``sweeper.unlearn.loop.Unlearner`` runs NGDiff on "forget class 0": the
forget accuracy must fall to (near) zero while the retain accuracy stays high, the shape of the
paper's Table 4. The CIFAR loader is checked on a tiny fake folder in CIFAR's real pickle layout.
"""
from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch

from sweeper.unlearn.loop import LoopConfig, Unlearner
from sweeper.store.results import SAMPLE_SCHEMA, SUMMARY_SCHEMA, to_table
from sweeper.unlearn.targets import ensure_target, fine_tune, load_target, reference_logprobs
from sweeper.store.storage import Storage
from sweeper.tasks import get_task, known_tasks
from sweeper.tasks.vision import LabelSpace, load_cifar
from sweeper.models.vision import build_vision_model

RECIPE = dict(optimizer="adam", lr=3e-3, batch_size=64, max_epochs=20, check_every=2, exact_match_gate=0.98, seed=0)
MODEL = {"name": "resnet-tiny", "dtype": "float32", "trust_remote_code": False}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one intra-op thread is much faster than two fighting
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def task():
    return get_task("vision")


@pytest.fixture(scope="module")
def digits(task):
    data = {"kind": "vision", **task.data_defaults}
    return data, task.prepare(data, "unused")


@pytest.fixture(scope="module")
def target(task, digits):
    """A resnet-tiny fine-tuned on all digits' training images (forget class 0 included)."""
    _, splits = digits
    labels = task.make_tokenizer(MODEL, splits)
    model = task.build_model(MODEL, labels, seed=0)
    metrics = fine_tune(task, model, labels, task.train_rows(splits, "full"), splits, RECIPE, log=lambda *_: None)
    return model, labels, metrics


# --- validation -----------------------------------------------------------------------------------

def test_registered_and_problems(task, tmp_path):
    assert "vision" in known_tasks()
    ok = {**task.data_defaults}
    assert task.problems(ok, "g: data[0]") == []
    assert task.problems({**ok, "source": "builtin"}, "w") == []

    def one(**change):
        out = task.problems({**ok, **change}, "g: data[0]")
        assert len(out) == 1, out
        assert out[0].startswith("g: data[0]: ") and out[0].count(". ") == 0  # one sentence
        return out[0]

    assert "is neither 'digits'" in one(source=str(tmp_path)) and "folder with CIFAR python batches" in one(source=str(tmp_path))
    assert "neither 'digits'" in one(source="cifar10")
    assert "allowed: 0..9" in one(forget_class=10)
    assert "integer >= 0" in one(forget_class=-1)
    assert "integer >= 0" in one(forget_class=True)
    assert "positive integer" in one(n_forget=0)
    assert "positive integer or null" in one(n_retain=2.5)
    assert "strictly between 0 and 1" in one(test_fraction=1.0)
    assert task.model_problem("resnet-tiny") is None and task.model_problem("resnet50") is None
    assert "not a vision model; allowed: resnet-tiny, resnet50" in task.model_problem("tiny-gpt2")


# --- data -----------------------------------------------------------------------------------------

def test_prepare_digits(task, digits):
    data, splits = digits
    assert set(splits) == {"forget", "retain", "forget_test", "retain_test"}  # n_forget 500 > class size
    assert {r["y"] for r in splits["forget"] + splits["forget_test"]} == {0}
    assert 0 not in {r["y"] for r in splits["retain"] + splits["retain_test"]}
    assert sum(map(len, splits.values())) == 1797
    assert 0.15 < len(splits["forget_test"] + splits["retain_test"]) / 1797 < 0.25
    row = splits["forget"][0]
    assert row["shape"] == [1, 8, 8] and len(row["x"]) == 64 and 0 <= min(row["x"]) <= max(row["x"]) <= 1
    assert json.loads(json.dumps(row)) == row
    assert task.prepare(data, "unused") == splits  # deterministic
    small = task.prepare({**data, "n_forget": 10, "n_retain": 50}, "unused")
    assert len(small["forget"]) == 10 and len(small["retain"]) == 50
    assert len(small["forget_class_rest"]) == len(splits["forget"]) - 10
    assert len(task.train_rows(small, "full")) == len(splits["forget"]) + 50
    assert task.train_rows(small, "retain_only") == small["retain"]


def _write_cifar(folder, batches: dict[str, tuple[np.ndarray, list[int]]], label_key: bytes) -> None:
    os.makedirs(folder)
    for name, (x, y) in batches.items():
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), label_key: y, b"data": x,
                         b"filenames": [f"{i}.png".encode() for i in range(len(y))]}, f, protocol=2)


def test_cifar_folders(task, tmp_path):
    rng = np.random.default_rng(0)

    def batch(n, classes):
        return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [i % classes for i in range(n)]

    c10 = tmp_path / "cifar-10-batches-py"
    train = {f"data_batch_{i}": batch(20, 10) for i in range(1, 6)}
    _write_cifar(c10, {**train, "test_batch": batch(20, 10)}, b"labels")
    xtr, ytr, xte, yte = load_cifar(str(c10))
    assert xtr.shape == (100, 3, 32, 32) and xte.shape == (20, 3, 32, 32) and ytr.tolist()[:12] == [*range(10), 0, 1]
    data = {**task.data_defaults, "source": str(c10), "forget_class": 5, "n_forget": 4}
    assert task.problems(data, "w") == []
    assert "allowed: 0..9" in task.problems({**data, "forget_class": 10}, "w")[0]
    splits = task.prepare(data, str(tmp_path))
    assert {k: len(v) for k, v in splits.items()} == {"forget": 4, "forget_class_rest": 6, "retain": 90,
                                                      "forget_test": 2, "retain_test": 18}
    first = splits["retain"][0]  # data_batch_1 image 0: label 0, channel-first planes R, G, B
    assert first["y"] == 0 and first["shape"] == [3, 32, 32]
    np.testing.assert_allclose(first["x"], train["data_batch_1"][0][0] / 255.0, atol=6e-5)
    labels = task.make_tokenizer(MODEL, splits)
    assert labels.num_classes == 10 and labels.shape == (3, 32, 32) and len(labels.mean) == 3
    model = task.build_model(MODEL, labels, seed=0)
    batch_ = task.collate(labels)([task.dataset(splits["forget"], labels)[i] for i in range(4)])
    logp, n = task.logprobs(model, batch_)
    assert logp.shape == (4,) and torch.all(logp <= 0) and n.tolist() == [1.0] * 4

    c100 = tmp_path / "cifar-100-python"
    _write_cifar(c100, {"train": batch(300, 100), "test": batch(100, 100)}, b"fine_labels")
    data = {**task.data_defaults, "source": str(c100), "forget_class": 42, "n_forget": 500}
    assert task.problems(data, "w") == []
    splits = task.prepare(data, str(tmp_path))
    assert len(splits["forget"]) == 3 and len(splits["retain"]) == 297 and len(splits["forget_test"]) == 1
    assert task.make_tokenizer(MODEL, splits).num_classes == 100

    evil = tmp_path / "evil"
    os.makedirs(evil)
    with open(evil / "data_batch_1", "wb") as f:
        f.write(b"cos\nsystem\n(S'echo owned'\ntR.")  # a pickle that would call os.system
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        task.prepare({**task.data_defaults, "source": str(evil)}, str(tmp_path))


def test_resnet50_shapes():
    m = build_vision_model("resnet50", num_classes=10, in_channels=3)
    assert 23_000_000 < sum(p.numel() for p in m.parameters()) < 24_000_000
    with torch.no_grad():
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    with pytest.raises(ValueError, match="not a vision model"):
        build_vision_model("resnet18", num_classes=10, in_channels=3)


# --- fine-tune, unlearn, evaluate -----------------------------------------------------------------

def test_fine_tune_then_ngdiff_forgets_class(task, digits, target):
    _, splits = digits
    model, labels, metrics = target
    assert metrics["gate_passed"] and metrics["gate_exact"] >= 0.98
    before = task.curve_metrics(model, labels, splits, {})
    assert before["accuracy_forget"] > 0.9 and before["accuracy_retain"] > 0.9

    def unlearn(method, **params):
        net = copy.deepcopy(model)
        cfg = LoopConfig(method=method, method_params=params, optimizer="adam", lr=1e-3, steps=20, batch_size=32,
                         seed=0)
        unlearner = Unlearner(net, task.dataset(splits["forget"], labels), task.dataset(splits["retain"], labels),
                              task.collate(labels), cfg, logprobs=task.logprobs)
        return net, [unlearner.step(t) for t in range(1, 21)]

    unlearned, rows = unlearn("ngdiff")
    assert rows[-1]["loss_forget"] > 3 * rows[0]["loss_forget"] + 1

    scores, samples = task.evaluate(unlearned, labels, splits, {"batch_size": 32})
    assert scores["accuracy_forget"] <= 0.05, scores       # held-out images of class 0: forgotten
    assert scores["accuracy_retain"] >= 0.85, scores        # the other nine classes: kept
    assert scores["rouge_forget"] == scores["accuracy_forget"]
    assert scores["final_loss_forget"] > 2 and scores["final_loss_retain"] < 0.5
    to_table([scores], SUMMARY_SCHEMA)  # every key is a summary column
    to_table(samples, SAMPLE_SCHEMA)
    train_forget = [s["value"] for s in samples if s["split"] == "forget"]
    assert len(train_forget) == len(splits["forget"]) and np.mean(train_forget) <= 0.05
    assert {s["split"] for s in samples} == {"forget", "retain", "forget_test", "retain_test"}

    # Table 4's ranking: GDiff (c = 0.5) forgets too, but keeps less of the retained classes than NGDiff.
    gdiff = task.evaluate(unlearn("gdiff", c=0.5)[0], labels, splits, {})[0]
    assert gdiff["accuracy_forget"] <= 0.05 and gdiff["accuracy_retain"] < scores["accuracy_retain"]


def test_npo_on_per_example_logprobs(task, digits, target):
    _, splits = digits
    model, labels, _ = target
    ref = reference_logprobs(task, model, labels, splits["forget"])
    assert ref.shape == (len(splits["forget"]),) and torch.all(ref <= 0)
    model = copy.deepcopy(model)
    cfg = LoopConfig(method="gdiff", method_params={"c": 0.5}, forget_loss="npo", forget_loss_params={"beta": 0.1},
                     optimizer="adam", lr=1e-3, steps=3, batch_size=16, seed=0)
    unlearner = Unlearner(model, task.dataset(splits["forget"], labels), task.dataset(splits["retain"], labels),
                          task.collate(labels), cfg, ref_logprobs=ref, logprobs=task.logprobs)
    rows = [unlearner.step(t) for t in range(1, 4)]
    assert all(np.isfinite(r["forget_objective"]) for r in rows)


def test_save_load_round_trip(task, digits, target, tmp_path):
    _, splits = digits
    model, labels, _ = target
    task.save_model(model, labels, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "model")) == ["config.json", "model.safetensors"]
    loaded, loaded_labels = task.load_model(str(tmp_path), "cpu")
    assert loaded_labels == labels and isinstance(loaded_labels, LabelSpace)
    batch = task.collate(labels)([task.dataset(splits["retain_test"], labels)[i] for i in range(8)])
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["x"]), model(batch["x"]))


def test_ensure_target_and_load(task, tmp_path):
    """The stage-1 path end to end (one epoch, gate 0): prepare, fine-tune, save, cache, load."""
    data = {"name": "digits", "kind": "vision", **task.data_defaults, "n_retain": 200}
    recipe = {**RECIPE, "max_epochs": 1, "check_every": 1, "exact_match_gate": 0.0}
    storage = Storage(str(tmp_path))
    info = ensure_target(MODEL, data, recipe, storage, log=lambda *_: None)
    assert info["vocab_size"] == 10 and info["n_retain"] == 200
    model, labels, splits, ref, _ = load_target(storage, info["hash"], kind="vision")
    assert labels.num_classes == 10 and len(ref) == len(splits["forget"]) == info["n_forget"]
    assert set(splits) == {"forget", "retain", "forget_test", "retain_test"}


def test_cifar_from_the_hub_uses_train_and_test_splits(monkeypatch):
    """The hub path (uoft-cs/cifar10) with a stand-in `datasets` module: images become uint8 CHW."""
    import sys
    import types

    import numpy as np
    from PIL import Image

    from sweeper.tasks.vision import load_cifar_hub

    def load_dataset(source, split):
        n = 3 if split == "train" else 2
        imgs = [Image.fromarray(np.full((32, 32, 3), i, dtype=np.uint8)) for i in range(n)]
        return {"img": imgs, "label": list(range(n))}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    xtr, ytr, xte, yte = load_cifar_hub("uoft-cs/cifar10")
    assert xtr.shape == (3, 3, 32, 32) and xtr.dtype == np.uint8 and xte.shape == (2, 3, 32, 32)
    assert ytr.tolist() == [0, 1, 2] and int(xtr[2, 1, 5, 5]) == 2
