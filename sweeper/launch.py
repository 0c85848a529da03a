"""Launch a sweep: validate the grid, build the No-unlearn targets, run every trial under Ray Tune.

Usage::

    python -m sweeper.launch --grid demo                       # local Ray on this machine, storage ./runs
    python -m sweeper.launch --grid smoke --storage /tmp/runs
    python -m sweeper.launch --grid paper --address auto --storage s3://bucket/runs
    python -m sweeper.launch --grid demo --dry-run             # trials, resources, concurrency; no Ray

Run names are the grid's name (never a timestamp), so running the same command again resumes: finished
trials (those with a ``_SUCCESS`` marker) are reported from storage, not re-run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections import Counter

from sweeper.grid.load import GridError, TrialSpec, expand_grid, load_grid, resolve_grid_path
from sweeper.cluster.plan import (RUNNERS, capacity_problems, concurrency, device_time_estimate, inline_in_task,  # noqa: F401
                                  print_plan, print_search_plan, runner_for, runner_problems, trial_shape)
from sweeper.front.studies import FrontSearch, load_search
from sweeper.grid.search_settings import SENSES, search_settings
from sweeper.store.records import adopt_legacy_ids, finished_trials
from sweeper.store.storage import Storage, StorageError

#: A custom resource held by each Tune trial's own process, so that it takes no CPU from its workers
#: (a 1-CPU trial driver plus 1-CPU workers deadlock a 2-CPU machine silently; see RAY-NOTES).
TRIAL_SLOT = "sweeper_trial_slot"


QUIET_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",     # controller polling (default 2 s): teardown waits for it
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_AUTH_MODE": "disabled",
}


def start_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False,
              num_gpus: float | None = None, env_vars: dict | None = None) -> None:
    """Join a cluster (``address``) or start a local Ray with the trial-slot resource; quiet workers, each
    with ``env_vars`` too (``--env``; Ray merges them into every task's and actor's own variables)."""
    import ray
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    env = {"env_vars": {**{k: os.environ[k] for k in QUIET_ENV}, **(env_vars or {})}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, resources={TRIAL_SLOT: 10_000}, runtime_env=env,
                 include_dashboard=False, log_to_driver=verbose)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweeper.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="grid name under search_spaces/ (smoke, demo, paper, paper/table1) or a YAML path")
    p.add_argument("--storage", default="runs", help="local folder or pyarrow filesystem URI (default: ./runs)")
    p.add_argument("--address", default=None, help="Ray address to join ('auto' for a running cluster); default: start a local Ray")
    p.add_argument("--run", default=None, help="run name (default: the grid's name)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials (default: what the cluster fits)")
    p.add_argument("--dry-run", action="store_true", help="print trials, resources and concurrency, then stop")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (the same command without it does too)")
    p.add_argument("--runner", choices=RUNNERS, default="auto",
                   help="auto (default): one-worker trials inline, sharded ones as Ray Train jobs; train: every "
                        "trial is a Ray Train job; inline: one-worker trials run inside their Tune trial process, "
                        "which Tune reuses (no per-trial process start-up)")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs of the local Ray, or of the cluster to plan for with --dry-run (default: detected)")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0,
                   help="memory of one GPU for the plan's per-trial memory estimate and packing (default: 80)")
    p.add_argument("--retry-failed", action="store_true", help="run trials recorded as failed again")
    p.add_argument("--track", action="append", default=[], metavar="TRACKER",
                   help="log every trial to an experiment tracker: mlflow (a local store under the run unless "
                        "MLFLOW_TRACKING_URI is set), tensorboard or wandb; repeat or comma-separate for several")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="an environment variable every Ray worker of the sweep gets, on every node (HF_TOKEN, "
                        "HF_HOME, SWEEPER_CACHE); NAME alone passes this shell's value; repeat for several")
    p.add_argument("--verbose", action="store_true", help="show every Ray worker's log lines (noisy)")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")
    p.add_argument("--report-dir", default=None,
                   help="local folder for the report (default: <storage>/<run>/report for a local storage folder; "
                        "./<run>-report for remote storage, whose report also goes into <storage>/<run>/report/)")
    return p.parse_args(argv)


def worker_env(entries: list[str]) -> dict[str, str]:
    """``--env`` entries as a dict: ``NAME=VALUE``, or ``NAME`` for this process's value.

    >>> worker_env(["HF_HOME=/data/hf", "HOME"])["HF_HOME"]
    '/data/hf'
    """
    out = {}
    for entry in entries:
        name, has_value, value = entry.partition("=")
        if not name.isidentifier():
            raise ValueError(f"--env {entry!r}: expected NAME=VALUE or NAME, with NAME a variable name")
        if not has_value:
            if name not in os.environ:
                raise ValueError(f"--env {name}: {name} is not set in this shell; give NAME=VALUE instead")
            value = os.environ[name]
        out[name] = value
    return out


def trial_process_resources(specs: list[TrialSpec], runner: str, has_slot: bool):
    """(Tune resources of each trial's own process, CPUs it takes beyond its workers' for the arithmetic).

    An inline trial's own process is its one worker: it holds the worker's CPUs (and GPUs), unless the
    trial runs in a Ray task (``inline_in_task``), which holds them. A Ray Train trial's own process only
    drives its workers: it holds a trial-slot resource (or, on a cluster started without it, 1 CPU,
    which the concurrency arithmetic then counts)."""
    from ray.tune import PlacementGroupFactory
    driver = {TRIAL_SLOT: 1} if has_slot else {"CPU": 1}

    def shape(s: TrialSpec) -> dict:
        if runner_for(s, runner) == "inline" and not inline_in_task(s, has_slot):
            gpu = s.model["gpus_per_worker"]
            return {"CPU": s.model["cpus_per_worker"], **({"GPU": gpu} if gpu else {})}
        return driver

    shapes = {s.trial_id: shape(s) for s in specs}
    driver_cpu = 0.0 if has_slot or all(runner_for(s, runner) == "inline" for s in specs) else 1.0

    def resources(config: dict):  # a front search's trials are not known in advance: their spec travels along
        known = shapes.get(config["trial"])
        return PlacementGroupFactory([known or shape(TrialSpec.from_dict(config["spec"]))])
    return resources, driver_cpu


def run_trials(specs: list[TrialSpec], storage: Storage, run: str, conc: int, trial_resources,
               retry_failed: bool = False, runner: str = "auto", verbose: bool = False, callbacks=(),
               search: FrontSearch | None = None, early_stop: dict | None = None,
               objectives=("rouge_forget", "rouge_retain"), builds=None, trial_slots: bool = False):
    """Run the trials under Ray Tune: every spec of a grid, each once ``builds`` (stage 1's tasks) has its
    target ready, or what a front search proposes (``search``; ``specs`` are then its planning specs). ``early_stop`` ({min_steps, margin}) adds the scheduler that
    stops trials dominated on ``objectives``. ``trial_slots``: the cluster has the trial-slot resource
    (``plan.inline_in_task``)."""
    from ray import tune

    from sweeper.front.searcher import DominatedStopper, FrontBook, FrontSearcher, finished_points
    from sweeper.cluster.progress import TrialLines
    from sweeper.cluster.trial import run_trial
    from sweeper.cluster.tune_actors import keep_starting_actors

    inline = any(runner_for(s, runner) == "inline" for s in specs)
    if not verbose:  # TrialLines prints one line per trial; the new output engine would print a table too
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    base = {"storage": storage.uri, "retry_failed": retry_failed, "runner": runner, "trial_slots": trial_slots}
    if search:
        searcher = FrontSearcher(search, storage, run, base)
        book, total = searcher.book, searcher.search.budget
        trainable = run_trial
        space = dict(search_alg=searcher, num_samples=max(1, searcher.remaining),
                     trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)
    else:
        from sweeper.cluster.stage1_tasks import ReadyTargetSearcher
        book = FrontBook([SENSES[o] for o in objectives], list(objectives)) if early_stop else None
        if book:
            finished_points(book, specs, storage, run)
        total, trainable = len(specs), tune.with_parameters(run_trial, specs={s.trial_id: s.to_dict() for s in specs})
        # Each trial as soon as its target is built (stage 1 runs beside stage 2).
        space = dict(search_alg=ReadyTargetSearcher(specs, builds, base), num_samples=len(specs))
    scheduler = DominatedStopper(book, storage, run, early_stop["min_steps"], early_stop["margin"]) \
        if early_stop else None
    keep_starting_actors()  # trials shorter than a process start would otherwise run one at a time
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources),
        # Reusing trial processes saves a process start per trial (inline: the imports too). Inline, Tune
        # restarts a process that dies (its trial resumes from its checkpoint); a Train job restarts its
        # own workers, and its driver records any exception, so a retry only follows a dead process. A
        # process lost with its node can count twice (its training call and a pending call both fail:
        # tests/test_multinode.py saw Tune give up after one death with max_failures 1), hence 2x.
        tune_config=tune.TuneConfig(max_concurrent_trials=conc, reuse_actors=True, scheduler=scheduler, **space),
        run_config=tune.RunConfig(name="tune", storage_path=storage.url(run), verbose=1 if verbose else 0,
                                  callbacks=[*(() if verbose else (TrialLines(total),)), *callbacks],
                                  failure_config=tune.FailureConfig(
                                      max_failures=2 * max(s.max_failures for s in specs) if inline else 0)))
    return tuner.fit()


def _trial_name(trial) -> str:
    """Tune's name for a search's trial: our trial id and Tune's (the default name would spell out the
    whole spec the config carries)."""
    return f"{str(trial.config.get('trial'))[:100]}_{trial.trial_id}"


def main(argv=None) -> int:
    args = parse_args(argv)
    # Quiet from the first import on: transformers reads these when it is imported, in this process too
    # (a published checkpoint's files, the report), not only in Ray's workers.
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    try:
        search = load_search(resolve_grid_path(args.grid), run=args.run)
        specs = search.planning_specs() if search else expand_grid(args.grid, run=args.run)
        settings = search.settings if search else search_settings(load_grid(resolve_grid_path(args.grid)))[0]
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        env_vars = worker_env(args.env)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # an unreachable or read-only store is refused here, in one sentence, before Ray starts
        storage = Storage(args.storage)
        if not args.dry_run and (why := storage.problem()):
            raise StorageError(why)
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = specs[0].run
    if not search:  # a run made before trial ids named the dataset keeps its ids
        specs = adopt_legacy_ids(specs, storage)
    from sweeper.cluster.tracking import tracker_problems
    trackers = [t for arg in args.track for t in arg.split(",") if t]
    if (problems := runner_problems(specs, args.runner) + tracker_problems(trackers, storage.url(run))):
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 2
    if args.dry_run:
        cpus, gpus = float(args.num_cpus or os.cpu_count()), args.num_gpus
        # Only the cluster the user described can refuse a grid: without --num-cpus a dry run on a laptop
        # still plans a GPU grid (a worker on 1.5 GPUs is refused whatever the cluster).
        if (problems := capacity_problems(specs, float(args.num_cpus or "inf"), gpus, 0.0)):
            print("error: " + "\n".join(problems), file=sys.stderr)
            return 2
        conc = args.max_concurrent or concurrency(search.budget_specs() if search else specs, cpus, gpus or 0.0, 0)
        print_search_plan(search, conc, cpus, gpus, args.runner, args.gpu_memory_gb) if search \
            else print_plan(specs, conc, cpus, gpus, args.runner, args.gpu_memory_gb)
        return 0

    import ray
    start = time.time()
    os.environ.update(env_vars)  # the launcher's own work (a checkpoint's files, the report) sees them too
    start_ray(args.address, args.num_cpus, args.verbose, args.num_gpus, env_vars)
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    trial_slots = bool(total.get(TRIAL_SLOT))
    trial_resources, driver_cpu = trial_process_resources(specs, args.runner, trial_slots)
    problems = capacity_problems(specs, cpus, gpus, driver_cpu)
    if problems:
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 2
    conc = min(args.max_concurrent or 10**6, concurrency(search.budget_specs() if search else specs, cpus, gpus,
                                                              driver_cpu))
    print_search_plan(search, conc, cpus, gpus, args.runner, args.gpu_memory_gb) if search \
        else print_plan(specs, conc, cpus, gpus, args.runner, args.gpu_memory_gb)

    total_trials = len(specs)
    if not search and not args.retry_failed:  # a relaunch: finished trials are reported, never re-run, so
        done = finished_trials(storage, run)  # they need neither a target check nor a Tune trial process
        specs = [s for s in specs if s.trial_id not in done]
        if len(specs) < total_trials:
            print(f"{total_trials - len(specs)} of {total_trials} trials finished in an earlier launch: "
                  f"kept as they are", flush=True)
    print(f"stage 1: No-unlearn targets under {storage.show('targets')}", flush=True)
    from sweeper.cluster.stage1_tasks import TargetBuilds
    builds = TargetBuilds(specs, storage, run)
    skipped = 0
    if search:  # a study's proposals need its No-unlearn row (the lr -> 0 end of its front): all targets first
        builds.wait()
        kept = [st for st in search.studies if st.spec({}, st.seeds[0]).target_hash not in builds.failed]
        skipped, search = search.budget - FrontSearch(search.settings, kept).budget, FrontSearch(search.settings, kept)
    if search and search.studies or not search and specs:
        print(f"stage 2: {search.budget if search else len(specs)} trials"
              + (f" at most (front search, sampler {search.settings['sampler']})" if search else
                 ", each as soon as its target is ready") + f", {conc} at a time", flush=True)
        from sweeper.cluster.tracking import tracker_callbacks
        callbacks = tracker_callbacks(trackers, storage.url(run), run, specs={s.trial_id: s.to_dict() for s in specs})
        run_trials(specs, storage, run, conc, trial_resources, retry_failed=args.retry_failed, runner=args.runner,
                   verbose=args.verbose, callbacks=callbacks, search=search, early_stop=settings["early_stop"],
                   objectives=settings["objectives"], builds=builds, trial_slots=trial_slots)
    failed_targets = builds.wait()
    with ray_stopping_in_background():  # loading and reporting the run need no Ray
        if not search:
            skipped = sum(s.target_hash in failed_targets for s in specs)
        if failed_targets:
            print(f"stage 1: {len(failed_targets)} target(s) failed; their {skipped} trial(s) are "
                  f"skipped, the other targets and trials go on", file=sys.stderr, flush=True)

        if not storage.exists(f"{run}/trials"):
            print(f"\nrun {run!r}: nothing finished in {time.time() - start:.0f} s", file=sys.stderr)
            return 1
        from analysis.load import load_run
        data = load_run(storage.url(run))
        counts = Counter(data.trials["status"])
        counts["skipped"] = skipped
        # A trial whose process Tune gave up on (its node lost, the process killed) wrote no summary: named
        # here, so a run never reads as complete without it (a relaunch runs it, from its checkpoint).
        recorded = set(data.trials["trial_id"])
        lost = [] if search else [s.trial_id for s in specs
                                  if s.trial_id not in recorded and s.target_hash not in failed_targets]
        counts["lost"] = len(lost)
        shown = ("ok", "failed", "diverged", *(("stopped_dominated",) if search or settings["early_stop"] else ()),
                 "skipped", *(("lost",) if lost else ()))
        print(f"\nrun {run!r} finished in {time.time() - start:.0f} s: "
              + ", ".join(f"{counts.get(k, 0)} {k}" for k in shown)
              + f" trial(s), {len(data.baselines)} No-unlearn row(s)")
        print_failures(data.summaries, storage, run)
        for trial_id in lost:
            print(f"lost: {trial_id}: no result recorded (Tune gave up on its trial process: a node lost or the "
                  f"process killed); launch the same command again to run it", file=sys.stderr)
        print("outputs: " + storage.show(f"{run}/trials/<trial_id>/{{steps,summary}}.parquet"))
        if not args.no_report:
            from analysis.report import main as report_main
            report_dir = args.report_dir or (storage.path(f"{run}/report") if storage.is_local else f"{run}-report")
            report_main([storage.url(run), "--out", report_dir])
            if trackers:
                from sweeper.cluster.tracking import attach_report
                attach_report(trackers, storage.url(run), run, report_dir)
        # A No-unlearn row that failed (its target was fine, its trials ran) was named by stage 1: exit 1 too.
        return 0 if counts.get("failed", 0) == 0 and not failed_targets and not builds.rows_failed and not lost else 1


@contextlib.contextmanager
def ray_stopping_in_background():
    """Stop Ray (this launcher's connection; a local Ray's processes too) while the block runs, and wait for
    it at the end: Ray's shutdown takes ~2.5 s on 2 CPUs, as long as a third of the report."""
    import ray
    stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    stopping.start()
    try:
        yield
    finally:
        stopping.join()


def print_failures(summaries, storage: Storage, run: str) -> None:
    """One line per failed trial: its id, the one-line cause and where its full log is."""
    for row in summaries[summaries["status"] == "failed"].to_dict("records"):
        log = storage.show(f"{run}/trials/{row['trial_id']}/error.log")
        print(f"failed: {row['trial_id']}: {row.get('error') or 'no cause recorded'} (full log: {log})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
