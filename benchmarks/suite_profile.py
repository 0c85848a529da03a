"""Where the test suite's time goes, per file, and how much of the two cores each file leaves idle.

    vmstat -n 1 > /tmp/vm.log &                                  # one sample a second beside the suite
    PYTHONPATH=benchmarks SUITE_CLOCK=/tmp/clock.log .venv/bin/python -m pytest -q -p no:cacheprovider -p suite_profile
    kill %1; .venv/bin/python benchmarks/suite_profile.py /tmp/clock.log /tmp/vm.log

Loaded with ``-p suite_profile`` it is a pytest plugin that writes each test's start and end time to
``$SUITE_CLOCK``; run as a script it prints seconds and mean idle cores per test file (the README's
Tests table). The vmstat log's last sample is taken as written when the file was last modified.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

_clock = None


def pytest_runtest_logstart(nodeid, location):
    _write("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _write("end", nodeid)


def _write(kind: str, nodeid: str) -> None:
    global _clock
    if _clock is None:
        _clock = open(os.environ.get("SUITE_CLOCK", "suite_clock.log"), "w")
    _clock.write(f"{time.time():.2f} {kind} {nodeid}\n")
    _clock.flush()


def per_file(clock: str, vmstat: str, cores: int = os.cpu_count() or 2) -> list[tuple[str, float, float]]:
    """(test file, seconds, mean idle cores), longest first."""
    idle = [int(f[14]) / 100 for f in (line.split() for line in open(vmstat)) if f and f[0].isdigit()]
    first = os.path.getmtime(vmstat) - len(idle)
    seconds, idle_s, started = defaultdict(float), defaultdict(float), {}
    for line in open(clock):
        t, kind, nodeid = line.rstrip("\n").split(" ", 2)
        if kind == "start":
            started[nodeid] = float(t)
            continue
        start, end, name = started.pop(nodeid), float(t), nodeid.split("::")[0]
        window = idle[max(int(start - first), 0):max(int(end - first), 0) + 1]
        seconds[name] += end - start
        idle_s[name] += (end - start) * sum(window) / len(window) if window else 0.0
    return sorted(((f, s, cores * idle_s[f] / s if s else 0.0) for f, s in seconds.items()), key=lambda r: -r[1])


if __name__ == "__main__":
    rows = per_file(sys.argv[1], sys.argv[2])
    print(f"{sum(s for _, s, _ in rows):.0f} s in tests")
    for name, s, idle_cores in rows:
        print(f"{s:7.1f} s  {idle_cores:4.2f} idle cores  {name}")
