"""Benchmark 5: the fixed cost Ray adds to a trial, a grid under Ray against the same trials in one process,
and the trial length above which two concurrent trials beat one process with both cores.

Starts a local Ray (2 CPUs). The trials are the smoke grid's first ``--trials`` (default 4; --quick 1) on its
target (reused from ``runs/targets`` or this benchmark's cache in the temp folder, else built once, ~40 s):

1. in one process, in sequence, without Ray (``sweeper.unlearn.worker.unlearn_trial`` with a session that keeps nothing),
   with 1 torch thread (as a trial worker) and with 2 (one process using both cores; not with --quick);
2. under Ray with the launcher's own ``run_trials`` for each runner (``train``: a Ray Train job per trial;
   ``inline``: in the reused Tune trial process) at concurrency 1 and 2 (--quick: 1 only, so no cross-over);
3. Ray Train's floor: ``TorchTrainer.fit()`` of a worker that only reports.

Per trial: loop = the trial's own time (``wall_s`` of its summary); fixed cost at concurrency C = stage-2 wall x
C / trials - loop; start-up = Tune's time at the first report - the loop's time at that step. CPU only: the cost
is process start-up and scheduling, whatever device the trial's steps use.

    python benchmarks/bench_ray.py [--quick] [--trials 4] [--json out.json]
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import types

from harness import ROOT, cli, fmt_stats, stats

NAME_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})$")
CACHE = os.path.join(tempfile.gettempdir(), "sweeper-bench-targets")


def read_run(run_dir: str) -> list[dict]:
    """Every finished, status-ok Tune trial of ``run_dir``: Tune's time_total_s, the loop's wall_s, the start-up
    before the first report (``first_fixed``), start/end timestamps (1 s resolution)."""
    import pyarrow.parquet as pq
    out = []
    for d in sorted(glob.glob(os.path.join(run_dir, "tune", "*"))):
        if not os.path.isfile(res_file := os.path.join(d, "result.json")):
            continue
        with open(res_file) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        if not lines or "status" not in lines[-1]:   # unfinished: the final summary report is missing
            continue
        trial = lines[-1]["config"]["trial"]
        if not os.path.isfile(summ := os.path.join(run_dir, "trials", trial, "summary.parquet")):
            continue
        row = pq.read_table(summ).to_pylist()[0]
        if row.get("wall_s") is None or row.get("status") != "ok":
            continue
        first, first_fixed = next((x for x in lines if "step" in x and "time_total_s" in x), None), None
        if first is not None and os.path.isfile(sf := os.path.join(run_dir, "trials", trial, "steps.parquet")):
            steps = {r["step"]: r["wall_s"] for r in pq.read_table(sf, columns=["step", "wall_s"]).to_pylist()}
            first_fixed = first["time_total_s"] - steps[first["step"]] if first["step"] in steps else None
        m = NAME_DATE.search(os.path.basename(d))
        out.append({"trial": trial, "model": row["model"], "method": row["method"], "lr_mode": row["lr_mode"],
                    "steps": row["steps"], "wall_s": row["wall_s"], "time_total_s": lines[-1]["time_total_s"],
                    "first_fixed": first_fixed, "end": lines[-1]["timestamp"],
                    "start": datetime.datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S").timestamp() if m else None})
    return out


def concurrency(trials: list[dict]) -> int:
    """The most trials of ``read_run`` that overlapped in time."""
    cur = best = 0
    for _, e in sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials]):
        cur += e
        best = max(best, cur)
    return best


#: In-process runs keep no checkpoint and report nowhere.
NULL_SESSION = types.SimpleNamespace(restore=lambda: None, report=lambda metrics, state: None)


def prepare(storage_dir: str, n: int):
    """The smoke grid's first ``n`` trials, their target linked into ``storage_dir`` (built once if needed)."""
    from sweeper.grid.load import expand_grid
    from sweeper.store.storage import Storage
    from sweeper.unlearn.targets import ensure_target
    specs = expand_grid("smoke", run="bench")[:n]
    h = specs[0].target_hash
    src = next((d for d in (os.path.join(ROOT, "runs"), CACHE)
                if os.path.isfile(os.path.join(d, "targets", h, "_SUCCESS"))), None)
    if src is None:
        ensure_target(specs[0].model, specs[0].data, specs[0].target, Storage(CACHE), log=lambda _: None)
        src = CACHE
    os.makedirs(os.path.join(storage_dir, "targets"))
    os.symlink(os.path.join(src, "targets", h), os.path.join(storage_dir, "targets", h))
    return specs, Storage(storage_dir)


def in_process(specs, storage, threads: int, run: str | None = None) -> dict:
    """The trials one after another in this process (no Ray): total wall time and each trial's loop time."""
    import torch

    from sweeper.unlearn.worker import unlearn_trial
    loops, t0 = [], time.perf_counter()
    for spec in specs:
        spec = dataclasses.replace(spec, run=run or f"inproc{threads}", model={**spec.model, "cpus_per_worker": threads})
        unlearn_trial(spec, storage, NULL_SESSION, torch.device("cpu"))
        loops.append(storage.read_table(f"{spec.run}/trials/{spec.trial_id}/summary.parquet").column("wall_s")[0].as_py())
    return {"total": time.perf_counter() - t0, "loops": loops}


def under_ray(specs, storage, runner: str, conc: int) -> dict:
    """The trials as a Tune sweep (the launcher's ``run_trials``): stage-2 wall time and read_run's rows."""
    import ray

    from sweeper.launch import TRIAL_SLOT, run_trials, trial_process_resources
    run = f"ray_{runner}_c{conc}"
    specs = [dataclasses.replace(s, run=run) for s in specs]
    resources, _ = trial_process_resources(specs, runner, bool(ray.cluster_resources().get(TRIAL_SLOT)))
    t0 = time.perf_counter()
    run_trials(specs, storage, run, conc, resources, runner=runner)
    return {"total": time.perf_counter() - t0, "trials": read_run(os.path.join(storage.uri, run))}


def _empty_worker(config):
    import ray.train
    ray.train.report({"done": 1})


def train_floor(storage_dir: str, n: int) -> list[float]:
    """Seconds of ``TorchTrainer.fit()`` of a worker that only reports once (one worker, 1 CPU), n times."""
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
    import ray

    from sweeper.launch import start_ray
    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    concs = (1,) if args.quick else (1, 2)
    try:
        specs, storage = prepare(os.path.join(tmp, "runs"), 1 if args.quick else args.trials)
        in_process(specs[:1], storage, 1, run="warmup")  # one-time imports and first calls, paid untimed
        local = {t: in_process(specs, storage, t) for t in concs}
        start_ray(num_cpus=2)
        try:
            sweeps = {(r, c): under_ray(specs, storage, r, c) for r in ("train", "inline") for c in concs}
            floor = train_floor(os.path.join(tmp, "floor"), 1 if args.quick else 4)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(len(specs), specs[0].steps, local, sweeps, floor)


def report(n: int, steps: int, local: dict, sweeps: dict, floor: list[float]) -> dict:
    loop1, rows, fixed, mean = statistics.mean(local[1]["loops"]), [], {}, statistics.mean
    for t in local:
        rows.append([f"one process, {t} thread{'s' * (t > 1)} (no Ray)", "-", f"{local[t]['total']:.1f}",
                     f"{local[t]['total'] / n:.2f}", fmt_stats(stats(local[t]["loops"]), 2),
                     f"{local[t]['total'] / n - mean(local[t]['loops']):.2f}", "-", "-",
                     f"{local[t]['total'] / local[1]['total']:.2f}x"])
    for (runner, conc), sw in sweeps.items():
        loops, per_trial = [t["wall_s"] for t in sw["trials"]], sw["total"] * conc / n   # slot time of one trial
        fixed[(runner, conc)] = f = per_trial - mean(loops)
        startup = [t["first_fixed"] for t in sw["trials"] if t["first_fixed"] is not None]
        rows.append([f"Ray, runner {runner}", conc, f"{sw['total']:.1f}", f"{per_trial:.2f}", fmt_stats(stats(loops), 2),
                     f"**{f:.2f}**", fmt_stats(stats(startup), 2) if startup else "-",
                     f"{f - mean(startup):.2f}" if startup else "-", f"{sw['total'] / local[1]['total']:.2f}x"])
    # Cross-over: one process with both cores takes L / s per trial (s: its 2-thread speed-up); two concurrent
    # Ray trials take (F2 + k L) / 2 (F2: fixed cost at concurrency 2, k: slow-down of a 1-thread loop beside
    # another). Equal at L* = F2 / (2 / s - k).
    s, cross = local[1]["total"] / local[2]["total"] if 2 in local else None, []
    for runner in ("train", "inline") if s else ():
        k, f2 = mean(t["wall_s"] for t in sweeps[(runner, 2)]["trials"]) / loop1, fixed[(runner, 2)]
        star = f2 / (2 / s - k) if 2 / s - k > 0 else None
        cross.append([runner, f"{s:.2f}", f"{k:.2f}", f"{f2:.2f}", f"{star:.1f} s" if star else "never (2/s <= k)",
                      f"{star / (loop1 / steps):.0f}" if star else "-"])
    c2 = {r: f" (concurrency 2: {fixed[(r, 2)]:.1f} s per slot)" if (r, 2) in fixed else "" for r in ("train", "inline")}
    step_s = loop1 / steps
    notes = [
        f"Ray Train's own floor: TorchTrainer.fit() of a worker that only reports once takes {fmt_stats(stats(floor), 2)} "
        "s here (one worker, from the driver, no Tune): a Train controller and a worker process start, import ray.train "
        "and torch, set up process and placement groups and are torn down; a Ray Train trial cannot cost less.",
        f"{n} trial(s) of the smoke grid ({steps} steps, evaluation every 10 on 20+20 questions), tiny-gpt2, one worker "
        "with 1 CPU, cached target. fixed = stage-2 wall x concurrency / trials - mean loop (scheduling, process start, "
        "imports, target loading, checkpoints, Parquet, teardown); start-up = Tune's time_total_s at the step-10 "
        "report - the loop's wall_s at step 10; rest = fixed - mean start-up; vs 1 process = stage-2 wall / the "
        "1-thread in-process total. In-process rows run after one untimed warm-up trial (as a long-lived process).",
        f"A 200-step trial of this model (loop ~{step_s * 200:.0f} s at {1000 * step_s:.0f} ms/step incl. evaluation) "
        f"pays {(fixed[('inline', 1)] + step_s * 200) / (step_s * 200):.2f}x its in-process time inline and "
        f"{(fixed[('train', 1)] + step_s * 200) / (step_s * 200):.2f}x as a Ray Train job (target <= 1.2x)."]
    summary = [
        {"what": "Ray fixed cost per trial, runner train (Ray Train job), concurrency 1", "target": "<= 6 s",
         "value": f"{fixed[('train', 1)]:.1f} s{c2['train']}", "met": fixed[("train", 1)] <= 6,
         "why": f"an empty Ray Train job alone takes {statistics.median(floor):.1f} s here (two fresh processes: "
                "controller and worker); use --runner inline for one-worker trials"},
        {"what": "Ray fixed cost per trial, runner inline (reused Tune trial process), concurrency 1", "target": "<= 6 s",
         "value": f"{fixed[('inline', 1)]:.1f} s{c2['inline']}", "met": fixed[("inline", 1)] <= 6,
         "why": f"with {n} trial(s) the reused process's first-trial start-up (imports, target loading) is not amortised"},
        {"what": "cross-over trial length, 2 concurrent trials vs 1 process with 2 threads", "target": "(shown)",
         "value": "; ".join(f"{c[0]}: {c[4]}" for c in cross) or "not measured (--quick)", "met": None, "why": ""},
        {"what": "Ray Train floor: TorchTrainer.fit() of an empty worker function", "target": "(shown)",
         "value": f"{statistics.median(floor):.1f} s", "met": None, "why": ""}]
    return {"title": "5. Ray's fixed cost per trial, a grid under Ray vs one process, and the cross-over",
            "intro": ["Seconds (wall clock; this benchmark measures the sweep as a user sees it). Cells min / "
                      "**median** / max over the trials."], "summary": summary, "notes": notes,
            "tables": [{"columns": ["how", "concurrency", "stage-2 wall s", "s per trial slot", "loop s (per trial)",
                                    "fixed s per trial", "start-up s", "rest s", "vs 1 process"], "rows": rows},
                       {"caption": "Cross-over: s = 2-thread speed-up of one process, k = slow-down of a 1-thread loop "
                                   "with a second trial beside it, F2 = fixed cost per slot at concurrency 2; two "
                                   "concurrent trials win for trials longer than L* = F2 / (2/s - k) of 1-thread loop time",
                        "columns": ["runner", "s", "k", "F2 s", "L*", "L* in steps of this trial"], "rows": cross}],
            "raw": {"floor": floor, "local": local, "sweeps": {f"{r}_c{c}": v for (r, c), v in sweeps.items()}}}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__, cpu_only="Ray's fixed cost per trial is process start-up and scheduling, measured "
               "with CPU trials", add_args=lambda ap: ap.add_argument("--trials", type=int, default=4,
                                                                     help="smoke-grid trials per variant (default 4)"))


if __name__ == "__main__":
    main(sys.argv[1:])
