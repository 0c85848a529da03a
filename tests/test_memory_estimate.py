"""The dry run's per-trial GPU memory estimate (``sweeper.cluster.memory``) against direct computation:
parameter counts of the published configs and the tiny twins built with transformers, LoRA's trainable
count against peft's, and the dry-run lines of the Phi-1.5 and Llama-2-7B grids of ``benchmarks/memory_grids``.
No downloads: the published sizes are config values written out in the module; hub ids are never loaded."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import transformers

from sweeper.cluster.estimate import KNOWN_LMS
from sweeper.cluster.memory import (CUDA_CONTEXT_GB, GB, PUBLISHED_CONFIGS, lora_trainable, memory_lines,
                                    model_config, shapes_from_config, trial_memory)
from sweeper.grid.load import expand_grid
from sweeper.launch import main as launch_main
from sweeper.models.language import TINY_MODELS, build_model

GRIDS = Path(__file__).resolve().parent.parent / "benchmarks" / "memory_grids"


def _meta_count(cfg: dict) -> int:
    """Parameters of the model transformers builds from ``cfg`` on the meta device (no weights)."""
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in PUBLISHED_CONFIGS if n != "meta-llama/Llama-2-7b-chat-hf"])
def test_published_parameter_counts_follow_from_the_config_shapes(name):
    shapes = shapes_from_config(PUBLISHED_CONFIGS[name])
    assert shapes["params"] == _meta_count(PUBLISHED_CONFIGS[name]) == KNOWN_LMS[name][0]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_twin_estimate_counts_the_built_model(name):
    model = build_model(name, vocab_size=1024)   # the built-in tokenizer's size, as model_config assumes
    n = sum(p.numel() for p in model.parameters())
    spec = expand_grid("smoke")[0]
    spec = dataclasses.replace(spec, model={**spec.model, "name": name, "gpus_per_worker": 0.5},
                               optimizer="adam", lr_mode="static")
    est = trial_memory(spec)
    assert est["params"] == n == est["trainable"]
    assert est["parts"]["weights"] == 4 * n                     # float32 master weights
    assert est["parts"]["grads"] == 2 * 4 * n                   # the flat .grad buffer and the g_R copy
    assert est["parts"]["optimizer"] == 2 * 4 * n               # Adam's two moments
    assert est["parts"]["CUDA context"] == CUDA_CONTEXT_GB * GB


@pytest.mark.parametrize("name,targets", [("tiny-gpt2", None), ("tiny-phi", None), ("tiny-falcon", None),
                                          ("tiny-llama", ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]),
                                          ("tiny-gpt2", ["c_proj", "c_fc"]), ("tiny-mistral", "auto")])
def test_lora_trainable_count_is_peft_s(name, targets):
    pytest.importorskip("peft")
    from sweeper.models.adapters import apply_adapter
    adapter = {"kind": "lora", "r": 4, **({"target_modules": targets} if targets else {})}
    peft_model = apply_adapter(build_model(name, vocab_size=1024), adapter)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert lora_trainable(shapes_from_config(model_config({"name": name})), adapter) == trainable


def test_a_local_folder_is_read_from_its_config_json(tmp_path):
    transformers.AutoConfig.for_model(**PUBLISHED_CONFIGS["mistralai/Mistral-7B-v0.1"]).save_pretrained(tmp_path)
    shapes = shapes_from_config(model_config({"name": str(tmp_path)}))
    assert shapes["params"] == KNOWN_LMS["mistralai/Mistral-7B-v0.1"][0]
    assert model_config({"name": "someone/unknown-model"}) is None


def _dry_run(capsys, grid: str, *extra: str) -> list[str]:
    before = set(sys.modules)
    assert launch_main(["--grid", str(GRIDS / grid), "--dry-run", "--num-gpus", "8", *extra]) == 0
    assert "ray" not in set(sys.modules) - before                      # a dry run starts no Ray
    return [line for line in capsys.readouterr().out.splitlines() if not line.startswith("  ")]


def test_dry_run_phi15_full_vs_lora(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")   # a hub id loaded by the dry run would fail here
    lines = _dry_run(capsys, "phi15.yaml")
    full = next(line for line in lines if line.startswith("memory: microsoft/phi-1_5, "))
    lora = next(line for line in lines if line.startswith("memory: microsoft/phi-1_5 LoRA r8, "))
    assert "1.42B parameters: ≈ 41.9 GB per trial (weights 5.7, grads 17.0, optimizer 11.3, activations 7.3, " \
           "CUDA context 0.5) -> 1 trial(s) per 80 GB GPU" in full
    assert "1.6M of 1.42B trainable: ≈ 13.5 GB per trial (weights 5.7, grads 0.0, optimizer 0.0, " \
           "activations 7.3, CUDA context 0.5) -> 5 trial(s) per 80 GB GPU" in lora
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: microsoft/phi-1_5 needs ≈ 41.9 GB per worker but gpus_per_worker = 0.25 gives "
                        "it 20 GB of one 80 GB GPU; use gpus_per_worker 1 (1 per GPU)"]
    assert sum(line.startswith("GPU packing: microsoft/phi-1_5") for line in lines) == 2   # full and LoRA
    # a larger GPU: the same trials, more of them per GPU, no warning left for LoRA
    lines = _dry_run(capsys, "phi15.yaml", "--gpu-memory-gb", "141")
    assert any("-> 10 trial(s) per 141 GB GPU" in line for line in lines)


def test_dry_run_llama7b_fsdp_full_vs_lora(capsys):
    lines = _dry_run(capsys, "llama7b.yaml")
    full = next(line for line in lines if line.startswith("memory: meta-llama/Llama-2-7b-hf, "))
    lora = next(line for line in lines if line.startswith("memory: meta-llama/Llama-2-7b-hf LoRA r8, "))
    assert "6.74B parameters: ≈ 45.2 GB per worker of 4 (FSDP) (weights 7.1, grads 20.2, optimizer 13.5, " \
           "activations 3.9, CUDA context 0.5) -> 1 worker(s) per 80 GB GPU" in full
    assert "4.2M of 6.74B trainable: ≈ 43.0 GB per trial (weights 27.0, grads 0.1, optimizer 0.0, " \
           "activations 15.5, CUDA context 0.5) -> 1 trial(s) per 80 GB GPU" in lora
    assert [line for line in lines if line.startswith("warning:")] == [
        "warning: meta-llama/Llama-2-7b-hf LoRA r8 needs ≈ 43.0 GB per worker but gpus_per_worker = 0.5 gives it "
        "40 GB of one 80 GB GPU; use gpus_per_worker 1 (1 per GPU)"]


def test_a_model_that_does_not_fit_one_gpu_is_told_to_shard():
    spec = expand_grid("smoke")[0]
    spec = dataclasses.replace(spec, model={**spec.model, "name": "meta-llama/Llama-2-7b-hf", "gpus_per_worker": 1})
    lines = memory_lines([spec], gpu_gb=80)
    assert "-> 0 trial(s) per 80 GB GPU" in lines[0]
    assert lines[1].endswith("it does not fit one GPU: shard it (strategy: fsdp, more workers) or use an adapter")
