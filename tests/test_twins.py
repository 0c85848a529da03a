"""The ``twins`` grid (models x methods over the tiny twins of all five paper architectures) runs through the
trial's own code, in process: for each twin, stage 1 fine-tunes the target and writes its No-unlearn row,
then GDiff and NGDiff unlearn it (``unlearn_trial``, the body every runner calls).

The Ray path around this code (Tune, stage-1 tasks, inline and Ray Train runners) is exercised by every
launch test (tests/test_launch.py, tests/test_inline_task.py, tests/test_fault_tolerance.py, ...); what is
particular to the twins is each architecture's build, save and load, and forward and backward pass.

Slow (about 15 s): ``pytest -m slow tests/test_twins.py``.
"""
import torch
import pyarrow.parquet as pq
import pytest
import yaml

from sweeper.cluster.stage1 import target_and_baseline
from sweeper.grid.load import expand_grid
from sweeper.store.storage import Storage
from sweeper.unlearn.worker import unlearn_trial

pytestmark = pytest.mark.slow
MODELS = ["tiny-falcon", "tiny-gpt2", "tiny-llama", "tiny-mistral", "tiny-phi"]


class MemorySession:
    """A session that keeps no checkpoint: the trial runs straight through."""

    def restore(self):
        return None

    def report(self, metrics, state):
        pass


def test_five_twins_by_two_methods(tmp_path):
    grid = yaml.safe_load(open("search_spaces/twins.yaml"))
    # A short fine-tune (the grid's own reaches its 0.8 gate in 20-30 epochs, 3 s a twin): enough for
    # unlearning to have something to raise; the gate itself is tested in tests/test_target_gate.py.
    grid["target"].update(max_epochs=10, exact_match_gate=0.0)
    grid["eval"].update(max_questions=4, max_new_tokens=8)
    (tmp_path / "twins.yaml").write_text(yaml.safe_dump(grid))
    specs = expand_grid(str(tmp_path / "twins.yaml"))
    storage = Storage(str(tmp_path))
    threads = torch.get_num_threads()
    try:
        for spec in specs:
            target_and_baseline(spec, storage, log=lambda _: None)  # once per twin; later calls reuse it
            unlearn_trial(spec, storage, MemorySession(), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    trials = tmp_path / "twins" / "trials"
    rows = [pq.read_table(t / "summary.parquet").to_pylist()[0] for t in trials.iterdir()]
    cells = sorted((r["model"], r["method"]) for r in rows)
    assert cells == sorted((m, k) for m in MODELS for k in ("gdiff", "ngdiff", "no_unlearn"))
    assert all(r["status"] == "ok" for r in rows)
    base = {r["model"]: r for r in rows if r["method"] == "no_unlearn"}
    for r in rows:
        if r["method"] != "no_unlearn":  # every architecture unlearns through the same code
            assert r["final_loss_forget"] > base[r["model"]]["final_loss_forget"], r["trial_id"]
