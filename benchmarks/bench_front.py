"""Front search vs grid on six tasks: hypervolume reached with N full trials' worth of steps against a 3N-trial grid.

    .venv/bin/python benchmarks/bench_front.py --seeds 0 1 2 3 4 5 6 7 8 9 --grid-shifts 3
                                 # 6 tasks x search seeds 0-9, N = 8 (~70 min on 2 CPUs per training seed, less
                                 # with the grids reused by --grid-tag); each grid at 3 more placements after its
                                 # searches (how much of a grid's hypervolume is where its lattice falls;
                                 # device-s: the mean of the 4 grid runs)
    .venv/bin/python benchmarks/bench_front.py --train-seeds 0 1 2 ...   # the same per training seed (the
                                 # trials' own seed: another landscape), each search against its seed's grid
    .venv/bin/python benchmarks/bench_front.py --tasks gdiff_gpt2 --seeds 0 1 --no-write   # one task, two seeds
    .venv/bin/python benchmarks/bench_front.py --n 16 --grid-n 8 --grid-tag Z --tag B16   # searches of 16 against
                                 # the same 24-trial grids (reused by --grid-tag): what more budget buys
    .venv/bin/python benchmarks/bench_front.py --quick                 # N = 4, one seed, the tuning task: a smoke run
    .venv/bin/python benchmarks/bench_front.py --storage /tmp/front --tag b   # keep the runs; reuses the cached targets
                                                                       # (a run whose name exists is resumed, not rerun:
                                                                       # a new --tag measures afresh)

The tasks (``TASKS``), each a searched method parameter and a log-uniform learning rate on one of the tiny
twins: ``gdiff_gpt2`` (GDiff's c on tiny GPT-2, built-in authors: the demo's task) is the one the
sampler's defaults were chosen on; ``npo_llama`` (NPO's beta on tiny Llama, authors) and ``gdiff_muse``
(GDiff's c on tiny GPT-2, the MUSE-style news twin: VerbMem down, KnowMem-retain up) were held out until
a round of changes failed on them (issue 22, round 2: NPO became a second development task);
``simnpo_phi`` (SimNPO's beta on tiny Phi, authors) was added then, unseen, as the held-out task, and
``gdiff_falcon`` (GDiff's c on tiny Falcon, authors) for round 3 (its front proved to be one point), and
``wga_mistral`` (WGA's beta on tiny Mistral, authors) in the sixth session, checked only for a front of
more than one point before its run.
``benchmarks/replay_front.py`` replays the sampler offline over the runs these launches leave. For
each task a grid of 3N trials covers the same box (3N/4 parameter values x 4 learning rates), then one
front search per search seed runs with its defaults (``budget: N``: rungs, early stop, the ``gap`` sampler).
Every run is a real launch of the product (``python -m sweeper.launch``) on one local Ray head that the
benchmark starts once (launches join it with ``--address``: no Ray start-up per launch).

Measured per run, from its Parquet: trials, steps run, device-seconds (each trial's loop seconds x workers,
stopped trials with what they ran) and the hypervolume of every evaluated point (forget down, retain up,
reference the worst corner (1, 0)). The section between the markers in RESULTS.md is rewritten.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from sections import markers, write_section  # noqa: E402
BEGIN, END = markers("bench_front.py")
LR_RANGE = [3.0e-4, 3.0e-3]
#: The demo's authors task as search_spaces/demo/base.yaml had it (commit 6d29a7d), written out: a benchmark
#: must not change under a run when a shared grid file is edited (one was, half-way through a run).
AUTHORS = {"seeds": [0],
           "data": [{"name": "authors", "source": "builtin", "n_authors": 20, "qa_per_author": 10,
                     "forget_split": "forget10"}],
           "target": {"optimizer": "adamw", "lr": 3.0e-3, "batch_size": 16, "max_epochs": 300,
                      "exact_match_gate": 0.9, "check_every": 10},
           "unlearn": {"optimizer": "adam", "lr": [1.0e-3], "steps": 30, "batch_size": 8, "autolr": {"every": 10}},
           "eval": {"max_questions": 20, "max_new_tokens": 24, "every": 10}}
#: name: (what, the grid document's fixed part, method, searched parameter, its range)
TASKS = {
    "gdiff_gpt2": ("GDiff's c on tiny GPT-2, built-in authors, 30 steps evaluated every 10 (tuning task)",
                   {**AUTHORS, "models": [{"name": "tiny-gpt2", "workers": 1, "cpus_per_worker": 1}]},
                   "gdiff", "c", [0.05, 0.95]),
    "npo_llama": ("NPO's beta on tiny Llama, built-in authors, 30 steps evaluated every 10 (held out until issue 22's "
                  "round 2, a development task since)",
                  {**AUTHORS, "models": [{"name": "tiny-llama", "workers": 1, "cpus_per_worker": 1}]},
                  "npo", "beta", [0.02, 0.5]),
    "gdiff_muse": ("GDiff's c on tiny GPT-2, MUSE-style news twin (VerbMem forget / KnowMem retain, the target "
                   "also trained on the KnowMem QA), 20 steps evaluated every 10 (held out until issue 22's round 2)",
                   {"seeds": [0], "data": [{"name": "news", "kind": "muse", "source": "builtin", "n_articles": 24,
                                            "knowmem_in_target": True}],
                    "models": [{"name": "tiny-gpt2", "workers": 1, "cpus_per_worker": 1}],
                    "target": {"optimizer": "adamw", "lr": 3.0e-3, "batch_size": 16, "max_epochs": 200,
                               "exact_match_gate": 0.99, "check_every": 10},
                    "unlearn": {"optimizer": "adam", "lr": [1.0e-3], "steps": 20, "batch_size": 8},
                    "eval": {"max_questions": 8, "max_new_tokens": 32, "every": 10}},
                   "gdiff", "c", [0.05, 0.95]),
    "simnpo_phi": ("SimNPO's beta on tiny Phi, built-in authors, 30 steps evaluated every 10 (held out in round 2, "
                   "seen since)",
                   {**AUTHORS, "models": [{"name": "tiny-phi", "workers": 1, "cpus_per_worker": 1}]},
                   "simnpo", "beta", [0.5, 8.0]),
    "gdiff_falcon": ("GDiff's c on tiny Falcon, built-in authors, 30 steps evaluated every 10 (held out: added "
                     "for issue 22's round 3, never looked at before its benchmark run)",
                     {**AUTHORS, "models": [{"name": "tiny-falcon", "workers": 1, "cpus_per_worker": 1}]},
                     "gdiff", "c", [0.05, 0.95]),
    "wga_mistral": ("WGA's beta on tiny Mistral, built-in authors, 30 steps evaluated every 10 (held out: added for "
                    "issue 22's sixth session, checked only for a front of more than one point before its run)",
                    {**AUTHORS, "models": [{"name": "tiny-mistral", "workers": 1, "cpus_per_worker": 1}]},
                    "wga", "beta", [0.1, 4.0]),
}


def grid_doc(task: str, name: str, search: dict | None, n: int, shift: int = 0, train_seed: int = 0) -> dict:
    """The grid file of one run: the task's front search (``search``) or its 3n-trial grid, its trials
    trained with seed ``train_seed`` (the grid file's ``seeds``; 0 is the task's own).

    The grid (``shift`` 0): 3n/4 values evenly inside the parameter's range x 4 log-spaced learning rates
    from end to end. ``shift`` r > 0: the same numbers of values at another placement on the same box
    (each axis's lattice moved by a fraction of its spacing, the fractions a golden-ratio sequence in r, so
    no two placements share a value): how much of a grid's hypervolume is where its lattice happens to fall."""
    _, fixed, method, param, prange = TASKS[task]
    doc = {"name": name, **json.loads(json.dumps(fixed)), "lr_modes": ["static"]}
    if train_seed:
        doc["seeds"] = [train_seed]
    unlearn = doc.setdefault("unlearn", {})
    if search:
        doc.update(search=search, methods=[{"method": method, param: {"range": prange}}])
        unlearn["lr"] = {"log_range": LR_RANGE}
        return doc
    k = max(1, 3 * n // 4)
    if shift:
        a, b = (shift * 0.6180339887) % 1, (shift * 0.3819660113 + 0.5) % 1
        spots = (np.arange(k) + a) / k                 # unit positions of the parameter's values
        lr_spots = (np.arange(4) + b) / 4              # and of the learning rates (log scale)
    else:
        spots, lr_spots = np.arange(1, k + 1) / (k + 1), np.arange(4) / 3
    values = [round(float(prange[0] + u * (prange[1] - prange[0])), 4) for u in spots]
    lo, hi = np.log(LR_RANGE)
    doc["methods"] = [{"method": method, param: values}]
    unlearn["lr"] = [float(f"{np.exp(lo + u * (hi - lo)):.3g}") for u in lr_spots]
    return doc


def launch(doc: dict, storage: str, workdir: str, address: str | None) -> float:
    path = os.path.join(workdir, f"{doc['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", path, "--storage", storage, "--no-report",
           *(["--address", address] if address else [])]
    start = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_front: the launch of {doc['name']} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.time() - start


def measure(run_dir: str) -> dict:
    """Trials, steps, device-seconds and the hypervolume of every evaluated point of one run, from its Parquet."""
    from analysis.front import evaluation_points
    from analysis.load import BASELINE, REFERENCE, load_run
    from analysis.pareto import ROUGE_REF, ROUGE_SENSES, hypervolume_2d
    data = load_run(run_dir)
    trials = data.trials
    points = evaluation_points(data)
    points = points[~points["method"].isin([BASELINE, REFERENCE])]
    hv = hypervolume_2d(points[["rouge_forget", "rouge_retain"]].to_numpy(dtype=float), ROUGE_REF, ROUGE_SENSES)
    return {"trials": int(len(trials)), "steps": int(trials["steps"].sum()),
            "device_s": float((trials["wall_s"] * trials["workers"]).sum()),
            "stopped": int((trials["status"] == "stopped_dominated").sum()), "hv": hv}


def shared_ray(tmp: str):
    """(address, stop) of one Ray head for all launches, started and ended as the tests' is (only its own
    processes are killed, never ``ray stop``)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from ray_cluster import start_head
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return start_head(tmp, num_cpus=os.cpu_count() or 2, env=env, worker_ports=(24000, 24499))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="full trials' worth of steps per search (the grid gets 3n trials)")
    p.add_argument("--grid-n", type=int, default=None, help="size the grid for this n instead (3 x grid-n trials): "
                   "`--n 16 --grid-n 8` runs searches of 16 against the 24-trial grid (what more budget buys)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="search seeds")
    p.add_argument("--search", default="{}", help="extra search settings as JSON, e.g. '{\"fidelity\": false}'")
    p.add_argument("--storage", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--tag", default="", help="added to every run name (same storage, fresh runs)")
    p.add_argument("--grid-tag", default=None, help="added to the grids' run names (default: --tag; an "
                                                      "existing grid run is measured again, not rerun, and run "
                                                      "once more for its device-s)")
    p.add_argument("--quick", action="store_true", help="n = 4, seed 0, the tuning task: a smoke run, not a measurement")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--grid-again", action="store_true", help="run each grid again after its searches and take "
                                                             "the mean of its two device-s (load drifts)")
    p.add_argument("--grid-shifts", type=int, default=0, help="after the searches, run each grid at this many "
                   "other placements on the same box (grid luck); their device-s count in the grid's mean")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="training seeds (the trials' `seeds`): "
                   "each task's grid and searches run once per seed, each search judged against the grid of its "
                   "seed; runs of a seed other than 0 get `_t<seed>` in their names")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.tasks = 4, [0], ["gdiff_gpt2"]
    args.grid_n = args.grid_n or args.n
    storage = args.storage or tempfile.mkdtemp(prefix="bench_front_")
    extra = json.loads(args.search)
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as work:
        address, stop = shared_ray(os.path.join(work, "ray"))
        try:
            for task in args.tasks:
                for t in args.train_seeds:
                    rows += run_task(task, t, args, storage, work, address, extra,
                                     shifts=args.grid_shifts if t == args.train_seeds[0] else 0)
        finally:
            stop()
    result = {"n": args.n, "grid_n": args.grid_n, "rows": rows, "total_s": time.time() - started, "quick": args.quick,
              "load": os.getloadavg(), "extra": extra,
              "command": "benchmarks/bench_front.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    text = render(result)
    print(text)
    if not args.no_write:
        write_section(os.path.join(HERE, "RESULTS.md"), text, BEGIN, END)
    return result


def run_task(task: str, t: int, args, storage: str, work: str, address: str, extra: dict, shifts: int) -> list[dict]:
    """One task at training seed ``t``: its grid, then one search per search seed, then the grid again and at
    ``shifts`` other placements (rows as ``measure`` returns them, with the task, kind, seeds and wall)."""
    suffix = f"_t{t}" if t else ""
    rows = []
    grid_name = f"{task}_grid{3 * args.grid_n}{args.tag if args.grid_tag is None else args.grid_tag}{suffix}"
    reused = os.path.isdir(os.path.join(storage, grid_name))  # measured again, not rerun: its device-s are stale
    wall = launch(grid_doc(task, grid_name, None, args.grid_n, train_seed=t), storage, work, address)
    grid = {"task": task, "kind": "grid", "seed": "-", "train_seed": t, "wall_s": wall,
            **measure(os.path.join(storage, grid_name)), "reused": reused}
    rows.append(grid)
    print(json.dumps(grid), flush=True)
    for seed in args.seeds:
        name = f"{task}_front_n{args.n}_s{seed}{args.tag}{suffix}"
        search = {"kind": "front", "budget": args.n, "seed": seed, **extra}
        wall = launch(grid_doc(task, name, search, args.n, train_seed=t), storage, work, address)
        rows.append({"task": task, "kind": "front", "seed": seed, "train_seed": t, "wall_s": wall,
                     **measure(os.path.join(storage, name))})
        print(json.dumps(rows[-1]), flush=True)
    # The machine's load drifts: every grid run of the task (the same trials and steps, the grid again and
    # its other placements, all after the searches) counts for its device-s, but only runs launched by this
    # benchmark: a run found in storage was timed in an earlier launch, on another day's machine (identical
    # searches took 0-16 % more device-s a session later, issue 22's seventh session). A reused grid with
    # no fresh run beside it is run once more for its timing.
    runs = [("_again", 0)] * args.grid_again + [(f"_shift{r}", r) for r in range(1, shifts + 1)]
    fresh = [] if reused else [grid["device_s"]]
    for tail, shift in runs:
        # (a placement's name keeps the suffix order of earlier runs: <grid>_shift1, <grid>_t1_shift1)
        other, new_run = _grid_run(task, grid_name + tail, args, shift, t, storage, work, address)
        fresh += [other["device_s"]] if new_run else []
        if shift:
            grid.setdefault("hv_shifts", []).append(other["hv"])
        else:
            grid["hv_again"] = other["hv"]
    if not fresh:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
        timed, _ = _grid_run(task, f"{grid_name}_timed{stamp}", args, 0, t, storage, work, address)
        fresh.append(timed["device_s"])
        grid["hv_again"] = timed["hv"]
    if runs or reused:
        grid["stale_device_s"] = grid["device_s"] if reused else None
        grid["device_s_runs"], grid["device_s"] = fresh, statistics.mean(fresh)
        print(json.dumps(grid), flush=True)
    return rows


def _grid_run(task: str, name: str, args, shift: int, t: int, storage: str, work: str, address: str):
    """(``measure``'s row, whether this call ran it rather than found it in storage) of one more grid run."""
    new_run = not os.path.isdir(os.path.join(storage, name))
    launch(grid_doc(task, name, None, args.grid_n, shift, train_seed=t), storage, work, address)
    return measure(os.path.join(storage, name)), new_run


def render(result: dict) -> str:
    rows, n, grid_n = result["rows"], result["n"], result.get("grid_n", result["n"])
    grids = {(r["task"], r.get("train_seed", 0)): r for r in rows if r["kind"] == "grid"}
    tasks = list(dict.fromkeys(task for task, _ in grids))
    seeds = sorted({t for _, t in grids})
    lines = [BEGIN, f"## Front search vs grid on {len(tasks)} tasks (issues 13, 22)", "",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; total {result['total_s']:.0f} s; "
             f"load average at the end {' '.join(f'{x:.1f}' for x in result['load'])} (a shared 2-CPU machine)"
             + (" -- QUICK run: not a measurement" if result["quick"] else ""),
             f"- Command: `.venv/bin/python {result['command'].strip()}` (from the repository root)",
             f"- Searches: `budget: {n}` (full trials' worth of steps), the defaults otherwise"
             + (f" plus {json.dumps(result['extra'])}" if result["extra"] else "")
             + f"; grids: {3 * grid_n} trials on the same box (learning rate log-uniform in {LR_RANGE}).",
             "- Hypervolume: forget (down) x retain (up) against (1, 0), over every evaluated point of the run's "
             "trials. Device-seconds: trial loop seconds x workers (evaluations included; Ray, stage 1 not); "
             "steps: unlearning steps run (a load-independent cost).",
             f"- Training seeds {', '.join(map(str, seeds))}: the trials' own seed (batch order); each search is judged "
             "against the grid trained with its seed.",
             "- Grid device-s: only grid runs launched by this run count; a grid found in storage (`--grid-tag`) "
             "keeps its hypervolume but is run again after the searches for its timing.", "",
             "- Other placements: the same grid's lattice moved on the same box (`grid_doc`'s `shift`), to show how "
             "much of a grid's hypervolume is where its lattice happens to fall; the goal is judged against the "
             "grid itself.", "",
             "| task | what | training seed | grid trials | grid HV | HV at other placements (median of all) | "
             "grid device-s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (task, t), g in grids.items():
        runs = g.get("device_s_runs")
        dev = f"{g['device_s']:.1f}" + (f" (mean of {len(runs)} grid run{'s' if len(runs) > 1 else ''}: {', '.join(f'{x:.1f}' for x in runs)}"
                                        + (f"; HV again {g['hv_again']:.4f}" if "hv_again" in g else "")
                                        + (f"; the reused run's own {g['stale_device_s']:.1f} not counted"
                                           if g.get("stale_device_s") is not None else "") + ")"
                                        if runs else "")
        shifts = g.get("hv_shifts", [])
        placed = (f"{', '.join(f'{x:.4f}' for x in shifts)} ({statistics.median([g['hv'], *shifts]):.4f})"
                  if shifts else "-")
        lines.append(f"| {task} | {TASKS[task][0]} | {t} | {g['trials']} | {g['hv']:.4f} | {placed} | {dev} |")
    if len(seeds) > 1:  # how far the grid itself moves when only its trials' seed changes
        lines += ["", "| task | grid HV at training seed " + " | ".join(map(str, seeds)) + " | the others / the first |",
                  "| --- | " + "--- | " * len(seeds) + "--- |"]
        for task in tasks:
            hv = [grids[(task, t)]["hv"] if (task, t) in grids else float("nan") for t in seeds]
            lines.append(f"| {task} | " + " | ".join(f"{x:.4f}" for x in hv) + " | "
                         + ", ".join(f"{x / hv[0]:.3f}" for x in hv[1:]) + " |")
    lines += ["", "| task | training seed | search seed | trials | stopped | steps / grid's | device-s | HV | "
              "HV / grid HV | device-s / grid's |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["kind"] == "front":
            g = grids[(r["task"], r.get("train_seed", 0))]
            lines.append(f"| {r['task']} | {r.get('train_seed', 0)} | {r['seed']} | {r['trials']} | {r['stopped']} | "
                         f"{r['steps'] / g['steps']:.3f} | {r['device_s']:.1f} | {r['hv']:.4f} | "
                         f"{r['hv'] / g['hv']:.3f} | {r['device_s'] / g['device_s']:.3f} |")
    lines += ["", "| task | training seed | runs | HV / grid HV: min | median | runs >= 0.98 | runs >= 1 | "
              "device-s / grid's: median | max | HV / median placement's HV: min | median |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task in tasks:
        for t in [*seeds, "all"] if len(seeds) > 1 else seeds:
            rs = [r for r in rows if r["kind"] == "front" and r["task"] == task and t in ("all", r.get("train_seed", 0))]
            if not rs:
                continue
            own = [grids[(task, r.get("train_seed", 0))] for r in rs]
            hv = [r["hv"] / g["hv"] for r, g in zip(rs, own)]
            dev = [r["device_s"] / g["device_s"] for r, g in zip(rs, own)]
            g = grids.get((task, t))
            placed = statistics.median([g["hv"], *g["hv_shifts"]]) if g and g.get("hv_shifts") else None
            vs = [r["hv"] / placed for r in rs] if placed else None
            lines.append(f"| {task} | {t} | {len(rs)} | {min(hv):.3f} | {statistics.median(hv):.3f} | "
                         f"{sum(x >= 0.98 for x in hv)} of {len(rs)} | {sum(x >= 1 for x in hv)} of {len(rs)} | "
                         f"{statistics.median(dev):.3f} | {max(dev):.3f} | "
                         + (f"{min(vs):.3f} | {statistics.median(vs):.3f} |" if vs else "- | - |"))
    lines.append(END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
