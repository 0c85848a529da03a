"""Report time at 27, 270, 2,700 and 10,000 trials, on runs fabricated from one real run.

    .venv/bin/python benchmarks/bench_report.py /tmp/demo3/demo                  # all sizes, writes RESULTS.md
    .venv/bin/python benchmarks/bench_report.py runs/demo --trials 2700 --profile --no-write   # where the time goes
    .venv/bin/python benchmarks/bench_report.py runs/demo --trials 27 --workers 1 2 --repeat 2 --no-write

A run of N trials is fabricated from a finished real run (the demo's 27 trial folders: 25 unlearning
trials and 2 No-unlearn targets) by copying its unlearning trials' folders (``summary.parquet``,
``steps.parquet``, ``samples.parquet``, ``_SUCCESS``) under new trial ids: copy k of a trial runs at
learning rate ``lr x LR_FACTORS[k % 12]`` with seed ``k // 12`` (so a large run has many learning rates
and seeds per method, as a real sweep of thousands of trials does), its finish time is shifted, and
its forget- and retain-side metrics (summary and curves) are scaled by a log-normal factor each
(sd 0.05, seeded by the trial id) so the fronts are not degenerate. The No-unlearn targets are
copied as they are. Copy 0 of every trial is the real trial: the 27-trial run is the real run.
Fabricated runs are kept under ``--work`` (default ``/tmp/bench-report``) and reused.

Each size is timed as ``analysis.report.write_report`` end to end (load, figures, tables, answer
pages, index.html), in this process, ``--repeat`` times, twice each: from the trial folders (the run's
``compact/`` deleted first; at 200 trials or more that report writes it, ``analysis.compact``) and then
with the compacted tables, as a report after a launch finds them; the section between the markers in
``benchmarks/RESULTS.md`` is rewritten unless ``--no-write``. ``--profile`` prints cProfile's top
functions (cumulative) of one report instead.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import json
import os
import pstats
import re
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import analysis.report as report  # noqa: E402
from sections import markers, write_section  # noqa: E402

BEGIN, END = markers("bench_report.py")
LR_FACTORS = [1.0, 0.3, 3.0, 0.1, 2.0, 0.5, 1.5, 0.7, 5.0, 0.2, 1.2, 0.05]
FORGET_SIDE = ["final_loss_forget", "rouge_forget", "loss_forget", "forget_objective", "norm_forget"]
RETAIN_SIDE = ["final_loss_retain", "rouge_retain", "loss_retain", "norm_retain"]
BOUNDED = {"rouge_forget", "rouge_retain"}   # ROUGE-L recall stays in [0, 1]
BASELINES = ("no_unlearn", "retrained_reference")


def _scale(table: pa.Table, factors: dict[str, float]) -> pa.Table:
    for name, f in factors.items():
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            col = pc.multiply(table[name], f)
            if name in BOUNDED:   # if_else keeps nulls (steps without an evaluation); min_element_wise would not
                col = pc.if_else(pc.greater(col, 1.0), 1.0, col)
            table = table.set_column(table.column_names.index(name), table.schema.field(name), col)
    return table


def _set(table: pa.Table, name: str, value) -> pa.Table:
    if name not in table.column_names:
        return table
    field = table.schema.field(name)
    return table.set_column(table.column_names.index(name), field, pa.array([value] * table.num_rows, field.type))


def fabricate(source: str, n: int, work: str) -> str:
    """A run of ``n`` trials under ``work`` (reused when already complete), copied from ``source``."""
    dest = os.path.join(work, f"run{n}")
    if os.path.exists(os.path.join(dest, "FABRICATED")):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    src_trials = os.path.join(source, "trials")
    dirs = sorted(d for d in os.listdir(src_trials) if os.path.exists(os.path.join(src_trials, d, "_SUCCESS")))
    tables = {d: {f[:-8]: pq.read_table(os.path.join(src_trials, d, f))
                  for f in os.listdir(os.path.join(src_trials, d)) if f.endswith(".parquet")} for d in dirs}
    fixed = [d for d in dirs if tables[d]["summary"]["method"][0].as_py() in BASELINES]
    trials = [d for d in dirs if d not in fixed]
    if n < len(fixed) + len(trials):
        raise SystemExit(f"bench_report.py: {source} has {len(fixed) + len(trials)} finished trials; ask for at least that many")
    os.makedirs(os.path.join(dest, "trials"))
    for d in fixed:
        shutil.copytree(os.path.join(src_trials, d), os.path.join(dest, "trials", d))
    for i in range(n - len(fixed)):
        src, k = trials[i % len(trials)], i // len(trials)
        if k == 0:  # the real trial itself
            shutil.copytree(os.path.join(src_trials, src), os.path.join(dest, "trials", src))
            continue
        summary = tables[src]["summary"].to_pylist()[0]
        lr = summary["lr"] * LR_FACTORS[k % len(LR_FACTORS)]
        seed = k // len(LR_FACTORS)
        params = json.loads(summary["params_json"])
        params.update(lr=lr, seed=seed)
        params_json = json.dumps(params, sort_keys=True)
        digest = hashlib.sha256(params_json.encode()).hexdigest()
        trial_id = re.sub(r"_lr[^_]+_s\d+_[0-9a-f]+$", f"_lr{lr:g}_s{seed}_{digest[:8]}", src)
        rng = np.random.default_rng(int(digest[:12], 16))
        factors = {**{c: float(rng.lognormal(0, 0.05)) for c in ["forget"]},
                   **{c: float(rng.lognormal(0, 0.05)) for c in ["retain"]}}
        scaled = {**{c: factors["forget"] for c in FORGET_SIDE}, **{c: factors["retain"] for c in RETAIN_SIDE}}
        out = os.path.join(dest, "trials", trial_id)
        os.makedirs(out)
        for name, table in tables[src].items():
            table = _set(table, "trial_id", trial_id)
            if name in ("summary", "steps"):
                table = _scale(table, scaled)
            if name == "summary":
                for col, value in (("lr", lr), ("seed", seed), ("params_json", params_json),
                                   ("config_hash", digest[:16]),
                                   ("finished_at", (summary["finished_at"] or 0) + k * 3600.0)):
                    table = _set(table, col, value)
            if name == "steps" and summary["lr_mode"] == "static":
                table = _set(table, "lr", lr)
            pq.write_table(table, os.path.join(out, f"{name}.parquet"))
        open(os.path.join(out, "_SUCCESS"), "w").close()
    open(os.path.join(dest, "FABRICATED"), "w").write(f"{n} trials from {source}\n")
    return dest


def time_report(run: str, workers: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``write_report`` on ``run``, curves drawn in ``workers`` processes
    (None: the report's default). CPU seconds count this process and its drawing processes (user +
    system): on a machine shared with other work they are what the report itself needed."""
    start_curves = report.start_curves
    if workers is not None:
        report.start_curves = lambda data, out, w=None: start_curves(data, out, workers=workers)
    try:
        with tempfile.TemporaryDirectory() as out:
            cpu0, t = _cpu(), time.perf_counter()
            report.write_report([run], out=out)
            return time.perf_counter() - t, _cpu() - cpu0
    finally:
        report.start_curves = start_curves


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def profile(run: str, top: int = 45) -> None:
    """cProfile of one report with the curves drawn in this process (a profile cannot see other processes)."""
    start_curves = report.start_curves
    report.start_curves = lambda data, out, w=None: start_curves(data, out, workers=1)
    try:
        with tempfile.TemporaryDirectory() as out:
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.runcall(report.write_report, [run], out=out)
            print(f"report: {time.perf_counter() - t:.1f} s under cProfile", flush=True)
    finally:
        report.start_curves = start_curves
    prof.dump_stats(os.path.join(os.path.dirname(run), f"report-{os.path.basename(run)}.prof"))
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def render(source: str, results: list, args) -> str:
    """The RESULTS.md section; ``results``: (trials, [(wall, cpu)] from the folders, [(wall, cpu)] with the
    compacted tables, load average before) per size."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    sizes = " ".join(str(n) for n, *_ in results)

    def cell(times):
        best = min(times)
        return f"**{best[0]:.1f}** ({' / '.join(f'{w:.1f}' for w, _ in times)}) | {best[1]:.1f}"
    rows = [f"| {n:,} | {cell(warm)} | {1000 * min(warm)[1] / n:.1f} | {cell(cold)} | {la:.1f} |"
            for n, cold, warm, la in results]
    goal = [min(w) for n, _, w, _ in results if n == 10000]
    verdict = ("the 10,000-trial run was not timed" if not goal else
               f"goal (the report of 10,000 trials in at most 60 s on 2 CPUs): wall {goal[0][0]:.1f} s on this shared "
               f"machine, {goal[0][1]:.1f} CPU s (report process + its 2 drawing processes: on 2 idle CPUs the wall "
               f"time would be about this or less, plus file waits): "
               + ("met" if goal[0][0] <= 60 else "met only by the CPU-time estimate, not shown by a wall time here"
                  if goal[0][1] <= 60 else "NOT met"))
    return "\n".join([
        BEGIN, "## Report time at 27, 270, 2,700 and 10,000 trials (issue 21)", "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average at the end {load} "
        "(a shared 2-CPU machine: other people's work ran beside it, so wall times are upper bounds; CPU seconds "
        "are the report's own)",
        f"- Command: `.venv/bin/python benchmarks/bench_report.py {source} --trials {sizes} --repeat {args.repeat}` "
        "(from the repository root; the source is a real 27-trial demo run, `./dev demo --storage /tmp/demo3`)",
        "- Runs fabricated from the real demo run (25 unlearning trials + 2 No-unlearn targets): each trial's "
        "folder copied under new ids at 12 learning rates x seeds, metrics scaled by a log-normal factor "
        "(see the script's docstring). Timed: `analysis.report.write_report` end to end (load, every figure "
        "and table, one answer page per trial, index.html), curve figures in 2 processes.",
        "- *With compacted tables*: the run's `compact/` tables exist, as after a launch (the launcher's closing "
        "`load_run` writes them for runs of 200 trials or more; below 200 there are none and both columns read "
        "the folders); *from the trial folders*: `compact/` deleted first, so the report reads every trial's "
        "three files (and, at 200 trials or more, writes `compact/`).",
        "- Before this change (issue 21's measurement, same machine): 10 s at 27 trials, 17 s at 270, 82 s "
        "at 2,700 (about 25 ms per trial); profiled at 2,700 trials (cProfile, `--profile`): curve figures "
        "drawing a line per trial 50%, answer pages 15%, paper tables 13%, the hypervolume trace (quadratic) 11%.",
        f"- {verdict}", "",
        "| trials | wall s, compacted tables (best; every repeat) | CPU s | CPU ms per trial | wall s, from the "
        "trial folders (best; every repeat) | CPU s | load average (1 min) before |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows, END]) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished real run folder, e.g. runs/demo (the source of the fabricated runs)")
    p.add_argument("--trials", type=int, nargs="+", default=[27, 270, 2700, 10000])
    p.add_argument("--work", default="/tmp/bench-report", help="where the fabricated runs are kept")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[None],
                   help="processes drawing the curve figures (default: the report's own choice)")
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions; time nothing")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = p.parse_args(argv)
    results = []
    for n in args.trials:
        t = time.perf_counter()
        run = fabricate(args.run, n, args.work)
        print(f"{n} trials: fabricated in {time.perf_counter() - t:.1f} s ({run})", flush=True)
        if args.profile:
            profile(run)
            continue
        load, cold, warm = os.getloadavg()[0], [], []
        for _ in range(args.repeat):  # interleaved, so a slow moment of the machine hits every setting
            for w in args.workers:
                shutil.rmtree(os.path.join(run, "compact"), ignore_errors=True)
                cold.append(time_report(run, w))   # reads every trial's files (and compacts at >= 200 trials)
                warm.append(time_report(run, w))   # as after a launch: the compacted tables exist
                print(f"{n} trials, workers {w or 'default'}: {cold[-1][0]:.1f} s ({cold[-1][1]:.1f} CPU s) from the "
                      f"trial folders, {warm[-1][0]:.1f} s ({warm[-1][1]:.1f} CPU s) with the compacted tables "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        results.append((n, cold, warm, load))
    if results and not args.profile and not args.no_write:
        write_section(os.path.join(HERE, "RESULTS.md"), render(args.run, results, args), BEGIN, END)


if __name__ == "__main__":
    main()
