"""The rule that keeps a starting trial process (sweeper/cluster/tune_actors.py), checked on Tune's own
``TuneController._maybe_reuse_cached_actor`` with a stand-in controller (no Ray started).

Its effect on a real Ray is measured in benchmarks/bench_tune_reuse.py (RESULTS.md): after a trial of
another shape ends, short trials run one at a time with Tune as it is and two at a time with the rule.
"""
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from ray.tune.execution.tune_controller import TuneController

from sweeper.cluster.tune_actors import keep_starting_actors


def controller(own_actor_state: str | None, cached: bool):
    """A stand-in TuneController: one trial whose own process is absent, 'waiting' for resources,
    'starting' (placed, not up) or 'up'; ``cached``: a freed process of the same shape is in the cache."""
    trial, own = MagicMock(placement_group_factory="pgf"), object()
    c = SimpleNamespace(
        _trial_to_actor={trial: own} if own_actor_state else {}, _actor_to_trial={own: trial},
        _resetting_trials=set(), _started_actors={own} if own_actor_state == "up" else set(),
        _actor_manager=SimpleNamespace(is_actor_started=lambda a: own_actor_state in ("starting", "up"),
                                       _live_actors_to_ray_actors_resources={"cached": ("ray actor", None)}),
        _actor_cache=SimpleNamespace(has_cached_object=lambda r: cached, pop_cached_object=lambda r: "cached"),
        _remove_actor=MagicMock(), _schedule_trial_reset=MagicMock())
    return c, trial, own


@pytest.fixture(scope="module", autouse=True)
def installed():
    assert keep_starting_actors() and keep_starting_actors()  # idempotent


def test_a_placed_starting_process_is_kept_and_the_cached_one_left_for_the_next_trial():
    c, trial, own = controller("starting", cached=True)
    assert TuneController._maybe_reuse_cached_actor(c, trial) is False
    assert c._trial_to_actor[trial] is own and not c._remove_actor.called


@pytest.mark.parametrize("state", [None, "waiting"])
def test_a_trial_without_a_placed_process_takes_the_cached_one_as_tune_does(state):
    """Tune's own rule stands where its reason holds: a process still waiting for resources may never come."""
    c, trial, own = controller(state, cached=True)
    assert TuneController._maybe_reuse_cached_actor(c, trial) is True
    assert c._trial_to_actor[trial] == "cached"
    assert c._remove_actor.called == (state == "waiting")  # the waiting request is withdrawn
    c._schedule_trial_reset.assert_called_once()


def test_nothing_cached_means_nothing_changes():
    c, trial, own = controller("waiting", cached=False)
    assert TuneController._maybe_reuse_cached_actor(c, trial) is False
    assert c._trial_to_actor[trial] is own


def test_the_tune_internals_the_rule_reads_exist_in_the_installed_ray():
    """A Ray upgrade that renames them would silently turn the rule off: fail here instead."""
    import inspect
    source = inspect.getsource(TuneController)
    for name in ("_trial_to_actor", "_resetting_trials", "_started_actors", "_actor_manager",
                 "def _maybe_reuse_cached_actor"):
        assert name in source, name
    from ray.air.execution._internal.actor_manager import RayActorManager
    assert hasattr(RayActorManager, "is_actor_started")


def test_trial_process_env_is_the_one_tune_gives_its_trial_processes(monkeypatch):
    """The stage-1 tasks carry exactly Tune's trial-process runtime env (and so share a worker pool with
    the trial processes' inline tasks), including a propagated variable that is set."""
    from ray.tune.execution.class_cache import _ActorClassCache

    from sweeper.cluster.tune_actors import trial_process_env

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

    class Trainable:
        pass

    tune_env = _ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert trial_process_env() == tune_env and tune_env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1"
