"""Where the sweeper leans on Ray Tune's trial processes: keep them when trials are shorter than a process
start (``reuse_actors=True``), and give the launcher's own tasks their runtime environment.

    from sweeper.cluster.tune_actors import keep_starting_actors, trial_process_env
    keep_starting_actors()   # before tune.Tuner(...).fit(); idempotent
    ray.remote(runtime_env={"env_vars": trial_process_env()})(build_target)   # see trial_process_env

Why: with actor reuse, a pending trial whose own trial process is already placed and starting takes a
cached process the moment one frees, and Tune kills the starting one (its design: a process still
waiting for resources may never come, e.g. without autoscaling; ``TuneController._maybe_reuse_cached_actor``).
When a trial (the demo's: ~2 s) is shorter than a process start (imports: ~3 s on 2 CPUs), that repeats
for every trial: each new process is killed before it is up, and the sweep runs one trial at a time on a
machine that has room for two (measured on the demo after a Ray Train trial freed its CPUs: stage 2 took
62 s instead of ~45 s). The rule here: a trial whose own process already holds its resources keeps it,
and the cached process goes to the next trial. A process still waiting for resources is swapped as before.

If Tune's internals this relies on are not there (another Ray version), nothing is changed.
"""
from __future__ import annotations

def keep_starting_actors() -> bool:
    """Install the rule on ``TuneController`` (once); True when it is installed."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._maybe_reuse_cached_actor
    if getattr(original, "_keeps_starting_actors", False):
        return True

    def maybe_reuse_cached_actor(self, trial) -> bool:
        try:
            own = self._trial_to_actor.get(trial)
            placed_and_starting = (own is not None and trial not in self._resetting_trials
                                   and own not in self._started_actors
                                   and self._actor_manager.is_actor_started(own))
        except AttributeError:  # Tune's internals changed: keep its own behaviour
            placed_and_starting = False
        if placed_and_starting:
            return False
        return original(self, trial)

    maybe_reuse_cached_actor._keeps_starting_actors = True
    TuneController._maybe_reuse_cached_actor = maybe_reuse_cached_actor
    return True


def trial_process_env() -> dict[str, str]:
    """The environment variables Ray Tune gives every trial process (the ``runtime_env`` of its actor
    class), for the launcher's own tasks to carry too.

    Why: Ray keeps one pool of worker processes per runtime environment, and a task inherits the runtime
    environment of the process that submits it. A trial process's tasks (an inline trial,
    ``sweeper.cluster.trial.run_inline_task``) would otherwise never land in the workers of the
    launcher's stage-1 tasks, which already hold torch, transformers and the model code, but in new
    ones that import everything again (~5 s each on 2 CPUs). Empty when Tune's internals differ
    (another Ray version): then only the warm start is lost."""
    import os
    try:
        from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE
    except ImportError:
        return {}
    return {**DEFAULT_ENV_VARS, **{k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ}}
