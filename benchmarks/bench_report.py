"""Report time of a finished run, with the curve figures drawn in 1 process or beside it in N.

    python benchmarks/bench_report.py runs/demo --workers 1 2 --repeat 2

Prints one line per (workers, repeat): the seconds ``analysis.report.write_report`` took. Measured for
README's demo section on a 25-trial demo run (2 idle cores): 9.4 s with 1 worker, 6.4 s with 2.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import analysis.report as report


def time_report(run: str, workers: int) -> float:
    start_curves = report.start_curves
    report.start_curves = lambda data, out, w=None: start_curves(data, out, workers=workers)
    try:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            report.write_report([run], out=out)
            return time.perf_counter() - t
    finally:
        report.start_curves = start_curves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run folder or URI, e.g. runs/demo")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    for _ in range(args.repeat):  # interleaved, so a slow moment of the machine hits every setting
        for w in args.workers:
            print(f"workers {w}: {time_report(args.run, w):.1f} s", flush=True)


if __name__ == "__main__":
    main()
