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
import math
import os
import sys
import time
from collections import Counter

from sweeper.grid import GridError, TrialSpec, expand_grid
from sweeper.storage import Storage

#: A custom resource held by each Tune trial's own process, so that it takes no CPU from its workers
#: (a 1-CPU trial driver plus 1-CPU workers deadlock a 2-CPU machine silently; see RAY-NOTES).
TRIAL_SLOT = "sweeper_trial_slot"

#: How a trial runs: a Ray Train ``TorchTrainer`` job, or inline in its (reused) Tune trial process.
RUNNERS = ("train", "inline")

QUIET_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",     # controller polling (default 2 s): teardown waits for it
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_AUTH_MODE": "disabled",
}


def start_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join a cluster (``address``) or start a local Ray with the trial-slot resource; quiet workers."""
    import ray
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    env = {"env_vars": {k: os.environ[k] for k in QUIET_ENV}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), resources={TRIAL_SLOT: 10_000}, runtime_env=env,
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
    p.add_argument("--runner", choices=RUNNERS, default="train",
                   help="train: each trial is a Ray Train job (default); inline: one-worker trials run inside "
                        "their Tune trial process, which Tune reuses (no per-trial process start-up)")
    p.add_argument("--retry-failed", action="store_true", help="run trials recorded as failed again")
    p.add_argument("--verbose", action="store_true", help="show every Ray worker's log lines (noisy)")
    p.add_argument("--no-report", action="store_true", help="do not write the analysis report at the end")
    return p.parse_args(argv)


def trial_shape(spec: TrialSpec) -> tuple[float, float]:
    """(CPUs, GPUs) the Ray Train workers of one trial hold."""
    m = spec.model
    return m["workers"] * m["cpus_per_worker"], m["workers"] * m["gpus_per_worker"]


def concurrency(specs: list[TrialSpec], cpus: float, gpus: float, driver_cpu: float) -> int:
    """How many trials fit at once so that none waits forever for workers: the largest trial decides."""
    need_cpu = max(trial_shape(s)[0] for s in specs) + driver_cpu
    need_gpu = max(trial_shape(s)[1] for s in specs)
    fit = math.floor(cpus / need_cpu) if need_cpu else len(specs)
    if need_gpu:
        fit = min(fit, math.floor(gpus / need_gpu))
    return max(0, min(fit, len(specs)))


def capacity_problems(specs: list[TrialSpec], cpus: float, gpus: float, driver_cpu: float) -> list[str]:
    problems = []
    for s in {s.model["name"]: s for s in specs}.values():
        c, g = trial_shape(s)
        if c + driver_cpu > cpus:
            problems.append(f"model {s.model['name']!r}: {s.model['workers']} workers x {s.model['cpus_per_worker']} CPUs "
                            f"(+{driver_cpu} for the trial) exceed the cluster's {cpus:g} CPUs; lower workers or cpus_per_worker")
        if g > gpus:
            problems.append(f"model {s.model['name']!r}: {s.model['workers']} workers x {s.model['gpus_per_worker']} GPUs "
                            f"exceed the cluster's {gpus:g} GPUs")
    return problems


def print_plan(specs: list[TrialSpec], conc: int, cpus: float, gpus: float) -> None:
    print(f"{len(specs)} trials, {len({s.target_hash for s in specs})} No-unlearn target(s)")
    for s in specs:
        c, g = trial_shape(s)
        print(f"  {s.trial_id:<70} {s.model['workers']} worker(s), {c:g} CPU, {g:g} GPU, {s.steps} steps")
    print(f"cluster: {cpus:g} CPUs, {gpus:g} GPUs -> {conc} trial(s) at a time")
    print(device_time_estimate(specs))


def device_time_estimate(specs: list[TrialSpec]) -> str:
    """GPU trials from their FLOPs (sweeper.estimate: known model shapes, an assumed MFU); CPU trials at
    the tiny twins' measured ~0.08 s per step. Steps and AutoLR probes only: no evaluation or start-up."""
    from sweeper.estimate import ASSUMED_MFU, gpu_hours, trial_flops
    cpu = [s for s in specs if not trial_shape(s)[1]]
    gpu = [s for s in specs if trial_shape(s)[1]]
    flops = [trial_flops(s) for s in gpu]
    unknown = sorted({s.model["name"] for s, f in zip(gpu, flops) if f is None})
    parts = [f"{sum(s.steps for s in cpu) * 0.08 / 3600:.2f} CPU-worker-hours"] if cpu else []
    if gpu:
        hours = gpu_hours(sum(f["total"] for f in flops if f))
        parts.append(f"{hours:.2f} GPU-hours at {100 * ASSUMED_MFU:.0f} % of a 989 TFLOP/s bf16 peak"
                     + (f" (not counted, shapes unknown offline: {', '.join(unknown)})" if unknown else ""))
    return "estimated device time (steps and AutoLR probes; no evaluation, start-up or stage 1): " + "; ".join(parts)


def build_targets(specs: list[TrialSpec], storage: Storage, run: str) -> list[str]:
    """Stage 1 as Ray tasks: each distinct target is fine-tuned once (or found cached, or loaded as
    published) and its No-unlearn row written into this run. Progress lines stream to this terminal as
    they happen. Returns the hashes of the targets that failed, each already reported in one sentence
    with the path of its full log; the targets that finished are kept."""
    import ray
    from ray.util.queue import Empty, Queue

    lines = Queue(actor_options={"num_cpus": 0})

    @ray.remote(num_cpus=1)
    def stage1(spec_dict: dict, uri: str, log_rel: str, lines) -> str | None:
        from sweeper.stage1 import target_and_baseline
        from sweeper.trial import capture_failure
        spec = TrialSpec.from_dict(spec_dict)
        try:
            target_and_baseline(spec, Storage(uri), lambda line: lines.put(line))
            return None
        except Exception as e:  # noqa: BLE001 -- one sentence to the launcher, the traceback to a log file
            return capture_failure(e, Storage(uri), log_rel)

    firsts = {s.target_hash: s for s in specs}
    pending = {stage1.options(num_gpus=s.model["gpus_per_worker"] and 1).remote(
        s.to_dict(), storage.uri, f"{run}/logs/stage1_{key}.log", lines): key for key, s in firsts.items()}
    failed = []
    while pending:
        done, _ = ray.wait(list(pending), timeout=0.5)
        _print_lines(lines, Empty)
        for ref in done:
            key = pending.pop(ref)
            if (cause := ray.get(ref)) is not None:
                s = firsts[key]
                print(f"error: stage 1 failed for target {key} (model {s.model['name']!r}, data {s.data['name']!r}): "
                      f"{cause} (full log: {storage.url(f'{run}/logs/stage1_{key}.log')})", file=sys.stderr, flush=True)
                failed.append(key)
    _print_lines(lines, Empty)
    return failed


def _print_lines(queue, empty) -> None:
    while True:
        try:
            print(queue.get_nowait(), flush=True)
        except empty:
            return


def runner_problems(specs: list[TrialSpec], runner: str) -> list[str]:
    """The inline runner holds one worker in the trial's own process: every model must have workers = 1."""
    if runner != "inline":
        return []
    return [f"--runner inline runs one worker per trial, but model {s.model['name']!r} has workers = "
            f"{s.model['workers']}; use --runner train" for s in {s.model["name"]: s for s in specs}.values()
            if s.model["workers"] != 1]


def inline_resources(specs: list[TrialSpec]):
    """Per-trial Tune resources of inline trials: the one worker's CPUs (and GPUs), held by the trial itself."""
    from ray.tune import PlacementGroupFactory
    shapes = {s.trial_id: {"CPU": s.model["cpus_per_worker"],
                           **({"GPU": s.model["gpus_per_worker"]} if s.model["gpus_per_worker"] else {})}
              for s in specs}
    return lambda config: PlacementGroupFactory([shapes[config["trial"]]])


def trial_process_resources(specs: list[TrialSpec], runner: str, has_slot: bool):
    """(Tune resources of each trial's own process, CPUs it takes beyond its workers' for the arithmetic)."""
    if runner == "inline":  # the trial's own process is its worker
        return inline_resources(specs), 0.0
    # On a cluster started without the custom resource, each trial's own process takes 1 CPU instead.
    return ({TRIAL_SLOT: 1}, 0.0) if has_slot else ({"CPU": 1}, 1.0)


def run_trials(specs: list[TrialSpec], storage: Storage, run: str, conc: int, trial_resources,
               retry_failed: bool = False, runner: str = "train"):
    from ray import tune

    from sweeper.trial import run_trial

    inline = runner == "inline"
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, specs={s.trial_id: s.to_dict() for s in specs}),
                            trial_resources),
        param_space={"trial": tune.grid_search([s.trial_id for s in specs]), "storage": storage.uri,
                     "retry_failed": retry_failed, "runner": runner},
        # Reusing trial processes saves a process start per trial (inline: the imports too). Inline, Tune
        # restarts a process that dies (its trial resumes from its checkpoint); a Train job restarts its
        # own workers instead, so Tune does not retry it.
        tune_config=tune.TuneConfig(max_concurrent_trials=conc, reuse_actors=True),
        run_config=tune.RunConfig(name="tune", storage_path=storage.url(run), verbose=1,
                                  failure_config=tune.FailureConfig(
                                      max_failures=max(s.max_failures for s in specs) if inline else 0)))
    return tuner.fit()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        specs = expand_grid(args.grid, run=args.run)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    storage = Storage(args.storage)
    run = specs[0].run
    if (problems := runner_problems(specs, args.runner)):
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 2
    if args.dry_run:
        cpus, gpus = float(args.num_cpus or os.cpu_count()), 0.0
        print_plan(specs, args.max_concurrent or concurrency(specs, cpus, gpus, 0), cpus, gpus)
        return 0
    if (why := storage.check_writable()):
        print(f"error: {why}", file=sys.stderr)
        return 2

    import ray
    start = time.time()
    start_ray(args.address, args.num_cpus, args.verbose)
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    trial_resources, driver_cpu = trial_process_resources(specs, args.runner, bool(total.get(TRIAL_SLOT)))
    problems = capacity_problems(specs, cpus, gpus, driver_cpu)
    if problems:
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 2
    conc = min(args.max_concurrent or len(specs), concurrency(specs, cpus, gpus, driver_cpu))
    print_plan(specs, conc, cpus, gpus)

    print(f"stage 1: No-unlearn targets under {storage.url('targets')}", flush=True)
    failed_targets = build_targets(specs, storage, run)
    runnable = [s for s in specs if s.target_hash not in failed_targets]
    if failed_targets:
        print(f"stage 1: {len(failed_targets)} target(s) failed; their {len(specs) - len(runnable)} trial(s) are "
              f"skipped, the other targets and trials go on", file=sys.stderr, flush=True)
    if runnable:
        print(f"stage 2: {len(runnable)} trials, {conc} at a time", flush=True)
        run_trials(runnable, storage, run, conc, trial_resources, retry_failed=args.retry_failed, runner=args.runner)

    if not storage.exists(f"{run}/trials"):
        print(f"\nrun {run!r}: nothing finished in {time.time() - start:.0f} s", file=sys.stderr)
        return 1
    from analysis.load import load_run
    data = load_run(storage.url(run))
    counts = Counter(data.summaries["status"])
    print(f"\nrun {run!r} finished in {time.time() - start:.0f} s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print_failures(data.summaries, storage, run)
    print(f"outputs: {storage.url(run)}/trials/<trial_id>/{{steps,summary}}.parquet")
    if not args.no_report:
        from analysis.report import main as report_main
        report_main([storage.url(run)])
    return 0 if counts.get("failed", 0) == 0 and not failed_targets else 1


def print_failures(summaries, storage: Storage, run: str) -> None:
    """One line per failed trial: its id, the one-line cause and where its full log is."""
    for row in summaries[summaries["status"] == "failed"].to_dict("records"):
        log = storage.url(f"{run}/trials/{row['trial_id']}/error.log")
        print(f"failed: {row['trial_id']}: {row.get('error') or 'no cause recorded'} (full log: {log})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
