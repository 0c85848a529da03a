"""Stage 2 beside stage 1: a grid's trials reach Tune as soon as their own target is built
(``sweeper.cluster.stage1_tasks.ReadyTargetSearcher``), in the grid's order; a failed target's trials are
dropped (the launcher counts them skipped); Tune is told to ask again while targets are still building."""
from __future__ import annotations

import pickle
from pathlib import Path

from ray.tune.search import Searcher

from sweeper.cluster.stage1_tasks import ReadyTargetSearcher, TargetBuilds
from sweeper.grid.load import expand_grid

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
    builds.ready, builds.failed = {"a"}, {"b"}
    again = pickle.loads(pickle.dumps(builds))
    assert again.ready == {"a"} and again.failed == {"b"} and again.wait() == {"b"}
