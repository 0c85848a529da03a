"""Benchmark 5: the fixed cost Ray adds to a trial, a grid under Ray against the same trials in one
process, and the trial length above which two concurrent trials beat one process with both cores.

Starts a local Ray (2 CPUs here). The trials are the smoke grid's first ``--trials`` (default 4) on its
cached target (reused from ``runs/targets`` when there, else built once, ~40 s):

1. In one process, in sequence, without Ray (``sweeper.trial.unlearn_trial`` with a session that keeps
   nothing): with 1 torch thread (as a trial worker) and with 2 (one process using both cores).
2. Under Ray with the launcher's own ``run_trials`` for each runner (``train``: a Ray Train job per
   trial; ``inline``: in the reused Tune trial process) at concurrency 1 and 2.

Per trial: ``loop`` = the trial's own time (steps + evaluations, ``wall_s`` of its summary); the fixed
cost at concurrency C = stage-2 wall time x C / trials - loop; start-up = Tune's time at the first
progress report - the loop's time at that step; end = the rest inside Tune's ``time_total_s``.

    python benchmarks/bench_ray.py [--trials 4] [--json out.json]
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import statistics
import tempfile
import time

from common import ROOT, fmt_stats, main, stats

NAME_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})$")


def read_run(run_dir: str) -> list[dict]:
    """Every finished Tune trial of ``run_dir`` (ok status): Tune's time_total_s, the loop's wall_s, the
    start-up before step 1 (``first_fixed``), its start/end timestamps (1 s resolution)."""
    import pyarrow.parquet as pq
    out = []
    for d in sorted(glob.glob(os.path.join(run_dir, "tune", "*"))):
        res_file = os.path.join(d, "result.json")
        if not os.path.isfile(res_file):
            continue
        with open(res_file) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        if not lines or "status" not in lines[-1]:   # unfinished: the final summary report is missing
            continue
        trial = lines[-1]["config"]["trial"]
        summ = os.path.join(run_dir, "trials", trial, "summary.parquet")
        if not os.path.isfile(summ):
            continue
        row = pq.read_table(summ).to_pylist()[0]
        if row.get("wall_s") is None or row.get("status") != "ok":
            continue
        first = next((x for x in lines if "step" in x and "time_total_s" in x), None)
        first_fixed = None
        steps_file = os.path.join(run_dir, "trials", trial, "steps.parquet")
        if first is not None and os.path.isfile(steps_file):
            steps = {r["step"]: r["wall_s"] for r in pq.read_table(steps_file, columns=["step", "wall_s"]).to_pylist()}
            if first["step"] in steps:
                first_fixed = first["time_total_s"] - steps[first["step"]]
        m = NAME_DATE.search(os.path.basename(d))
        start = datetime.datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S").timestamp() if m else None
        out.append({"trial": trial, "target_hash": row.get("target_hash"), "model": row["model"], "method": row["method"],
                    "lr_mode": row["lr_mode"], "steps": row["steps"], "wall_s": row["wall_s"],
                    "time_total_s": lines[-1]["time_total_s"], "first_fixed": first_fixed, "start": start,
                    "end": lines[-1]["timestamp"]})
    return out


def concurrency(trials: list[dict]) -> int:
    """The most trials of ``read_run`` that overlapped in time."""
    events = sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials])
    cur = best = 0
    for _, e in events:
        cur += e
        best = max(best, cur)
    return best


class NullSession:
    """In-process runs keep no checkpoint and report nowhere."""

    def restore(self):
        return None

    def report(self, metrics, state):
        pass


def prepare(storage_dir: str, n: int):
    """The smoke grid's first ``n`` trials and their target in ``storage_dir`` (linked from runs/ if built)."""
    from sweeper.grid import expand_grid
    from sweeper.storage import Storage
    from sweeper.targets import ensure_target
    specs = expand_grid("smoke", run="bench")[:n]
    cached = os.path.join(ROOT, "runs", "targets", specs[0].target_hash)
    if os.path.isfile(os.path.join(cached, "_SUCCESS")):
        os.makedirs(os.path.join(storage_dir, "targets"))
        os.symlink(cached, os.path.join(storage_dir, "targets", specs[0].target_hash))
    storage = Storage(storage_dir)
    ensure_target(specs[0].model, specs[0].data, specs[0].target, storage, log=lambda _: None)
    return specs, storage


def in_process(specs, storage, threads: int, run: str | None = None) -> dict:
    """The trials one after another in this process (no Ray): total wall time and each trial's loop time."""
    import dataclasses

    import torch

    from sweeper.trial import unlearn_trial
    loops, t0 = [], time.perf_counter()
    for spec in specs:
        spec = dataclasses.replace(spec, run=run or f"inproc{threads}", model={**spec.model, "cpus_per_worker": threads})
        unlearn_trial(spec, storage, NullSession(), torch.device("cpu"))
        loops.append(storage.read_table(f"{spec.run}/trials/{spec.trial_id}/summary.parquet")
                     .column("wall_s")[0].as_py())
    return {"total": time.perf_counter() - t0, "loops": loops}


def under_ray(specs, storage, runner: str, conc: int) -> dict:
    """The trials as a Tune sweep (the launcher's ``run_trials``): stage-2 wall time and read_run's rows."""
    import dataclasses

    import ray

    from sweeper.launch import TRIAL_SLOT, run_trials, trial_process_resources
    run = f"ray_{runner}_c{conc}"
    specs = [dataclasses.replace(s, run=run) for s in specs]
    resources, _ = trial_process_resources(specs, runner, bool(ray.cluster_resources().get(TRIAL_SLOT)))
    t0 = time.perf_counter()
    run_trials(specs, storage, run, conc, resources, runner=runner)
    total = time.perf_counter() - t0
    return {"total": total, "trials": read_run(os.path.join(storage.uri, run))}


def _empty_worker(config):
    import ray.train
    ray.train.report({"done": 1})


def train_floor(storage_dir: str, n: int) -> list[float]:
    """Seconds of ``TorchTrainer.fit()`` for a worker function that only reports once, one worker with
    1 CPU, called ``n`` times from this driver: what any Ray Train job costs here before doing work."""
    import ray.train
    from ray.train.torch import TorchTrainer
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        TorchTrainer(_empty_worker, scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                     run_config=ray.train.RunConfig(name=f"floor{i}", storage_path=storage_dir)).fit()
        out.append(time.perf_counter() - t0)
    return out


def run(args) -> dict:
    from sweeper.launch import start_ray
    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        specs, storage = prepare(os.path.join(tmp, "runs"), 2 if args.quick else args.trials)
        n = len(specs)
        in_process(specs[:1], storage, 1, run="warmup")  # one-time imports and first calls, paid untimed
        local = {t: in_process(specs, storage, t) for t in (1, 2)}
        import ray
        start_ray(num_cpus=2)
        try:
            sweeps = {(r, c): under_ray(specs, storage, r, c) for r in ("train", "inline") for c in (1, 2)}
            floor = train_floor(os.path.join(tmp, "floor"), 2 if args.quick else 4)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(n, specs[0].steps, local, sweeps, floor)


def report(n: int, steps: int, local: dict, sweeps: dict, floor: list[float]) -> dict:
    loop1 = statistics.mean(local[1]["loops"])
    rows, fixed = [], {}
    for t in (1, 2):
        rows.append([f"one process, {t} thread{'s' * (t > 1)} (no Ray)", "-", f"{local[t]['total']:.1f}",
                     f"{local[t]['total'] / n:.2f}", fmt_stats(stats(local[t]["loops"]), 2),
                     f"{local[t]['total'] / n - statistics.mean(local[t]['loops']):.2f}", "-", "-",
                     f"{local[t]['total'] / local[1]['total']:.2f}x"])
    for (runner, conc), sw in sweeps.items():
        trials = sw["trials"]
        loops = [t["wall_s"] for t in trials]
        per_trial = sw["total"] * conc / n  # slot time one trial occupies
        fixed[(runner, conc)] = per_trial - statistics.mean(loops)
        startup = [t["first_fixed"] for t in trials if t["first_fixed"] is not None]
        rows.append([f"Ray, runner {runner}", conc, f"{sw['total']:.1f}", f"{per_trial:.2f}", fmt_stats(stats(loops), 2),
                     f"**{fixed[(runner, conc)]:.2f}**", fmt_stats(stats(startup), 2) if startup else "-",
                     f"{fixed[(runner, conc)] - statistics.mean(startup):.2f}" if startup else "-",
                     f"{sw['total'] / local[1]['total']:.2f}x"])
    # Cross-over: one process with both cores takes L / s per trial (s = its 2-thread speed-up);
    # two concurrent Ray trials take (F2 + k L) / 2 per trial (F2: fixed cost at concurrency 2, k: the
    # slow-down of a 1-thread loop beside another). Equal at L* = F2 / (2 / s - k).
    s = local[1]["total"] / local[2]["total"]
    cross, notes = [], []
    for runner in ("train", "inline"):
        loops2 = statistics.mean(t["wall_s"] for t in sweeps[(runner, 2)]["trials"])
        k = loops2 / loop1
        f2 = fixed[(runner, 2)]
        denom = 2 / s - k
        star = f2 / denom if denom > 0 else float("inf")
        step_s = loop1 / steps
        cross.append([runner, f"{s:.2f}", f"{k:.2f}", f"{f2:.2f}",
                      f"{star:.1f} s" if star != float("inf") else "never (2/s <= k)",
                      f"{star / step_s:.0f}" if star != float("inf") else "-"])
    target_f = fixed[("inline", 1)], fixed[("train", 1)]
    notes += [
        f"Ray Train's own floor: TorchTrainer.fit() of a worker that only reports once takes "
        f"{fmt_stats(stats(floor), 2)} s here (one worker, called from the driver, no Tune): a Train controller "
        "process and a worker process start, import ray.train (and torch, for the backend), set up a process group "
        "and placement group and are torn down. A trial as a Ray Train job cannot cost less; the rest of its fixed "
        "cost is its worker importing transformers/sweeper and loading the target.",
        f"{n} trials of the smoke grid ({steps} steps, evaluation every 10 on 20+20 questions), tiny-gpt2, one worker "
        "with 1 CPU; the target is cached, so nothing here fine-tunes.",
        "fixed = stage-2 wall x concurrency / trials - mean loop: everything a trial slot spends outside its own "
        "steps and evaluations (scheduling, process start, imports, target loading, checkpoints, Parquet, teardown).",
        "start-up = Tune's time_total_s at the step-10 report - the loop's wall_s at step 10: from the trial "
        "function's start to step 1 (Train controller and worker start, imports, target loading); rest = fixed - "
        "mean start-up: actor scheduling, teardown after the last step, Tune's bookkeeping between trials.",
        "The in-process rows run one untimed warm-up trial first (imports, first calls), as a long-lived process "
        "would have; the inline runner pays that once per reused process (in its first trial's start-up).",
        "vs 1 process = stage-2 wall / the 1-thread in-process total for the same trials.",
        f"A 200-step trial of this model (loop ~{loop1 / steps * 200:.0f} s at {1000 * loop1 / steps:.0f} ms/step incl. "
        f"evaluation) pays {(target_f[0] + loop1 / steps * 200) / (loop1 / steps * 200):.2f}x its in-process time "
        f"inline and {(target_f[1] + loop1 / steps * 200) / (loop1 / steps * 200):.2f}x as a Ray Train job "
        "(target <= 1.2x).",
    ]
    summary = [
        {"what": "Ray fixed cost per trial, runner train (Ray Train job), concurrency 1", "target": "<= 6 s",
         "value": f"{fixed[('train', 1)]:.1f} s (concurrency 2: {fixed[('train', 2)]:.1f} s per slot)",
         "met": fixed[("train", 1)] <= 6,
         "why": f"an empty Ray Train job alone takes {statistics.median(floor):.1f} s here (two fresh processes: "
                "controller and worker); use --runner inline for one-worker trials"},
        {"what": "Ray fixed cost per trial, runner inline (reused Tune trial process), concurrency 1",
         "target": "<= 6 s", "value": f"{fixed[('inline', 1)]:.1f} s (concurrency 2: {fixed[('inline', 2)]:.1f} s per slot)",
         "met": fixed[("inline", 1)] <= 6, "why": ""},
        {"what": "cross-over trial length, 2 concurrent trials vs 1 process with 2 threads", "target": "(shown)",
         "value": "; ".join(f"{c[0]}: {c[4]}" for c in cross), "met": None, "why": ""},
    ]
    summary.append({"what": "Ray Train floor: TorchTrainer.fit() of an empty worker function", "target": "(shown)",
                    "value": f"{statistics.median(floor):.1f} s", "met": None, "why": ""})
    return {"title": "5. Ray's fixed cost per trial, a grid under Ray vs one process, and the cross-over",
            "intro": ["Seconds (wall clock; this benchmark measures the sweep as a user sees it). Cells min / "
                      "**median** / max over the trials."],
            "summary": summary,
            "tables": [{"columns": ["how", "concurrency", "stage-2 wall s", "s per trial slot", "loop s (per trial)",
                                    "fixed s per trial", "start-up s", "rest s", "vs 1 process"], "rows": rows},
                       {"caption": "Cross-over: s = 2-thread speed-up of one process, k = slow-down of a 1-thread loop "
                                   "with a second trial beside it, F2 = fixed cost per slot at concurrency 2; two "
                                   "concurrent trials win for trials longer than L* = F2 / (2/s - k) of 1-thread "
                                   "loop time",
                        "columns": ["runner", "s", "k", "F2 s", "L*", "L* in steps of this trial"], "rows": cross}],
            "notes": notes,
            "raw": {"floor": floor, "local": local, "sweeps": {f"{r}_c{c}": v for (r, c), v in sweeps.items()}}}


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0],
         lambda ap: ap.add_argument("--trials", type=int, default=4, help="smoke-grid trials per variant (default 4)"))
