"""LoRA trials (``adapter: {kind: lora, ...}`` on a model entry, ``sweeper.models.adapters``): only the
adapter's weights train, the rules and AutoLR run over them, checkpoints and ``eval.keep_best`` hold only
them, bad adapter entries are refused at validation in one sentence naming the key, and the adapter
enters the trial's config hash but not the target's."""
from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.synthetic import make_authors, qa_rows
from sweeper.data.tokenizer import train_tokenizer
from sweeper.grid.checks import validate
from sweeper.grid.load import expand_grid
from sweeper.models.adapters import apply_adapter
from sweeper.models.language import build_model
from sweeper.unlearn.autolr import AutoLRConfig
from sweeper.unlearn.loop import LoopConfig, Unlearner

LORA = {"kind": "lora", "r": 4, "alpha": 8}


@pytest.fixture(scope="module")
def data(one_torch_thread):
    rows = qa_rows(make_authors(4, seed=0), 5)
    tok = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows], vocab_size=384)
    return tok, QADataset(rows[-5:], tok), QADataset(rows[:-5], tok)


def lora_unlearner(data, arch: str, adapter=LORA, **cfg) -> Unlearner:
    tok, fds, rds = data
    base = build_model(arch, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, seed=0)
    model = apply_adapter(base, adapter, seed=0)
    cfg = {"method": "ngdiff", "steps": 5, "batch_size": 4, "lr": 1e-2, **cfg}
    return Unlearner(model, fds, rds, lambda b: collate_qa(b, tok.pad_token_id), LoopConfig(**cfg))


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
def test_ngdiff_autolr_trains_only_the_adapter(data, arch):
    u = lora_unlearner(data, arch, autolr=AutoLRConfig(every=2))
    named = dict(u.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert u.flat.numel() == sum(named[n].numel() for n in trainable) < sum(p.numel() for p in named.values()) / 5
    before = {n: p.detach().clone() for n, p in named.items()}
    rows = [u.step(t) for t in range(1, 6)]
    assert all(r["norm_retain"] > 0 and r["w_retain"] is not None for r in rows)
    assert any(r.get("autolr_status") for r in rows)                      # AutoLR ran on the adapter
    for n, p in named.items():
        if n in trainable:
            continue
        assert torch.equal(p, before[n]), f"base weight {n} moved"        # bit-identical
    assert any(not torch.equal(named[n], before[n]) for n in trainable if "lora_B" in n)


def test_checkpoint_holds_only_adapter_tensors_and_resumes(data):
    u = lora_unlearner(data, "tiny-gpt2")
    for t in range(1, 3):
        u.step(t)
    buf = io.BytesIO()
    torch.save(u.state_dict(), buf)   # as a checkpoint travels (in memory, tensors would share storage)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert state["model"] and all("lora_" in k for k in state["model"])
    again = lora_unlearner(data, "tiny-gpt2")
    again.load_state_dict(state)
    assert [again.step(t)["loss_forget"] for t in (3, 4)] == [u.step(t)["loss_forget"] for t in (3, 4)]
    with pytest.raises(ValueError, match="trainable"):
        again.load_state_dict({**state, "model": {}})


def grid(**model) -> dict:
    doc = yaml.safe_load(open("search_spaces/smoke.yaml"))
    doc["models"] = [{**doc["models"][0], **model}]
    doc["_file"] = "g.yaml"
    return doc


@pytest.mark.parametrize("adapter, needle", [
    ({"kind": "dora"}, "adapter: kind = 'dora' is not allowed"),
    ({"kind": "lora", "rank": 4}, "adapter: unknown key 'rank'"),
    ({"kind": "lora", "r": 0}, "adapter: r = 0 must be a positive integer"),
    ({"kind": "lora", "dropout": 1.5}, "adapter: dropout = 1.5"),
    ({"kind": "lora", "target_modules": ["q_proj"]}, "adapter: target_modules ['q_proj'] are not modules"),
    ("lora", "adapter = 'lora' must be a mapping"),
])
def test_bad_adapter_entries_are_refused_naming_the_key(adapter, needle):
    problems = validate(grid(name="tiny-gpt2", adapter=adapter))
    assert any(needle in p and p.startswith("g.yaml: models[0]") for p in problems), problems


def test_good_adapters_validate_with_ddp_and_fsdp_and_vision_is_refused():
    for adapter in ({"kind": "lora"}, {"kind": "lora", "target_modules": "auto"},
                    {"kind": "lora", "target_modules": ["c_attn", "c_fc"], "r": 2, "alpha": 4, "dropout": 0.1}):
        assert validate(grid(name="tiny-gpt2", adapter=adapter)) == []
    assert validate(grid(name="tiny-llama", adapter={"kind": "lora", "target_modules": ["q_proj", "o_proj"]})) == []
    assert validate(grid(name="tiny-gpt2", workers=2, strategy="fsdp", adapter={"kind": "lora"})) == []
    vision = yaml.safe_load(open("search_spaces/vision_demo.yaml"))
    vision["models"][0]["adapter"] = {"kind": "lora"}
    assert any("the vision task's network cannot take an adapter" in p for p in validate(vision))


def test_adapter_enters_the_config_hash_not_the_target_hash(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    doc = grid(name="tiny-gpt2")
    doc.pop("_file")
    path.write_text(yaml.safe_dump(doc))
    plain = expand_grid(str(path))
    doc["models"][0]["adapter"] = {"kind": "lora", "r": 8}
    path.write_text(yaml.safe_dump(doc))
    lora = expand_grid(str(path))
    assert [s.target_hash for s in lora] == [s.target_hash for s in plain]
    assert not {s.config_hash for s in lora} & {s.config_hash for s in plain}
    from sweeper.cluster.plan import print_plan
    print_plan(lora, 1, cpus=2, gpus=0)
    assert "LoRA r8" in capsys.readouterr().out
    import pandas as pd

    from analysis.labels import label_trials
    rows = pd.DataFrame([{"method": "ngdiff", "lr_mode": "static", "lr": 1e-3, "workers": 1,
                          "params_json": json.dumps(s.to_dict())} for s in (plain[0], lora[0])])
    assert label_trials(rows)["label"].tolist() == ["NGDiff", "NGDiff+LoRA r8"]
    baseline = rows.assign(method="no_unlearn")   # the target row of a LoRA-only grid: a full model
    assert label_trials(baseline)["label"].tolist() == ["No-unlearn", "No-unlearn"]


def test_lora_trial_checkpoints_and_keeps_only_the_adapter(tmp_path):
    from sweeper.cluster.stage1 import target_and_baseline
    from sweeper.store.records import baseline_id
    from sweeper.store.storage import Storage
    from sweeper.unlearn.worker import unlearn_trial

    doc = grid(name="tiny-gpt2", adapter={"kind": "lora", "r": 4})
    doc.pop("_file")
    doc.update(name="loratest", methods=[{"method": "ngdiff"}], lr_modes=["autolr"])
    doc["data"][0].update(n_authors=4, qa_per_author=5)
    doc["target"].update(max_epochs=5, exact_match_gate=0.0)
    doc["unlearn"].update(steps=4, autolr={"every": 2})
    doc["eval"].update(max_questions=2, every=2, keep_best=0.5)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(doc))
    spec = expand_grid(str(tmp_path / "g.yaml"))[0]
    storage = Storage(str(tmp_path / "runs"))
    target_and_baseline(spec, storage, log=lambda _: None)   # the target and its No-unlearn row
    baseline = storage.read_table(f"{spec.run}/trials/{baseline_id(spec)}/summary.parquet").to_pylist()[0]
    assert "adapter" not in json.loads(baseline["params_json"])["model"]   # the target is the full model
    folder = f"targets/{spec.target_hash}"
    target_files = {p: storage.read_bytes(f"{folder}/{p}") for p in storage.list_files(folder)}

    class Session:
        state = None

        def restore(self):
            return None

        def report(self, metrics, state):
            self.state = state
    session = Session()
    unlearn_trial(spec, storage, session, torch.device("cpu"))
    assert all("lora_" in k for k in session.state["unlearner"]["model"])
    best = f"{spec.run}/trials/{spec.trial_id}/best"
    assert json.loads(storage.read_bytes(f"{best}/adapter_config.json"))["r"] == 4
    tensors = load_file(storage.path(f"{best}/adapter_model.safetensors"))
    assert tensors and all("lora_" in k for k in tensors)
    assert not storage.exists(f"{best}/model.safetensors")
    assert target_files and all(storage.read_bytes(f"{folder}/{p}") == b for p, b in target_files.items())   # the target stays as it was
    summary = storage.read_table(f"{spec.run}/trials/{spec.trial_id}/summary.parquet").to_pylist()[0]
    assert json.loads(summary["params_json"])["model"]["adapter"]["r"] == 4 and summary["status"] == "ok"
    assert dataclasses.asdict(spec)["model"]["adapter"] == {"kind": "lora", "r": 4}


@pytest.fixture(scope="module")
def lora_ranks(gloo_ranks):
    """(2 gloo ranks' results of both LoRA cases, one worker's): ``lora_worker.both_worker`` on the gloo ranks
    the session spawns once (tests/conftest.py) for the two tests below."""
    import ddp_worker
    import lora_worker
    from sweeper.unlearn.distributed import Comm

    return gloo_ranks["test_lora"], lora_worker.run(ddp_worker.setup(), Comm())


@pytest.mark.slow
def test_two_gloo_workers_equal_one_worker_with_lora(lora_ranks):
    """DDP over the adapter's flat gradient buffer: 2 gloo ranks give one worker's steps and weights."""
    from equivalence import rel

    ranks, one = [r["ddp"] for r in lora_ranks[0]], lora_ranks[1]
    for r in ranks:
        for a, b in zip(r["rows"], one["rows"]):
            for key in ("loss_retain", "loss_forget", "norm_retain", "norm_forget", "dot"):
                assert rel(a[key], b[key]) < 1e-4, (key, a[key], b[key])
        assert r["adapter"].keys() == one["adapter"].keys()
        for k, v in one["adapter"].items():
            torch.testing.assert_close(r["adapter"][k], v, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_fsdp2_lora_equals_one_worker_lora(lora_ranks):
    """FSDP2 over a LoRA model (frozen base and adapter sharded together, only the adapter trains): 2 gloo
    ranks give one worker's steps and adapter; the checkpoint holds only the adapter, whole, on rank 0,
    and a run restored from it ends where the uninterrupted one does; greedy answers generated by both
    ranks together equal those of the same adapter on an unsharded model.

    Tolerances: the rows' 1e-4 (relative) and the adapter's rtol 1e-3 / atol 1e-5 are the DDP LoRA
    test's above: the sharded path sums per-shard float32 dot products where one worker takes one dot
    over its flat buffer (about 1e-7 apart at step 1), and from AutoLR's first fit on every row inherits
    the float32 error of its fitted rate (tests/test_fsdp.py measures up to ~1e-4 for the full model).
    The resumed run restores the same numbers, so it must match the uninterrupted sharded run exactly."""
    from equivalence import rel

    ranks, one = [r["fsdp"] for r in lora_ranks[0]], lora_ranks[1]
    r0, r1 = ranks
    assert r0["sharded"] and r0["dtensors"] and r0["trainable"] and all("lora_" in n for n in r0["trainable"])
    adapter = r0["state"]["model"]
    assert set(adapter) == set(one["adapter"]) == set(r0["trainable"]) and r1["state"]["model"] == {}
    for k, v in one["adapter"].items():   # rank 0's adapter is whole (not a shard) and matches one worker's
        assert adapter[k].shape == v.shape, k
        torch.testing.assert_close(adapter[k], v, rtol=1e-3, atol=1e-5)
    for r in ranks:
        for a, b in zip(r["rows"], one["rows"]):
            for key in ("loss_retain", "loss_forget", "norm_retain", "norm_forget", "dot"):
                assert rel(a[key], b[key]) < 1e-4, (key, a["step"], a[key], b[key])
        for a, b in zip(r["resumed_rows"], r["rows"]):
            assert {k: v for k, v in a.items() if v == v} == {k: v for k, v in b.items() if v == v}, a["step"]
        assert r["eval_sharded"] == r0["eval_plain"]
    for k, v in adapter.items():
        assert torch.equal(r0["resumed_state"]["model"][k], v), k
