"""Run every benchmark and rewrite benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py            # all seven, about 15 minutes on an idle 2-core machine
    .venv/bin/python benchmarks/run_all.py --quick    # fewer repeats: a smoke run, not a measurement
    .venv/bin/python benchmarks/run_all.py --only step,eval

Each benchmark runs in its own fresh process (``benchmarks/bench_<name>.py --json <tmp>``), so one's
allocations and warm caches do not leak into the next; the JSON results are rendered into RESULTS.md
with the date, the machine, the exact command and a summary of every target.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCHES = ["step", "autolr", "npo", "eval", "ray", "scaling", "profile"]


def loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict:
    code = ("import json, os, torch, transformers; torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '1')));"
            "print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__,"
            "'threads': torch.get_num_threads(), 'default_threads': torch.get_num_interop_threads()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    info = json.loads(out.strip().splitlines()[-1])
    info.update(nproc=os.cpu_count(), python=sys.version.split()[0])
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        info["cpu"] = "?"
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {BENCHES}")
    sys.path.insert(0, HERE)
    from common import render  # noqa: E402  (no torch import needed for rendering, but common imports it)

    command = " ".join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable,
                        os.path.relpath(os.path.abspath(__file__), ROOT), *map(shlex.quote, sys.argv[1:])])
    started = datetime.datetime.now().astimezone()
    load_before = loadavg()
    info = machine_info()
    results, failures = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--json", out] + (["--quick"] if args.quick else [])
            print(f"== bench_{name} (load {loadavg()})", flush=True)
            b0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            print(f"   {time.perf_counter() - b0:.0f} s, exit {proc.returncode}", flush=True)
            if proc.returncode != 0 or not os.path.exists(out):
                failures.append((name, proc.stderr[-3000:]))
                print(proc.stderr[-3000:], file=sys.stderr)
                continue
            with open(out) as f:
                results.append(json.load(f))
    total = time.perf_counter() - t0

    lines = ["# Benchmark results", "",
             f"- Date: {started:%Y-%m-%d %H:%M %Z}; total {total:.0f} s",
             f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, torch {info['torch']}, "
             f"transformers {info['transformers']}; torch intra-op threads per benchmark: {info['threads']} "
             "(BENCH_THREADS, default 1 = a trial worker with cpus_per_worker: 1)",
             f"- Load average (1/5/15 min) at start: {load_before}; at end: {loadavg()} (each benchmark's own load "
             "counts too); every comparison is a ratio of variants interleaved in one process, and targets are "
             "judged on CPU-time medians where the benchmark says so",
             f"- Command: `{command}` (from the repository root)" + (" -- QUICK run: too few repeats to be a measurement"
                                                                  if args.quick else ""),
             "", "## Summary", "", "| benchmark | target | measured (median) | result |", "| --- | --- | --- | --- |"]
    for res in results:
        for s in res.get("summary", []):
            verdict = "n/a" if s["met"] is None else ("met" if s["met"] else f"**not met** -- {s['why']}")
            lines.append(f"| {s['what']} | {s['target']} | {s['value']} | {verdict} |")
    for name, err in failures:
        lines.append(f"| bench_{name} | | **failed** | {err.strip().splitlines()[-1] if err.strip() else '?'} |")
    lines.append("")
    for res in results:
        lines.append(render(res))
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
