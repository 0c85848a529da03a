"""The trial body without Ray (``sweeper.unlearn.worker.unlearn_trial``): a trial stopped after a checkpoint and
resumed from it writes exactly the steps and results of a trial that ran straight through, whichever
session (Ray Train, inline) stores the checkpoint; and the launcher refuses ``--runner inline`` for a
multi-worker model before any work starts."""
from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from sweeper.grid.load import expand_grid
from sweeper.launch import main as launch_main
from sweeper.store.storage import Storage
from sweeper.unlearn.targets import ensure_target
from sweeper.cluster.trial import InlineSession, run_inline
from sweeper.unlearn.worker import unlearn_trial

STEPS, EVERY = 6, 3


class Crash(RuntimeError):
    pass


class MemorySession:
    """Keeps the last checkpoint in memory; optionally crashes on the n-th report (after saving it)."""

    def __init__(self, crash_at_report: int | None = None, state: dict | None = None):
        self.crash_at, self.state, self.reports = crash_at_report, state, []

    def restore(self):
        return self.state

    def report(self, metrics, state):
        self.reports.append(metrics)
        self.state = state
        if self.crash_at is not None and len(self.reports) == self.crash_at:
            raise Crash("stopped on purpose after a checkpoint")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial")
    grid = yaml.safe_load(open("search_spaces/smoke.yaml"))
    grid.update(name="trialtest", methods=[{"method": "ngdiff"}], lr_modes=["autolr"])
    grid["data"][0].update(n_authors=6, qa_per_author=5)
    grid["target"].update(max_epochs=20, exact_match_gate=0.0)
    grid["unlearn"].update(steps=STEPS, autolr={"every": 2})
    grid["eval"].update(max_questions=4, every=EVERY)
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    spec = expand_grid(str(path))[0]
    storage = Storage(str(root / "runs"))
    threads = torch.get_num_threads()
    ensure_target(spec.model, spec.data, spec.target, storage, log=lambda _: None)
    yield spec, storage, path
    torch.set_num_threads(threads)


def trial_tables(storage: Storage, spec):
    base = f"{spec.run}/trials/{spec.trial_id}"
    steps = storage.read_table(f"{base}/steps.parquet").to_pandas()
    summary = storage.read_table(f"{base}/summary.parquet").to_pylist()[0]
    return steps, summary


def test_resumed_trial_equals_uninterrupted(setup):
    spec, storage, _ = setup
    unlearn_trial(spec, storage, MemorySession(), torch.device("cpu"))
    straight, straight_summary = trial_tables(storage, spec)
    storage.delete(f"{spec.run}/trials/{spec.trial_id}/_SUCCESS")

    first = MemorySession(crash_at_report=1)  # stops right after the step-3 checkpoint
    with pytest.raises(Crash):
        unlearn_trial(spec, storage, first, torch.device("cpu"))
    assert first.state["step"] == EVERY
    second = MemorySession(state=first.state)
    unlearn_trial(spec, storage, second, torch.device("cpu"))
    resumed, resumed_summary = trial_tables(storage, spec)

    assert resumed["step"].tolist() == list(range(1, STEPS + 1))
    assert [r["step"] for r in second.reports] == [STEPS]  # only what was left ran again
    for col in ("loss_retain", "loss_forget", "lr", "autolr_status"):
        assert resumed[col].tolist() == straight[col].tolist(), col
    for key in ("final_loss_retain", "final_loss_forget", "rouge_forget", "rouge_retain", "final_lr"):
        assert resumed_summary[key] == straight_summary[key], key


def test_inline_session_checkpoint_round_trip(setup, monkeypatch):
    spec, storage, _ = setup
    reported = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reported.append(metrics))
    session = InlineSession(storage, spec)
    assert session.restore() is None
    state = {"unlearner": {"w": torch.arange(3.0)}, "rows": [{"step": 1}], "step": 1, "elapsed": 0.5}
    session.report({"step": 1}, state)
    back = InlineSession(storage, spec).restore()  # a new process finds it in storage
    assert torch.equal(back["unlearner"]["w"], state["unlearner"]["w"]) and back["rows"] == state["rows"]
    assert reported == [{"step": 1}]
    storage.delete(session.path)
    assert session.restore() is None


def test_inline_runner_refuses_multi_worker_models(setup, tmp_path, capsys):
    _, _, path = setup
    grid = yaml.safe_load(path.read_text())
    grid["models"][0]["workers"] = 2
    bad = tmp_path / "two_workers.yaml"
    bad.write_text(yaml.safe_dump(grid))
    assert launch_main(["--grid", str(bad), "--runner", "inline", "--dry-run", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--runner inline runs one worker per trial" in err and "workers = 2" in err


def test_inline_runner_retries_from_its_checkpoint(setup, monkeypatch):
    """--runner inline: an exception at step 5 is retried (max_failures = 1) from the step-3 checkpoint in
    storage; the trial ends ok with every step once, equal to a run without the failure, and the
    checkpoint file is removed."""
    from sweeper.unlearn.loop import Unlearner
    spec, storage, _ = setup
    spec = dataclasses.replace(spec, run="inline_retry")
    monkeypatch.setattr("ray.tune.report", lambda metrics: None)
    step, raised = Unlearner.step, []

    def flaky(self, t):
        if t == 5 and not raised:
            raised.append(t)
            raise RuntimeError("a transient failure")
        return step(self, t)

    monkeypatch.setattr(Unlearner, "step", flaky)
    run_inline(spec, storage)
    retried, summary = trial_tables(storage, spec)
    assert raised == [5] and summary["status"] == "ok"
    assert retried["step"].tolist() == list(range(1, STEPS + 1))
    assert not storage.exists(InlineSession(storage, spec).path)
    monkeypatch.setattr(Unlearner, "step", step)
    straight = dataclasses.replace(spec, run="inline_straight")
    unlearn_trial(straight, storage, MemorySession(), torch.device("cpu"))
    expected, _ = trial_tables(storage, straight)
    for col in ("loss_retain", "loss_forget", "lr"):
        assert retried[col].tolist() == expected[col].tolist(), col


def test_a_stop_marker_ends_the_trial_as_stopped_dominated(setup):
    """A front search's scheduler writes _STOP; the trial ends at its next step with what it measured:
    its steps so far, its last evaluation as its point, the reason, and no full final evaluation."""
    from sweeper.store.records import STOP_MARKER
    spec, storage, _ = setup
    spec = dataclasses.replace(spec, run="stopped", search={"kind": "front", "sampler": "gap", "study": "s",
                                                            "early_stop": {"min_steps": 1, "margin": 0}})
    marker = f"stopped/trials/{spec.trial_id}/{STOP_MARKER}"

    class StopAfterFirstEvaluation(MemorySession):
        def report(self, metrics, state):
            super().report(metrics, state)
            storage.write_bytes(marker, b"dominated by another trial")

    unlearn_trial(spec, storage, StopAfterFirstEvaluation(), torch.device("cpu"))
    steps, summary = trial_tables(storage, spec)
    assert summary["status"] == "stopped_dominated" and summary["stop_reason"] == "dominated by another trial"
    assert steps["step"].tolist() == list(range(1, EVERY + 1)) and summary["steps"] == EVERY
    assert summary["rouge_forget"] == steps["rouge_forget"].iloc[-1] and summary["final_loss_forget"] is None
    assert summary["search"] == "front:gap" and summary["study"] == "s" and summary["finished_at"] > 0


def test_keep_best_saves_the_best_evaluated_model(setup):
    spec, storage, _ = setup
    spec = dataclasses.replace(spec, run="best", eval={**spec.eval, "keep_best": 0.5})
    unlearn_trial(spec, storage, MemorySession(), torch.device("cpu"))
    steps, summary = trial_tables(storage, spec)
    evaluated = steps[steps["rouge_forget"].notna()]
    scores = 0.5 * evaluated["rouge_retain"] + 0.5 * (1 - evaluated["rouge_forget"])
    best = json.loads(storage.read_bytes(f"best/trials/{spec.trial_id}/best/best.json"))
    assert best["step"] == summary["best_step"] == int(evaluated["step"].iloc[scores.to_numpy().argmax()])
    assert storage.exists(f"best/trials/{spec.trial_id}/best/config.json")  # save_pretrained's folder
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(storage.path(f"best/trials/{spec.trial_id}/best")) is not None
