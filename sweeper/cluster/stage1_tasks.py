"""Stage 1 as Ray tasks that run beside stage 2: each distinct No-unlearn target is built by one task, and a
grid's trials are handed to Ray Tune as soon as *their* target is ready, not when the slowest one is.

On a cluster that means no GPU waits for another model's fine-tune; on a laptop the demo's tiny GPT-2
trials run on the core that its finished target freed while tiny Llama still memorises. Launcher glue::

    builds = TargetBuilds(specs, storage, run)       # submits one task per target, prints their progress
    searcher = ReadyTargetSearcher(specs, builds, base_config)   # Tune's search_alg for a grid
    ...                                              # tune.Tuner(..., search_alg=searcher).fit()
    builds.wait()                                    # every target ended; builds.failed holds the hashes

A target that fails is reported in one sentence with its log's path, and only its trials are dropped (they
count as skipped); every other target and trial goes on.
"""
from __future__ import annotations

import sys
import threading

from ray.tune.search import Searcher

from sweeper.cluster.tune_actors import trial_process_env
from sweeper.grid.spec import TrialSpec
from sweeper.store.storage import Storage


class TargetBuilds:
    """One Ray task per distinct target of ``specs``, submitted at once; a thread prints their progress
    lines as they come and records each target as ready or failed."""

    def __init__(self, specs: list[TrialSpec], storage: Storage, run: str, poll_s: float = 0.25):
        import ray
        from ray.util.queue import Queue

        self.ready: set[str] = set()
        self.failed: set[str] = set()
        self._lines = Queue(actor_options={"num_cpus": 0})
        self._firsts = {s.target_hash: s for s in specs}
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
        return {"ready": set(self.ready), "failed": set(self.failed)}

    def __setstate__(self, state: dict) -> None:
        self.ready, self.failed, self._pending, self._thread = state["ready"], state["failed"], {}, None

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
                key = self._pending.pop(ref)
                cause = ray.get(ref)
                if cause is None:
                    self.ready.add(key)
                    continue
                s = self._firsts[key]
                print(f"error: stage 1 failed for target {key} (model {s.model['name']!r}, data {s.data['name']!r}): "
                      f"{cause} (full log: {self._storage.show(self._log_rel(key))})", file=sys.stderr, flush=True)
                self.failed.add(key)
        self._print_lines(Empty)

    def _print_lines(self, empty) -> None:
        while True:
            try:
                print(self._lines.get_nowait(), flush=True)
            except empty:
                return


def _build_target(spec_dict: dict, uri: str, log_rel: str, lines) -> str | None:
    """The Ray task: build (or find cached, or load published) one target and write its No-unlearn row.
    Returns None, or the failure's cause in one sentence (the traceback goes to ``log_rel``)."""
    from sweeper.cluster.stage1 import target_and_baseline
    from sweeper.store.records import capture_failure
    spec = TrialSpec.from_dict(spec_dict)
    try:
        target_and_baseline(spec, Storage(uri), lambda line: lines.put(line))
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
