"""Stage 1 as Ray tasks that run beside stage 2: each distinct No-unlearn target is built by one task, and a
grid's trials are handed to Ray Tune as soon as *their* target is ready, not when the slowest one is.
Ready means complete in storage: a cached target at once (the launcher checks its ``_SUCCESS`` marker), a
new one when its task has built it; the task scores the No-unlearn row while the first trials run.

On a cluster that means no GPU waits for another model's fine-tune; on a laptop the demo's tiny GPT-2
trials run on the core that its finished target freed while tiny Llama still memorises. Launcher glue::

    builds = TargetBuilds(specs, storage, run)       # submits one task per target, prints their progress
    searcher = ReadyTargetSearcher(specs, builds, base_config)   # Tune's search_alg for a grid
    ...                                              # tune.Tuner(..., search_alg=searcher).fit()
    builds.wait()                                    # every target ended; builds.failed holds the hashes

A target that fails is reported in one sentence with its log's path, and only its trials are dropped (they
count as skipped); every other target and trial goes on. A No-unlearn row that fails after its target was
ready is reported the same way (``rows_failed``); its trials run, and the launch exits 1.
"""
from __future__ import annotations

import sys
import threading

from ray.tune.search import Searcher

from sweeper.cluster.tune_actors import trial_process_env
from sweeper.grid.spec import TrialSpec, target_hash, target_variants
from sweeper.store.storage import Storage


class TargetBuilds:
    """One Ray task per distinct target of ``specs``, submitted at once; a thread prints their progress
    lines as they come and records each target as ready or failed."""

    def __init__(self, specs: list[TrialSpec], storage: Storage, run: str, poll_s: float = 0.25):
        import ray
        from ray.util.queue import Queue

        self._firsts = {s.target_hash: s for s in specs}
        self.ready: set[str] = {key for key, s in self._firsts.items() if targets_cached(s, storage)}
        self.failed: set[str] = set()        # no target: its trials are dropped
        self.rows_failed: set[str] = set()   # the target is fine (its trials ran), its No-unlearn row failed
        self._lines = Queue(actor_options={"num_cpus": 0})
        self._storage, self._run, self._poll_s = storage, run, poll_s
        # Tune's runtime environment for its trial processes: a task inherits its submitter's, and Ray keeps
        # one pool of worker processes per runtime environment, so with it the trial processes' inline
        # tasks reuse these warm workers (torch, transformers, the model code imported) instead of new ones.
        task = ray.remote(num_cpus=1, runtime_env={"env_vars": trial_process_env()})(_build_target)
        self._pending = {task.options(num_gpus=s.model["gpus_per_worker"] and 1).remote(
            s.to_dict(), storage.uri, self._log_rel(key), self._lines): key for key, s in self._firsts.items()}
        self._thread = threading.Thread(target=self._watch, name="stage1-watch", daemon=True)
        self._thread.start()

    def __getstate__(self) -> dict:
        """What Tune pickles with its searcher (its experiment state): the targets known so far, not the
        tasks, the queue or the thread."""
        return {"ready": set(self.ready), "failed": set(self.failed), "rows_failed": set(self.rows_failed)}

    def __setstate__(self, state: dict) -> None:
        self.ready, self.failed, self._pending, self._thread = state["ready"], state["failed"], {}, None
        self.rows_failed = state.get("rows_failed", set())

    def _log_rel(self, key: str) -> str:
        return f"{self._run}/logs/stage1_{key}.log"

    def wait(self) -> set[str]:
        """Block until every target ended; the hashes of those that failed."""
        if self._thread is not None:
            self._thread.join()
        return self.failed

    def _watch(self) -> None:
        import ray
        from ray.util.queue import Empty

        while self._pending:
            done, _ = ray.wait(list(self._pending), timeout=self._poll_s)
            self._print_lines(Empty)
            for ref in done:
                self._ended(self._pending.pop(ref), ray.get(ref))
        self._print_lines(Empty)

    def _ended(self, key: str, cause: str | None) -> None:
        """Record a task's end: its target ready, or failed (its trials dropped), or, when it failed after
        its target was ready, its No-unlearn row failed (its trials run); a failure is named in one line."""
        if cause is None:
            self.ready.add(key)
            return
        s, after_ready = self._firsts[key], key in self.ready
        print(f"error: {'the No-unlearn row' if after_ready else 'stage 1'} failed for target {key} (model "
              f"{s.model['name']!r}, data {s.data['name']!r}): {cause} (full log: "
              f"{self._storage.show(self._log_rel(key))})", file=sys.stderr, flush=True)
        (self.rows_failed if after_ready else self.failed).add(key)

    def _print_lines(self, empty) -> None:
        """Print the tasks' progress lines; a ``(READY, key)`` item marks that target ready."""
        while True:
            try:
                item = self._lines.get_nowait()
            except empty:
                return
            if isinstance(item, tuple) and item[0] == READY:
                self.ready.add(item[1])
            else:
                print(item, flush=True)


def targets_cached(spec: TrialSpec, storage: Storage) -> bool:
    """Every target a trial of ``spec`` loads is complete in storage (its ``_SUCCESS`` marker, written last):
    its trials can start now, before stage 1 has scored the No-unlearn row."""
    return all(storage.exists(f"targets/{target_hash(spec.model, spec.data, spec.target, v)}/_SUCCESS")
               for v in target_variants(spec))


#: The queue item a task puts once its targets are in storage, before it scores the No-unlearn row.
READY = "target ready"


def _build_target(spec_dict: dict, uri: str, log_rel: str, lines) -> str | None:
    """The Ray task: build (or find cached, or load published) one target, say it is ready, and write its
    No-unlearn row. Returns None, or the failure's cause in one sentence (the traceback goes to ``log_rel``)."""
    from sweeper.cluster.stage1 import target_and_baseline
    from sweeper.store.records import capture_failure
    spec = TrialSpec.from_dict(spec_dict)
    try:
        target_and_baseline(spec, Storage(uri), lambda line: lines.put(line),
                            on_ready=lambda: lines.put((READY, spec.target_hash)))
        return None
    except Exception as e:  # noqa: BLE001 -- one sentence to the launcher, the traceback to a log file
        return capture_failure(e, Storage(uri), log_rel)


class ReadyTargetSearcher(Searcher):
    """Tune's source of a grid's trials: each spec, in the grid's order, once its target is built; the
    trials of a failed target are never handed out. ``suggest`` returns None ("ask again") while the
    next trials' targets are still being built, and FINISHED when every trial was handed out or dropped."""

    def __init__(self, specs: list[TrialSpec], builds: TargetBuilds, base_config: dict):
        super().__init__(metric=None, mode=None)
        self.waiting, self.builds, self.base = list(specs), builds, base_config
        self.dropped, self._failed_seen = 0, 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the trials are the grid's own, not Tune's param_space

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.builds.failed) != self._failed_seen:  # filter only when a target newly failed: a grid of
            self._failed_seen = len(self.builds.failed)   # thousands of trials is asked once per trial
            kept = [s for s in self.waiting if s.target_hash not in self.builds.failed]
            self.dropped += len(self.waiting) - len(kept)
            self.waiting = kept
        for i, spec in enumerate(self.waiting):
            if spec.target_hash in self.builds.ready:
                del self.waiting[i]
                return {"trial": spec.trial_id, **self.base}
        if not self.waiting:
            return Searcher.FINISHED
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: a grid's trials are fixed

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the trials' _SUCCESS markers in storage are the state of a grid run."""

    def restore(self, checkpoint_path: str) -> None:
        pass
