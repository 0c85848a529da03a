"""Front search vs grid on the demo task: hypervolume reached with N proposed trials against a 3N-trial grid.

    .venv/bin/python benchmarks/bench_front.py                      # N = 8, search seeds 0 1 2, all three samplers (~10 min)
    .venv/bin/python benchmarks/bench_front.py --quick              # N = 4, one seed, gap only (a smoke run)
    .venv/bin/python benchmarks/bench_front.py --storage /tmp/front # keep the runs (reuses the cached target)

The task: GDiff on tiny GPT-2 and the built-in authors (the demo's target, 30 steps, evaluated every 10),
searching c in [0.05, 0.95] and a log-uniform learning rate in [3e-4, 3e-3]. The grid covers the same box
with 3N trials (6 c values x 4 learning rates for N = 8). Each run is a real launch of the product
(``python -m sweeper.launch``) on a local Ray; a front search runs with its defaults (early stop on).

Measured per run, from its Parquet: trials, device-seconds (each trial's loop seconds x workers, early-stopped
trials with what they ran) and the hypervolume of every evaluated point (forget ROUGE down, retain ROUGE up,
reference the worst corner (1, 0)), plus the hypervolume of the final points alone. The section between the
markers in RESULTS.md is rewritten; ``run_all.py`` keeps it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from sections import markers, write_section  # noqa: E402
BEGIN, END = markers("bench_front.py")
C_RANGE, LR_RANGE = [0.05, 0.95], [3.0e-4, 3.0e-3]


def grid_doc(name: str, search: dict | None, n: int) -> dict:
    doc = {"name": name, "include": [os.path.join(ROOT, "search_spaces", "demo", "base.yaml")],
           "models": [{"name": "tiny-gpt2", "workers": 1, "cpus_per_worker": 1}], "lr_modes": ["static"]}
    if search:
        doc.update(search=search, methods=[{"method": "gdiff", "c": {"range": C_RANGE}}],
                   unlearn={"lr": {"log_range": LR_RANGE}})
    else:  # 3n trials on the same box: 3n/4 c values (evenly inside the range) x 4 log-spaced learning rates
        import numpy as np
        k = max(1, 3 * n // 4)
        cs = [round(float(c), 4) for c in np.linspace(*C_RANGE, k + 2)[1:-1]]
        lrs = [float(f"{lr:.3g}") for lr in np.geomspace(*LR_RANGE, 4)]
        doc.update(methods=[{"method": "gdiff", "c": cs}], unlearn={"lr": lrs})
    return doc


def launch(doc: dict, storage: str, workdir: str) -> float:
    path = os.path.join(workdir, f"{doc['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "sweeper.launch", "--grid", path, "--storage", storage, "--no-report"],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_front: the launch of {doc['name']} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.time() - start


def measure(run_dir: str) -> dict:
    """Trials, device-seconds and hypervolumes of one run, from its Parquet."""
    from analysis.front import evaluation_points
    from analysis.load import load_run
    from analysis.pareto import ROUGE_REF, ROUGE_SENSES, hypervolume_2d
    data = load_run(run_dir)
    trials = data.trials
    points = evaluation_points(data)
    points = points[points["method"] == "gdiff"]
    every = hypervolume_2d(points[["rouge_forget", "rouge_retain"]].to_numpy(), ROUGE_REF, ROUGE_SENSES)
    final = hypervolume_2d(trials[["rouge_forget", "rouge_retain"]].to_numpy(dtype=float), ROUGE_REF, ROUGE_SENSES)
    return {"trials": int(len(trials)), "device_s": float((trials["wall_s"] * trials["workers"]).sum()),
            "stopped": int((trials["status"] == "stopped_dominated").sum()), "hv_every": every, "hv_final": final}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="trials of a search (the grid gets 3n)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    p.add_argument("--samplers", nargs="+", default=["gap", "optuna", "gp"])
    p.add_argument("--storage", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="n = 4, seed 0, gap only: a smoke run, not a measurement")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.samplers = 4, [0], ["gap"]
    storage = args.storage or tempfile.mkdtemp(prefix="bench_front_")
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as work:
        wall = launch(grid_doc(f"grid{3 * args.n}", None, args.n), storage, work)
        rows.append({"kind": "grid", "sampler": "-", "seed": "-", "wall_s": wall,
                     **measure(os.path.join(storage, f"grid{3 * args.n}"))})
        print(json.dumps(rows[-1]), flush=True)
        for sampler in args.samplers:
            for seed in args.seeds:
                name = f"front_{sampler}_n{args.n}_s{seed}"
                search = {"kind": "front", "budget": args.n, "sampler": sampler, "seed": seed}
                wall = launch(grid_doc(name, search, args.n), storage, work)
                rows.append({"kind": "front", "sampler": sampler, "seed": seed, "wall_s": wall,
                             **measure(os.path.join(storage, name))})
                print(json.dumps(rows[-1]), flush=True)
    result = {"n": args.n, "rows": rows, "total_s": time.time() - started, "quick": args.quick,
              "command": "benchmarks/bench_front.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    text = render(result)
    print(text)
    if not args.no_write:
        write_section(os.path.join(HERE, "RESULTS.md"), text, BEGIN, END)
    return result


def render(result: dict) -> str:
    rows, n = result["rows"], result["n"]
    grid = rows[0]
    lines = [BEGIN, "## Front search vs grid (issue 13)", "",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; total {result['total_s']:.0f} s"
             + (" -- QUICK run: not a measurement" if result["quick"] else ""),
             f"- Command: `.venv/bin/python {result['command'].strip()}` (from the repository root)",
             f"- Task: GDiff on tiny GPT-2, built-in authors (the demo's target), 30 steps evaluated every 10; c in "
             f"{C_RANGE}, lr log-uniform in {LR_RANGE}; grid: {grid['trials']} trials on the same box; searches: "
             f"{n} trials each, early stop on (default: after 15 steps, margin 0.05).",
             "- Hypervolume: forget ROUGE (down) x retain ROUGE (up) against (1, 0), over every evaluated point "
             "(steps 10, 20, 30) of the run's trials; 'final only' uses each trial's last point.",
             "- Device-seconds: trial loop seconds x workers (evaluations included; Ray start and stage 1 not).", "",
             "| run | sampler | search seed | trials | stopped early | device-s | hypervolume | final only | "
             "HV / grid HV | device-s / grid's |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['sampler']} | {r['seed']} | {r['trials']} | {r['stopped']} | "
                     f"{r['device_s']:.1f} | {r['hv_every']:.4f} | {r['hv_final']:.4f} | "
                     f"{r['hv_every'] / grid['hv_every']:.3f} | {r['device_s'] / grid['device_s']:.3f} |")
    lines += ["", "| sampler | runs | mean HV / grid HV | min | runs reaching the grid's HV | mean device-s / grid's |",
              "| --- | --- | --- | --- | --- | --- |"]
    for sampler in dict.fromkeys(r["sampler"] for r in rows[1:]):
        rs = [r for r in rows[1:] if r["sampler"] == sampler]
        ratios = [r["hv_every"] / grid["hv_every"] for r in rs]
        lines.append(f"| {sampler} | {len(rs)} | {sum(ratios) / len(ratios):.3f} | {min(ratios):.3f} | "
                     f"{sum(x >= 1 for x in ratios)} of {len(rs)} | "
                     f"{sum(r['device_s'] for r in rs) / len(rs) / grid['device_s']:.3f} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
