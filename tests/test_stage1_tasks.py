"""Stage 2 beside stage 1: a grid's trials reach Tune as soon as their own target is in storage
(``sweeper.cluster.stage1_tasks.ReadyTargetSearcher``), in the grid's order: a cached one at once, a new
one before its No-unlearn row is scored; a failed target's trials are dropped (the launcher counts them
skipped), while a failed row keeps them; Tune is told to ask again while targets are still building."""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

from ray.tune.search import Searcher

from sweeper.cluster.stage1_tasks import READY, ReadyTargetSearcher, TargetBuilds, targets_cached
from sweeper.grid.load import expand_grid, target_hash
from sweeper.store.storage import Storage

ROOT = Path(__file__).resolve().parent.parent


class FakeBuilds:
    """What the searcher reads of ``TargetBuilds``: the targets built so far and those that failed."""

    def __init__(self):
        self.ready, self.failed = set(), set()


def test_trials_are_handed_out_as_their_targets_become_ready():
    specs = expand_grid(str(ROOT / "search_spaces" / "demo" / "twins.yaml"))
    gpt2, llama = (next(s.target_hash for s in specs if s.model["name"] == m) for m in ("tiny-gpt2", "tiny-llama"))
    builds = FakeBuilds()
    searcher = ReadyTargetSearcher(specs, builds, {"storage": "/tmp/x", "runner": "auto"})
    assert searcher.suggest("t0") is None                      # nothing built yet: ask again later

    builds.ready.add(llama)                                    # the later model's target is built first
    got = [searcher.suggest(f"t{i}") for i in range(12)]
    assert [c["trial"] for c in got] == [s.trial_id for s in specs if s.target_hash == llama]
    assert all(c["storage"] == "/tmp/x" and c["runner"] == "auto" for c in got)
    assert searcher.suggest("t12") is None                     # the GPT-2 target is still building

    builds.failed.add(gpt2)                                    # it fails: its trials are dropped, not run
    assert searcher.suggest("t13") is Searcher.FINISHED
    assert searcher.dropped == 12 and searcher.waiting == []


def test_grid_order_is_kept_among_ready_targets():
    specs = expand_grid(str(ROOT / "search_spaces" / "demo" / "twins.yaml"))
    builds = FakeBuilds()
    builds.ready.update(s.target_hash for s in specs)
    searcher = ReadyTargetSearcher(specs, builds, {})
    assert [searcher.suggest(str(i))["trial"] for i in range(len(specs))] == [s.trial_id for s in specs]
    assert searcher.suggest("last") is Searcher.FINISHED


def test_builds_pickle_as_what_they_know():
    """Tune pickles its searcher into the experiment state: the builds go as their known targets only."""
    builds = TargetBuilds.__new__(TargetBuilds)
    builds.ready, builds.failed, builds.rows_failed = {"a"}, {"b"}, {"a"}
    again = pickle.loads(pickle.dumps(builds))
    assert again.ready == {"a"} and again.failed == {"b"} and again.rows_failed == {"a"} and again.wait() == {"b"}


class ListQueue:
    """What ``TargetBuilds`` reads of its Ray queue: ``get_nowait`` until it raises ``Empty``."""

    def __init__(self, items):
        self.items = list(items)

    def get_nowait(self):
        if not self.items:
            raise Empty
        return self.items.pop(0)


class Empty(Exception):
    pass


def builds_for(tmp_path, specs) -> TargetBuilds:
    """A ``TargetBuilds`` without Ray: its tasks' ends and queue items are fed by hand."""
    builds = TargetBuilds.__new__(TargetBuilds)
    builds.ready, builds.failed, builds.rows_failed = set(), set(), set()
    builds._firsts = {s.target_hash: s for s in specs}
    builds._storage, builds._run = Storage(str(tmp_path)), "run"
    return builds


def test_a_task_marks_its_target_ready_before_its_row_and_prints_its_lines(tmp_path, capsys):
    specs = expand_grid(str(ROOT / "search_spaces" / "smoke.yaml"))
    key = specs[0].target_hash
    builds = builds_for(tmp_path, specs)
    builds._lines = ListQueue(["target ...: fine-tuning", (READY, key), "no_unlearn tiny-gpt2 ..."])
    builds._print_lines(Empty)
    assert builds.ready == {key}
    assert capsys.readouterr().out.splitlines() == ["target ...: fine-tuning", "no_unlearn tiny-gpt2 ..."]


def test_a_failure_after_the_target_was_ready_keeps_its_trials(tmp_path, capsys):
    """Failed before ready: no target, its trials are dropped. Failed after: only the No-unlearn row is
    missing; its trials run (they need the target only) and the launcher exits 1."""
    specs = expand_grid(str(ROOT / "search_spaces" / "demo" / "twins.yaml"))
    gpt2, llama = (next(s.target_hash for s in specs if s.model["name"] == m) for m in ("tiny-gpt2", "tiny-llama"))
    builds = builds_for(tmp_path, specs)
    builds.ready.add(gpt2)
    builds._ended(gpt2, "RuntimeError: the row's evaluation broke")
    builds._ended(llama, "RuntimeError: the fine-tune broke")
    assert builds.failed == {llama} and builds.rows_failed == {gpt2} and builds.ready == {gpt2}
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: the No-unlearn row failed for target {gpt2} (model 'tiny-gpt2'")
    assert err[1].startswith(f"error: stage 1 failed for target {llama} (model 'tiny-llama'")
    assert all(f"full log: {tmp_path}/run/logs/stage1_" in line for line in err)


def test_cached_targets_are_ready_without_a_task(tmp_path):
    """The launcher hands out a cached target's trials at once: every target they load has its _SUCCESS
    (the retain-only reference too when the run scores against one)."""
    spec = expand_grid(str(ROOT / "search_spaces" / "smoke.yaml"))[0]
    with_ref = dataclasses.replace(spec, eval={**spec.eval, "retrained_reference": True})
    storage = Storage(str(tmp_path))
    assert not targets_cached(spec, storage)
    storage.write_bytes(f"targets/{spec.target_hash}/_SUCCESS", b"")
    assert targets_cached(spec, storage) and not targets_cached(with_ref, storage)
    ref = target_hash(spec.model, spec.data, spec.target, "retain_only")
    storage.write_bytes(f"targets/{ref}/_SUCCESS", b"")
    assert targets_cached(with_ref, storage)
