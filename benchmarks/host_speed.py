"""How fast this host is right now, for comparing wall times measured at different hours: one demo trial
(tiny GPT-2, GDiff c = 0.5 with AutoLR) run twice in this process, the second run timed under cProfile as
the README's earlier references were (the same host has measured 1.85 s and 2.5 s within a day).

    .venv/bin/python benchmarks/host_speed.py [--storage /tmp/dt_X]   # a demo storage with its target, else
                                                                     # the target is built first (~15 s)

Run it right before and after a timing (the demo, the suite) and quote it beside the timing.
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.grid.load import expand_grid  # noqa: E402
from sweeper.store.storage import Storage  # noqa: E402
from sweeper.unlearn.targets import ensure_target  # noqa: E402
from sweeper.unlearn.worker import unlearn_trial  # noqa: E402


class Quiet:
    node_id = None

    def restore(self):
        return None

    def report(self, metrics, state):
        pass


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage", default=None, help="a storage holding the demo's tiny GPT-2 target (default: a new temp folder)")
    args = p.parse_args(argv)
    spec = next(s for s in expand_grid("demo") if s.model["name"] == "tiny-gpt2" and "gdiff-c0.5_autolr" in s.trial_id)
    spec = dataclasses.replace(spec, run="host_speed")
    storage = Storage(args.storage or tempfile.mkdtemp(prefix="host_speed_"))
    ensure_target(spec.model, spec.data, spec.target, storage, log=lambda _: None)
    unlearn_trial(spec, storage, Quiet(), torch.device("cpu"))  # the first run pays the lazy imports
    profile, start = cProfile.Profile(), time.perf_counter()
    profile.runcall(unlearn_trial, spec, storage, Quiet(), torch.device("cpu"))
    seconds = time.perf_counter() - start
    print(f"one demo trial (profiled): {seconds:.2f} s")
    return seconds


if __name__ == "__main__":
    main()
