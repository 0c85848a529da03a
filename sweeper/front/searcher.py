"""Ray Tune glue of a front search (launcher side): the searcher that proposes trials and the scheduler
that stops dominated ones. The search logic itself is Ray-free (``sweeper.front.studies``, ``sweeper.front.samplers``).

    searcher = FrontSearcher(search, storage, run, base_config={"storage": uri, "runner": "auto"})
    tune.TuneConfig(search_alg=searcher, scheduler=DominatedStopper(searcher.book, storage, run, 10, 0.05),
                    num_samples=searcher.remaining)

State lives in storage, so a relaunch resumes: every proposal is appended to
``<run>/search/proposals.parquet`` before its trials start, and a finished trial has its ``_SUCCESS``
marker. On start the searcher replays the log into its samplers, re-proposes logged trials that did not
finish (they resume from their checkpoints) and goes on from there: no trial runs twice.

Steps as a fidelity (``search: {fidelity: ...}``, on by default; ``sweeper.front.promotion``): at each rung
step a trial goes on only while its newest point is near the front or among the best of the trials that
reached the rung; the others get the stop marker below (status ``stopped_dominated``, the reason names
the rung). The budget then counts full-length trials' worth of steps, so what a stopped trial did not
run buys further configurations; the searcher hands out a proposal only when the steps it could take
fit (running trials count in full until they finish).

Repeatable (``search: {repeatable: true}``): proposal j sees exactly the first j - W + 1 configurations
(W in flight, 2 for ``true``) and waits until they have finished, with rungs and early stop off, so the
proposals depend on the search seed and the trials' results only, not on which trial finished first.

Early stop: when a trial reports an evaluation after ``min_steps`` and every point it has evaluated is
dominated, by ``margin`` on both objectives, by a point of another configuration on the same model and
data, the scheduler writes ``<run>/trials/<id>/_STOP`` with the reason. The trial reads it at its next
step and ends itself with status ``stopped_dominated``, writing its Parquet like any trial (stopping
it from outside would lose what it measured, and would leave a Ray Train job's workers running).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweeper.grid.spec import TrialSpec
from sweeper.front.promotion import (adds_nothing, front_depth, may_reach_ideal, promote, reference, rung_steps,
                                     steps_used)
from sweeper.front.samplers import make_sampler
from sweeper.store.records import STOP_MARKER, baseline_id
from sweeper.front.studies import FrontSearch, Study
from sweeper.grid.search_settings import CURVE_OBJECTIVES
from sweeper.store.storage import Storage



def config_key(spec: TrialSpec) -> str:
    """What identifies a configuration across its seeds."""
    d = spec.to_dict()
    for k in ("seed", "run"):
        d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def trial_points(storage: Storage, run: str, trial_id: str, objectives) -> tuple[str, list[tuple], int]:
    """(status, [(step, x, y), ...], steps run) of a finished trial: every evaluated step for objectives
    measured during training, else the summary's final point."""
    base = f"{run}/trials/{trial_id}"
    summary = storage.read_table(f"{base}/summary.parquet").to_pylist()[0]
    x, y = objectives
    rows = []
    if set(objectives) <= set(CURVE_OBJECTIVES) and storage.exists(f"{base}/steps.parquet"):
        rows = [(r["step"], r[x], r[y]) for r in storage.read_table(f"{base}/steps.parquet").to_pylist()]
    elif summary.get("status") != "failed":
        rows = [(summary.get("steps") or 0, summary.get(x), summary.get(y))]
    return summary.get("status"), [r for r in rows if _finite(r[1]) and _finite(r[2])], summary.get("steps") or 0


def finished_points(book: "FrontBook", specs: list[TrialSpec], storage: Storage, run: str) -> None:
    """Put the points of the grid trials that finished in an earlier launch into ``book``."""
    for spec in specs:
        book.register(spec)
        if storage.exists(f"{run}/trials/{spec.trial_id}/_SUCCESS"):
            book.points[spec.trial_id] = trial_points(storage, run, spec.trial_id, book.objectives)[1]


class FrontBook:
    """Every evaluated point of every trial in the search, grouped by model and data (the front that the
    report draws), shared by the searcher (which fills it) and the scheduler (which reads it)."""

    def __init__(self, senses, objectives=None, fidelity: dict | None = None):
        self.objectives, self.fidelity = objectives, fidelity  # fidelity: the search's rung settings
        self.senses = tuple(senses)
        self.orient = np.array([1.0 if s == "min" else -1.0 for s in senses])  # both minimised
        self.points: dict[str, list[tuple]] = defaultdict(list)
        self.group: dict[str, tuple] = {}
        self.config: dict[str, str] = {}
        self.ref = reference(objectives)

    def register(self, spec: TrialSpec) -> None:
        self.group[spec.trial_id] = (spec.model["name"], spec.data["name"])
        self.config[spec.trial_id] = config_key(spec)

    def add(self, trial_id: str, step: int, x: float, y: float) -> None:
        if _finite(x) and _finite(y) and all(p[0] != step for p in self.points[trial_id]):
            self.points[trial_id].append((step, float(x), float(y)))

    def others(self, trial_id: str) -> list[tuple]:
        """(trial, (step, x, y)) of every point of another configuration on the same model and data."""
        return [(t, p) for t, pts in self.points.items() for p in pts
                if self.group.get(t) == self.group.get(trial_id) and self.config.get(t) != self.config.get(trial_id)]

    def rung(self, trial_id: str, rung: int, keep: float, margin: float) -> str | None:
        """Why ``trial_id`` stops at ``rung`` (see ``sweeper.front.promotion.promote``), or None to go on.

        As in ASHA, trials are compared at the same fidelity: each trial of the model and data that has
        reached the rung is ranked by the front depth of its point at the rung step against the other
        configurations' points at that step (a trajectory's early points sit near the No-unlearn model, so
        against later steps every one would look behind)."""
        def at(t):
            pts = [p for p in self.points.get(t, []) if p[0] <= rung]
            return max(pts)[1:] if pts else None
        peers = [t for t in self.points if self.group.get(t) == self.group.get(trial_id)
                 and any(p[0] >= rung for p in self.points[t]) and at(t) is not None]
        if trial_id not in peers:
            return None

        def depth(t):
            return front_depth(at(t), [at(u) for u in peers if self.config.get(u) != self.config.get(t)], self.senses,
                               self.ref)
        if may_reach_ideal(at(trial_id), [p[1:] for _, p in self.others(trial_id)], self.ref, self.senses):
            return None  # above the front's end at the ideal: it may still cross there (any step counts)
        go_on, why = promote(depth(trial_id), [depth(t) for t in peers], keep, margin)
        return None if go_on else f"stopped at rung {rung} (step {max(self.points[trial_id])[0]}): {why}"

    def dominated(self, trial_id: str, margin: float) -> str | None:
        """Why every point of ``trial_id`` is dominated by ``margin`` (on both objectives) by a point of
        another configuration on the same model and data, or adds no hypervolume against the reference
        (``sweeper.front.promotion.adds_nothing``), or None when one of its points is neither."""
        own = self.points.get(trial_id)
        if not own:
            return None
        if all(adds_nothing(p[1:], self.ref, self.senses) for p in own):
            step, x, y = own[-1]
            return (f"no evaluated point adds hypervolume: step {step} ({x:.3f}, {y:.3f}) is not better than the "
                    f"reference {self.ref} on both objectives")
        others = self.others(trial_id)
        if not others:
            return None
        z = np.array([p[1:] for _, p in others]) * self.orient
        last = None
        for step, x, y in own:
            mine = np.array([x, y]) * self.orient
            beats = np.flatnonzero(np.all(z <= mine - margin, axis=1))
            if not len(beats):
                return None
            last = (step, x, y, others[beats[0]])
        step, x, y, (t, (s, qx, qy)) = last
        return (f"every evaluated point is dominated by more than {margin:g}: step {step} ({x:.3f}, {y:.3f}) "
                f"by {t} at step {s} ({qx:.3f}, {qy:.3f})")


class FrontSearcher(Searcher):
    """Tune searcher over a front search's studies: round-robin over the studies, one sampler each; a
    proposal is run once per seed (each seed is one trial of the budget)."""

    LOG = "search/proposals.parquet"

    def __init__(self, search: FrontSearch, storage: Storage, run: str, base_config: dict):
        super().__init__(metric=None, mode=None)
        self.search, self.storage, self.run, self.base = search, storage, run, base_config
        s = search.settings
        self.book = FrontBook(search.senses, s["objectives"], s.get("fidelity"))
        self.samplers = {st.id: make_sampler(s["sampler"], len(st.ranges), search.senses, s["seed"], s["initial"],
                                             self.book.ref, _lr_axis(st)) for st in search.studies}
        self.studies = {st.id: st for st in search.studies}
        self.log: list[dict] = []               # every proposal: study, index, unit, values, reason, trials
        self.status: dict[str, str] = {}        # finished trial id -> status
        self.steps_run: dict[str, int] = {}     # finished trial id -> steps it ran (a stopped one: fewer)
        self.queue: list[TrialSpec] = []        # trials to hand to Tune before proposing anything new
        self.running: dict[str, str] = {}       # Tune's trial id -> our trial id
        self._replay()

    @property
    def remaining(self) -> int:
        """Trials still to run at most (Tune's ``num_samples``; the searcher ends the run itself)."""
        return sum(self._cap(st) * len(st.seeds) for st in self.studies.values()) - len(self.status)

    def _cap(self, study: Study) -> int:
        """Configurations a study may propose: its budget, or with rungs as many as fit when each is
        stopped at the first rung (the step budget decides in between)."""
        if not study.ranges or not self.book.fidelity:
            return study.configs
        spec = study.spec({}, study.seeds[0])
        rungs = rung_steps(self.book.fidelity, spec.steps, spec.eval.get("every"))
        return study.configs * spec.steps // rungs[0] if rungs else study.configs

    def _fits(self, study: Study) -> bool:
        """Whether one more configuration (all its seeds, in full) fits the study's budget of steps."""
        if self._count(study.id) >= self._cap(study):
            return False
        if not study.ranges or not self.book.fidelity:
            return True
        trials = [t for r in self.log if r["study"] == study.id for t in r["trials"]]
        full = dict.fromkeys(trials, study.spec({}, study.seeds[0]).steps)
        used = steps_used({t: self.status.get(t) for t in trials}, self.steps_run, full)
        return used + len(study.seeds) <= study.configs * len(study.seeds) + 1e-9

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the studies' own, not Tune's param_space

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the proposal log and the trials' _SUCCESS markers in storage are the state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore here: ``__init__`` replays the proposal log (see the module docstring)."""

    def suggest(self, tune_trial_id: str):
        if not self.queue:
            self._propose()
        if not self.queue:
            return Searcher.FINISHED if self._done() else None
        spec = self.queue.pop(0)
        self.running[tune_trial_id] = spec.trial_id
        return {**self.base, "trial": spec.trial_id, "spec": spec.to_dict()}

    def on_trial_result(self, tune_trial_id: str, result: dict) -> None:
        trial_id = self.running.get(tune_trial_id)
        x, y = self.search.settings["objectives"]
        if trial_id and "step" in result and x in result and y in result:
            self.book.add(trial_id, result["step"], result[x], result[y])

    def on_trial_complete(self, tune_trial_id: str, result=None, error: bool = False) -> None:
        trial_id = self.running.pop(tune_trial_id, None)
        if trial_id and self.storage.exists(f"{self.run}/trials/{trial_id}/_SUCCESS"):
            self._finished(trial_id)
        elif trial_id:  # Tune gave up on the trial's process: no result, but the search must go on
            self._finished(trial_id, lost=True)

    # ------------------------------------------------------------------ proposals

    def _propose(self) -> None:
        """Ask the studies in turn (fewest proposals first) for one new configuration."""
        for study in sorted(self.studies.values(), key=lambda st: self._count(st.id)):
            if not self._fits(study):
                continue
            history = self._history(study.id)
            if history is None:  # repeatable: the configurations this proposal must see are still running
                continue
            finished, pending = history
            got = self.samplers[study.id].propose(finished, pending, self._anchor(study)) if study.ranges \
                else ([], "the study's one configuration")
            if got is None:
                continue
            unit, reason = got
            record = {"study": study.id, "index": self._count(study.id), "unit": unit,
                      "values": study.values(unit), "reason": reason, "proposed_at": time.time()}
            specs = [study.spec(record["values"], seed) for seed in study.seeds]
            record["trials"] = [s.trial_id for s in specs]
            if any(t in self.status or t in self._logged() for t in record["trials"]):
                # Rounding put it on a configuration already tried: count it as proposed, run nothing new.
                record["reason"] += " (same values as an earlier proposal; not run again)"
                record["trials"] = []
            self.log.append(record)
            self._write_log()
            for s in specs if record["trials"] else []:
                self.book.register(s)
                self.queue.append(s)
            if self.queue:
                return

    def _history(self, study_id: str):
        """(finished [(unit, seed-mean [(step, x, y)])], pending [unit]) of a study's proposals.

        ``repeatable: W``: the next proposal j sees exactly the first j - W + 1 configurations, all finished
        (None until they are: wait), and the others as pending, whatever finished first; so the proposals
        depend only on the search seed and the trials' results, never on trial times."""
        window = self.search.settings.get("repeatable")
        if window:
            recs = [r for r in self.log if r["study"] == study_id and r["trials"]]
            seen = recs[:max(0, len(recs) - window + 1)]
            if any(t not in self.status for r in seen for t in r["trials"]):
                return None
            return ([(r["unit"], self._seed_mean(r["trials"])) for r in seen],
                    [r["unit"] for r in recs[len(seen):]])
        finished, pending = [], []
        for rec in self.log:
            if rec["study"] != study_id or not rec["trials"]:
                continue
            done = [t for t in rec["trials"] if t in self.status]
            if not done:
                pending.append(rec["unit"])
            else:
                finished.append((rec["unit"], self._seed_mean(done)))
        return finished, pending

    def _anchor(self, study: Study):
        """(the No-unlearn point of the study's target, the index of its lr coordinate) when the study
        searches the learning rate and stage 1 wrote that row, else None (see sweeper.front.samplers)."""
        lr = [i for i, r in enumerate(study.ranges) if r.name == "lr"]
        if not lr:
            return None
        spec = study.spec(study.values([0.5] * len(study.ranges)), study.seeds[0])
        base = f"{self.run}/trials/{baseline_id(spec)}"
        if not self.storage.exists(f"{base}/_SUCCESS"):
            return None
        row = self.storage.read_table(f"{base}/summary.parquet").to_pylist()[0]
        point = tuple(row.get(o) for o in self.search.settings["objectives"])
        return (point, lr[0]) if all(_finite(v) for v in point) else None

    def _seed_mean(self, trial_ids) -> list[tuple[float, float]]:
        by_step = defaultdict(list)
        for t in trial_ids:
            for step, x, y in self.book.points.get(t, []):
                by_step[step].append((x, y))
        return [(step, *map(float, np.mean(v, axis=0))) for step, v in sorted(by_step.items())]

    def _finished(self, trial_id: str, lost: bool = False) -> None:
        """Record a trial's points (none when ``lost``: a relaunch runs it again) and, once every seed of
        its proposal is in, tell the proposal's sampler."""
        status, pts, steps = ("lost", [], 0) if lost else trial_points(self.storage, self.run, trial_id,
                                                                       self.search.settings["objectives"])
        self.status[trial_id], self.steps_run[trial_id] = status, steps
        self.book.points[trial_id] = [(s, float(x), float(y)) for s, x, y in pts]
        rec = next((r for r in self.log if trial_id in r["trials"]), None)
        if rec and all(t in self.status for t in rec["trials"]):  # every evaluated point, seed-averaged
            self.samplers[rec["study"]].observe(rec["unit"], self._seed_mean(rec["trials"]) or None)

    def _count(self, study_id: str) -> int:
        return sum(r["study"] == study_id for r in self.log)

    def _logged(self) -> set[str]:
        return {t for r in self.log for t in r["trials"]}

    def _done(self) -> bool:
        return not self.running and not any(self._fits(s) for s in self.studies.values())

    # ------------------------------------------------------------------ resume

    def _retry(self, trial_id: str) -> bool:
        """With --retry-failed, a trial recorded as failed is handed to Tune again (run_trial re-runs it)."""
        if not self.base.get("retry_failed"):
            return False
        summary = self.storage.read_table(f"{self.run}/trials/{trial_id}/summary.parquet")
        return summary.column("status")[0].as_py() == "failed"

    def _write_log(self) -> None:
        from sweeper.store.results import PROPOSAL_SCHEMA, to_table
        rows = [{"run": self.run, "study": r["study"], "proposal": r["index"], "sampler": self.search.settings["sampler"],
                 "values_json": json.dumps(r["values"], sort_keys=True), "unit_json": json.dumps(r["unit"]),
                 "trial_ids": r["trials"], "reason": r["reason"], "proposed_at": r["proposed_at"]} for r in self.log]
        self.storage.write_table(f"{self.run}/{self.LOG}", to_table(rows, PROPOSAL_SCHEMA))

    def _replay(self) -> None:
        """Rebuild the samplers from the proposal log and finished trials; queue the unfinished ones."""
        if not self.storage.exists(f"{self.run}/{self.LOG}"):
            return
        for row in self.storage.read_table(f"{self.run}/{self.LOG}").to_pylist():
            study: Study | None = self.studies.get(row["study"])
            if study is None or row["sampler"] != self.search.settings["sampler"]:
                continue  # the grid file changed: that study or sampler is no longer part of the search
            rec = {"study": study.id, "index": row["proposal"], "unit": json.loads(row["unit_json"]),
                   "values": json.loads(row["values_json"]), "reason": row["reason"],
                   "proposed_at": row["proposed_at"], "trials": list(row["trial_ids"] or [])}
            self.log.append(rec)
            if study.ranges:
                self.samplers[study.id].replay(rec["unit"])
            for seed, trial_id in zip(study.seeds, rec["trials"]):
                spec = study.spec(rec["values"], seed)
                self.book.register(spec)
                if self.storage.exists(f"{self.run}/trials/{trial_id}/_SUCCESS") and not self._retry(trial_id):
                    self._finished(trial_id)
                else:
                    self.queue.append(spec)


class DominatedStopper(FIFOScheduler):
    """Stops (by writing the trial's ``_STOP`` marker) a trial whose every evaluated point is dominated by
    ``margin`` after ``min_steps``; see the module docstring. Trials run in order otherwise (FIFO)."""

    def __init__(self, book: FrontBook, storage: Storage, run: str, min_steps: int, margin: float):
        """``min_steps``: no trial is stopped before it has run this many steps (a trajectory can come
        back: retain ROUGE often dips, then recovers); ``margin``: in the objectives' own units."""
        super().__init__()
        self.book, self.storage, self.run = book, storage, run
        self.min_steps, self.margin = min_steps, margin
        self.stopped: set[str] = set()
        self.rungs_seen: set[tuple] = set()  # (trial, rung) already decided

    def _rung(self, trial_id: str, spec: dict | None, result: dict) -> str | None:
        """The promotion decision at the newest rung this result passed (a front search's trials only)."""
        fid, x = self.book.fidelity, (self.book.objectives or (None,))[0]
        if not fid or not spec or x not in result or "step" not in result:
            return None
        due = [r for r in rung_steps(fid, spec["steps"], (spec.get("eval") or {}).get("every"))
               if r <= result["step"] and (trial_id, r) not in self.rungs_seen]
        self.rungs_seen.update((trial_id, r) for r in due)
        return self.book.rung(trial_id, max(due), fid["keep"], fid["margin"]) if due else None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        trial_id = trial.config.get("trial")
        x, y = (self.book.objectives or (None, None))
        if "step" in result and x in result and y in result:  # the searcher may hear of it after us
            self.book.add(trial_id, result["step"], result[x], result[y])
        if trial_id in self.stopped:
            return TrialScheduler.CONTINUE
        reason = self._rung(trial_id, trial.config.get("spec"), result)
        if not reason and result.get("step", 0) >= self.min_steps:
            reason = self.book.dominated(trial_id, self.margin)
        if reason:
            self.storage.write_bytes(f"{self.run}/trials/{trial_id}/{STOP_MARKER}", reason.encode())
            self.stopped.add(trial_id)
        return TrialScheduler.CONTINUE


def _lr_axis(study: Study):
    """(index, Range) of the study's searched learning rate, or None (the gap sampler's dose move)."""
    return next(((i, r) for i, r in enumerate(study.ranges) if r.name == "lr"), None)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and np.isfinite(v)
