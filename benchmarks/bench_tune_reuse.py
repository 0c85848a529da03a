"""Trials shorter than a trial process's start, after a trial of another shape: Tune as it is vs the rule in
sweeper/cluster/tune_actors.py (a placed, starting trial process is kept; the cached one serves the next trial).

    .venv/bin/python benchmarks/bench_tune_reuse.py              # both variants, ~1 min on 2 CPUs; writes RESULTS.md
    .venv/bin/python benchmarks/bench_tune_reuse.py --no-write

The sweep: a local Ray with 2 CPUs, ``max_concurrent_trials=2``, ``reuse_actors=True`` (as the launcher).
One long trial of another resource shape (a CPU plus a custom resource, as a Ray Train trial's driver is
shaped differently from a one-worker trial) runs beside SHORT one-CPU trials whose process takes START
seconds to come up (``setup`` sleeps, as imports do). Measured after the long trial ends: the most short
trials running at once, and how long the remaining short trials took.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from sections import markers, write_section  # noqa: E402

BEGIN, END = markers("bench_tune_reuse.py")
START, SHORT, LONG, N_SHORT = 2.0, 0.7, 5.0, 24


def sweep(patched: bool) -> dict:
    """One sweep in this process (run through a subprocess per variant: a fresh Ray and a fresh Tune)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import tempfile

    import ray
    from ray import tune
    if patched:
        from sweeper.cluster.tune_actors import keep_starting_actors
        keep_starting_actors()
    ray.init(num_cpus=2, resources={"other_shape": 10}, include_dashboard=False, log_to_driver=False)

    class Trial(tune.Trainable):
        def setup(self, config):
            time.sleep(START)  # the process's start: paid once per process, not per reused trial
            self.secs = config["secs"]

        def reset_config(self, config):
            self.secs = config["secs"]
            return True

        def save_checkpoint(self, checkpoint_dir):
            return {}

        def load_checkpoint(self, checkpoint):
            pass

        def step(self):
            t0 = time.time()
            time.sleep(self.secs)
            return {"t0": t0, "t1": time.time(), "done": True}

    def shape(config):
        return tune.PlacementGroupFactory([{"CPU": 1, "other_shape": 1} if config["long"] else {"CPU": 1}])

    space = {"long": tune.grid_search([True] + [False] * N_SHORT),
             "secs": tune.sample_from(lambda s: LONG if s.config["long"] else SHORT)}
    results = tune.Tuner(tune.with_resources(Trial, shape), param_space=space,
                         tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
                         run_config=tune.RunConfig(verbose=0, storage_path=tempfile.mkdtemp())).fit()
    rows = [(r.config["long"], r.metrics["t0"], r.metrics["t1"]) for r in results]
    long_end = max(t1 for long, _, t1 in rows if long)
    after = [(t0, t1) for long, t0, t1 in rows if not long and t0 >= long_end]
    at_once = max(sum(a <= t0 < b for a, b in after) for t0, _ in after) if after else 0
    return {"after": len(after), "at_once": at_once,
            "seconds": (max(t1 for _, t1 in after) - long_end) if after else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--variant", choices=["tune", "rule"], help=argparse.SUPPRESS)  # one sweep, in a subprocess
    args = p.parse_args()
    if args.variant:
        r = sweep(args.variant == "rule")
        print(f"RESULT {r['after']} {r['at_once']} {r['seconds']:.2f}")
        return
    rows = []
    for variant, label in (("tune", "Tune as it is"), ("rule", "with keep_starting_actors()")):
        out = subprocess.run([sys.executable, __file__, "--variant", variant], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        after, at_once, secs = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
        rows.append(f"| {label} | {after} | {at_once} | {float(secs):.1f} | {int(after) * SHORT / 2:.1f} |")
        print(rows[-1], flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    text = "\n".join([
        BEGIN, "## Trials shorter than a process start, after a trial of another shape (Tune actor reuse)", "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average at the end {load}",
        "- Command: `.venv/bin/python benchmarks/bench_tune_reuse.py` (from the repository root)",
        f"- Sweep: 2 CPUs, 2 trials at a time, actor reuse on; one {LONG:g} s trial of another resource shape beside "
        f"{N_SHORT} one-CPU trials of {SHORT:g} s whose process takes {START:g} s to start.", "",
        "| variant | short trials after the long one | most at once | their seconds | ideal (2 at once) |",
        "| --- | --- | --- | --- | --- |", *rows, "",
        "With Tune as it is, each new process for the freed slot is killed before it is up (a cached process frees "
        "first and the pending trial takes it), so the rest of the sweep runs one trial at a time. The rule keeps "
        "the placed process; the second slot comes up once it has started.", END, ""])
    if not args.no_write:
        write_section(os.path.join(HERE, "RESULTS.md"), text, BEGIN, END)


if __name__ == "__main__":
    main()
