"""Run every benchmark and rewrite benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py                  # all seven, about 15 minutes on an idle 2-core machine
    .venv/bin/python benchmarks/run_all.py --quick          # a smoke run of every file (~5 minutes), not a measurement
    .venv/bin/python benchmarks/run_all.py --only step,eval
    .venv/bin/python benchmarks/run_all.py --device cuda --model-size phi --only step,autolr,npo,profile   # GPU check

Each ``bench_<name>.py`` (``main(argv)`` on harness.py) runs in a fresh process, so one's allocations and warm caches
do not leak into the next; their results go into RESULTS.md with the date, machine, command and a summary of every
target. A --quick run keeps the last full run's section below its own, for reference.
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
SIZED = {"step", "autolr", "npo", "profile"}   # the benchmarks with --model-size
CPU_ONLY = {"ray": "Ray's fixed cost per trial is process start-up and scheduling, measured with CPU trials"}
sys.path.insert(0, HERE)
MARK = "<!-- run_all.py: the last full run, kept below by a --quick run -->"


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def kept_full_run(path: str) -> str:
    """The last full run's text in the current RESULTS.md (kept by a quick run, or the whole file if full)."""
    old = open(path).read() if os.path.exists(path) else ""
    if MARK in old or "QUICK run" in old.split("## Summary")[0]:
        return old.split(MARK, 1)[1].strip() if MARK in old else ""
    return "\n".join(["# Last full run (kept for reference; measured with the benchmark code of its date, by the "
                      "command in its header)"] + old.strip().splitlines()[1:]) if old.strip() else ""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and models: a smoke run, not a measurement")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model-size", choices=("small", "phi", "phi-mini"), default="small",
                    help=f"passed to {', '.join(sorted(SIZED))}")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in BENCHES]:
        ap.error(f"unknown benchmark(s) {unknown}; known: {BENCHES}")
    import torch
    import transformers
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"run_all.py: --device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here "
                 f"(torch {torch.__version__}); nothing was run and {os.path.relpath(args.out, ROOT)} is unchanged.")
    skipped = {n: CPU_ONLY[n] for n in names if args.device == "cuda" and n in CPU_ONLY}
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable
    command = " ".join([python, os.path.relpath(os.path.abspath(__file__), ROOT), *map(shlex.quote, sys.argv[1:])])
    started, load_before, t0 = datetime.datetime.now().astimezone(), loadavg(), time.perf_counter()
    results, failures = [], []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in [n for n in names if n not in skipped]:
            out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--json", out, "--device", args.device]
            cmd += (["--quick"] if args.quick else []) + (["--model-size", args.model_size] if name in SIZED else [])
            print(f"== bench_{name} (load {loadavg()})", flush=True)
            b0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            print(f"   {time.perf_counter() - b0:.0f} s, exit {proc.returncode}", flush=True)
            if proc.returncode != 0 or not os.path.exists(out):
                failures.append((name, proc.stderr.strip()))
                print(proc.stderr[-3000:], file=sys.stderr)
                continue
            with open(out) as f:
                results.append(json.load(f))
    total = time.perf_counter() - t0
    from harness import render   # after the runs: rendering needs no measurement

    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    except OSError:
        cpu = "?"
    gpu = f"; GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    lines = ["# Benchmark results", "", f"- Date: {started:%Y-%m-%d %H:%M %Z}; total {total:.0f} s",
             f"- Machine: {os.cpu_count()} CPUs ({cpu}){gpu}, Python {sys.version.split()[0]}, torch {torch.__version__}, "
             f"transformers {transformers.__version__}; torch intra-op threads per benchmark: "
             f"{os.environ.get('BENCH_THREADS', '1')} (BENCH_THREADS, default 1 = a trial worker with cpus_per_worker: 1)",
             f"- Load average (1/5/15 min) at start: {load_before}; at end: {loadavg()} (each benchmark's own load counts "
             "too); every comparison is a ratio of variants interleaved in one process, judged on CPU-time medians "
             "(wall time on CUDA) where the benchmark says so",
             f"- Command: `{command}` (from the repository root)"
             + (" -- QUICK run: too few repeats and models to be a measurement" if args.quick else ""),
             "", "## Summary", "", "| benchmark | target | measured (median) | result |", "| --- | --- | --- | --- |"]
    for s in (s for res in results for s in res.get("summary", [])):
        verdict = "n/a" if s["met"] is None else ("met" if s["met"] else f"**not met** -- {s['why']}")
        lines.append(f"| {s['what']} | {s['target']} | {s['value']} | {verdict} |")
    lines += [f"| bench_{n} | | **failed** | {(e.splitlines() or ['?'])[-1]} |" for n, e in failures]
    lines += [f"| bench_{n} | | skipped | CPU only: {why} |" for n, why in skipped.items()]
    lines += [""] + [render(res) for res in results]
    from sections import owned_sections  # bench_front.py's, bench_fetch.py's, ...: each its own, kept as it is
    old = open(args.out).read() if os.path.exists(args.out) else ""
    owned = owned_sections(old)
    kept = kept_full_run(args.out) if args.quick else ""
    for section in owned:
        kept = kept.replace(section, "")
    kept = kept.rstrip()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + (f"\n{MARK}\n\n{kept}\n" if kept else "") + "".join(f"\n{s}\n" for s in owned))
    print(f"wrote {args.out}")
    if failures:
        sys.exit(f"run_all.py: {len(failures)} benchmark(s) failed: {', '.join(n for n, _ in failures)}.")


if __name__ == "__main__":
    main(sys.argv[1:])
