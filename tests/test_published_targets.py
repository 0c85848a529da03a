"""Published checkpoints as targets, without Ray: a saved fine-tuned folder (its tokenizer with a chat
template) is loaded as it is (zero fine-tune steps), its No-unlearn row is the same on a rerun, a
published retrained reference gives Forget Quality, a trial unlearns from it; and a model whose context
is too short for the data is refused before any training, in one sentence."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from sweeper.data.synthetic import write_tofu_layout
from sweeper.data.templates import RowTooLong
from sweeper.data.tofu import load_tofu
from sweeper.data.tokenizer import train_tokenizer
from sweeper.grid.load import expand_grid, target_hash
from sweeper.models.language import build_model
from sweeper.store.records import baseline_id
from sweeper.cluster.stage1 import target_and_baseline
from sweeper.cluster.stage1_tasks import targets_cached
from sweeper.store.storage import Storage
from sweeper.unlearn.worker import unlearn_trial

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def save_checkpoint(folder, texts, positions: int, seed: int = 0, chat: bool = True, arch: str = "tiny-llama"):
    """A 'published' checkpoint: a tiny model and its tokenizer saved together, as the hub holds them."""
    tok = train_tokenizer(texts, vocab_size=400)
    if chat:
        tok.chat_template = CHATML
    model = build_model(arch, vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, seed=seed,
                        positions=positions)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def authors_texts(folder) -> list[str]:
    data = load_tofu(str(folder), "forget10")
    rows = data.full + data.forget_perturbed + data.retain_perturbed + data.real_authors + data.world_facts
    return [t for r in rows for t in [r["question"], r["answer"], *r.get("perturbed_answer", [])]]


def grid_file(root, model: dict, data: dict, **eval_cfg) -> str:
    grid = {"name": "published", "data": [{"name": "authors", **data}], "models": [model],
            "target": {"max_epochs": 50, "exact_match_gate": 0.9}, "methods": [{"method": "ngdiff"}],
            "unlearn": {"steps": 2, "batch_size": 4}, "eval": {"max_questions": 4, "every": 0, **eval_cfg}}
    path = os.path.join(root, "grid.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(grid, f)
    return path


class NullSession:
    def restore(self):
        return None

    def report(self, metrics, state):
        pass


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("published")
    data_dir = write_tofu_layout(root / "tofu", n_authors=6, qa_per_author=4, seed=0)
    texts = authors_texts(data_dir)
    target = save_checkpoint(root / "target", texts, positions=512, seed=0)
    reference = save_checkpoint(root / "retain90", texts, positions=512, seed=1)
    # {retain_split} is filled in from the data's forget split, as for the hub's retain90/95/99 models
    model = {"name": "tiny-llama", "checkpoint": target, "retrained_reference": str(root / "{retain_split}")}
    spec = expand_grid(grid_file(root, model, {"source": str(data_dir), "forget_split": "forget10"}))[0]
    logs: list[str] = []
    storage = Storage(str(root / "runs"))
    row = f"{spec.run}/trials/{baseline_id(spec)}/_SUCCESS"
    at_ready = []   # (both targets in storage, the No-unlearn row written) when stage 1 says the trials may start
    target_and_baseline(spec, storage, logs.append,
                        on_ready=lambda: at_ready.append((targets_cached(spec, storage), storage.exists(row))))
    yield {"root": root, "spec": spec, "storage": storage, "logs": logs, "data_dir": data_dir, "at_ready": at_ready}
    torch.set_num_threads(threads)


def test_published_target_is_loaded_not_fine_tuned(published):
    spec, storage, logs = published["spec"], published["storage"], published["logs"]
    rel = f"targets/{spec.target_hash}"
    metrics = json.loads(storage.read_bytes(f"{rel}/metrics.json"))
    assert metrics["epochs"] == 0 and metrics["fine_tune_s"] == 0.0
    assert metrics["published"] == spec.model["checkpoint"] and metrics["template"] == "chat"
    assert not any("epoch" in line for line in logs), logs          # no fine-tune progress at all
    assert any("loading the published checkpoint" in line for line in logs)
    local = storage.path(rel)
    assert os.path.exists(os.path.join(local, "source.json")) and not os.path.exists(os.path.join(local, "model"))
    with open(os.path.join(local, "tokenizer", "tokenizer_config.json")) as f:
        assert json.load(f)["prompt_template"] == "chat"   # the template travels with the tokenizer


def test_trials_may_start_once_both_targets_are_stored_before_the_rows(published):
    """Stage 1 calls ``on_ready`` once, when the target and the retain-only reference are complete in
    storage and before it scores the No-unlearn row: the launcher hands out the trials then."""
    assert published["at_ready"] == [(True, False)]


def test_no_unlearn_row_is_identical_on_a_rerun_and_records_the_checkpoint(published, tmp_path):
    spec = published["spec"]
    row = pq.read_table(published["storage"].path(f"{spec.run}/trials/{baseline_id(spec)}/summary.parquet")).to_pylist()[0]
    assert json.loads(row["params_json"])["model"]["checkpoint"] == spec.model["checkpoint"]
    again = Storage(str(tmp_path / "runs"))   # a fresh storage: everything is recomputed from the checkpoint
    target_and_baseline(spec, again, lambda _: None)
    row2 = pq.read_table(again.path(f"{spec.run}/trials/{baseline_id(spec)}/summary.parquet")).to_pylist()[0]
    numbers = [k for k, v in row.items() if isinstance(v, float) and k != "wall_s"]
    assert numbers and {k: row[k] for k in numbers} == {k: row2[k] for k in numbers}
    logs: list[str] = []
    target_and_baseline(spec, published["storage"], logs.append)   # same storage: cached, nothing rebuilt
    assert sum("cached, reused" in line for line in logs) == 2


def test_published_reference_gives_forget_quality_and_its_own_row(published):
    spec, storage = published["spec"], published["storage"]
    ref_key = target_hash(spec.model, spec.data, spec.target, "retain_only")
    assert json.loads(storage.read_bytes(f"targets/{ref_key}/metrics.json"))["epochs"] == 0
    base = pq.read_table(storage.path(f"{spec.run}/trials/{baseline_id(spec)}/summary.parquet")).to_pylist()[0]
    assert 0.0 <= base["forget_quality"] <= 1.0
    ref_row = pq.read_table(storage.path(
        f"{spec.run}/trials/{baseline_id(spec, 'retain_only')}/summary.parquet")).to_pylist()[0]
    assert ref_row["method"] == "retrained_reference" and ref_row["forget_quality"] == pytest.approx(1.0)
    assert json.loads(ref_row["params_json"])["model"]["checkpoint"] == str(published["root"] / "retain90")


def test_a_trial_unlearns_from_the_published_target(published):
    spec, storage = published["spec"], published["storage"]
    unlearn_trial(spec, storage, NullSession(), torch.device("cpu"))
    row = pq.read_table(storage.path(f"{spec.run}/trials/{spec.trial_id}/summary.parquet")).to_pylist()[0]
    assert row["status"] == "ok" and row["steps"] == 2


def test_model_with_too_short_a_context_is_refused_before_training(tmp_path):
    data_dir = write_tofu_layout(tmp_path / "tofu", n_authors=6, qa_per_author=4, seed=0, lengths="real")
    short = save_checkpoint(tmp_path / "short", authors_texts(data_dir), positions=32, chat=False, arch="tiny-gpt2")
    spec = expand_grid(grid_file(tmp_path, {"name": short}, {"source": str(data_dir)}))[0]
    logs: list[str] = []
    with pytest.raises(RowTooLong) as e:
        target_and_baseline(spec, Storage(str(tmp_path / "runs")), logs.append)
    message = str(e.value)
    assert "\n" not in message and "'authors'" in message and "32-token context" in message and short in message
    assert not any("epoch" in line for line in logs)   # refused before the first training step


def test_shipped_published_grid_expands_and_dry_runs_offline(capsys):
    """search_spaces/tofu_published.yaml: 3 forget splits x 2 published targets x 6 methods x 2 lr modes;
    each split's Llama reference is the released retain model of that split; --dry-run needs no hub."""
    from sweeper.grid.load import published_source
    from sweeper.launch import main as launch_main
    specs = expand_grid("tofu_published")
    assert len(specs) == 72 and len({s.target_hash for s in specs}) == 6
    llama = {s.data["forget_split"]: published_source(s.model, s.data, "retain_only") for s in specs
             if s.model["name"] == "meta-llama/Llama-2-7b-chat-hf"}
    assert llama == {f"forget{p:02d}": f"open-unlearning/tofu_Llama-2-7b-chat-hf_retain{100 - p}" for p in (1, 5, 10)}
    phi = next(s for s in specs if s.model["name"] == "microsoft/phi-1_5")
    assert phi.model["checkpoint"] == "locuslab/tofu_ft_phi-1.5" and phi.model["tokenizer"] == "microsoft/phi-1_5"
    assert published_source(phi.model, phi.data, "retain_only") is None   # fine-tuned here from microsoft/phi-1_5
    assert launch_main(["--grid", "tofu_published", "--dry-run"]) == 0
    assert "72 trials, 6 No-unlearn target(s)" in capsys.readouterr().out
