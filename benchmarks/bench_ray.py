"""Benchmark 5: Ray's fixed cost per trial, read from an existing run (starts no Ray cluster).

For every finished Tune trial of ``<storage>/<run>/tune/`` (default ``runs/demo``): the Tune trial's
``time_total_s`` (last line of its result.json: from the function trainable's start to its final
``ray.tune.report``) against the trial's own loop time, ``wall_s`` in ``trials/<id>/summary.parquet``
(unlearning steps + evaluations). Their difference is the fixed cost inside the trial: Ray Train worker
start, imports, target loading, checkpoint reports, Parquet writes, teardown up to the final report.
``first report`` is time_total_s at the first progress report minus the loop's wall_s at that step (all
start-up before the first step). Cost outside time_total_s (scheduling, teardown after the final report)
shows in the slot cycle: (span of the sweep x concurrency) / trials - mean time_total_s.

    python benchmarks/bench_ray.py [--run runs/demo] [--json out.json]
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import time

from common import ROOT, fmt, fmt_stats, main, stats

NAME_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})$")


def read_run(run_dir: str) -> list[dict]:
    import pyarrow.parquet as pq
    out = []
    for d in sorted(glob.glob(os.path.join(run_dir, "tune", "*"))):
        res_file = os.path.join(d, "result.json")
        if not os.path.isfile(res_file):
            continue
        with open(res_file) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        if not lines or "status" not in lines[-1]:   # unfinished: the final summary report is missing
            continue
        trial = lines[-1]["config"]["trial"]
        summ = os.path.join(run_dir, "trials", trial, "summary.parquet")
        if not os.path.isfile(summ):
            continue
        row = pq.read_table(summ).to_pylist()[0]
        if row.get("wall_s") is None or row.get("status") != "ok":
            continue
        first = next((x for x in lines if "step" in x and "time_total_s" in x), None)
        first_fixed = None
        steps_file = os.path.join(run_dir, "trials", trial, "steps.parquet")
        if first is not None and os.path.isfile(steps_file):
            steps = {r["step"]: r["wall_s"] for r in pq.read_table(steps_file, columns=["step", "wall_s"]).to_pylist()}
            if first["step"] in steps:
                first_fixed = first["time_total_s"] - steps[first["step"]]
        m = NAME_DATE.search(os.path.basename(d))
        start = datetime.datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S").timestamp() if m else None
        out.append({"trial": trial, "target_hash": row.get("target_hash"), "model": row["model"], "method": row["method"], "lr_mode": row["lr_mode"],
                    "steps": row["steps"], "wall_s": row["wall_s"], "time_total_s": lines[-1]["time_total_s"],
                    "first_fixed": first_fixed, "start": start, "end": lines[-1]["timestamp"]})
    return out


WORKER_STARTUP = r"""
import json, sys, time
t = [time.perf_counter()]
import torch, transformers
t.append(time.perf_counter())
import ray.train, ray.train.torch, ray.tune
t.append(time.perf_counter())
from sweeper.data.qa import QADataset, collate_qa
from sweeper.loop import LoopConfig, Unlearner
from sweeper.storage import Storage
from sweeper.targets import load_target
t.append(time.perf_counter())
torch.set_num_threads(1)
res = load_target(Storage(sys.argv[1]), sys.argv[2])
model, tok = res[0], res[1]
if isinstance(res[2], dict):   # newer API: (model, tokenizer, splits, ref, reference)
    forget, retain, ref = res[2]["forget"], res[2]["retain"], res[3]
else:                          # (model, tokenizer, forget, retain, ref)
    forget, retain, ref = res[2], res[3], res[4]
t.append(time.perf_counter())
u = Unlearner(model, QADataset(forget, tok), QADataset(retain, tok), lambda b: collate_qa(b, tok.pad_token_id),
              LoopConfig(method="ngdiff", steps=30), ref_logprobs=ref)
t.append(time.perf_counter())
u.step(1)
t.append(time.perf_counter())
names = ["import torch+transformers", "import ray.train/tune", "import sweeper", "load_target", "datasets+Unlearner",
         "first step"]
print(json.dumps({n: b - a for n, a, b in zip(names, t, t[1:])}))
"""


def worker_startup(storage: str, target: str, repeats: int) -> dict:
    """What a trial worker does before its first step, without Ray: fresh interpreter, imports, load_target,
    Unlearner, step 1 (each repeat a new process; TMPDIR redirected so load_target's copies are removed)."""
    import subprocess
    import sys
    import tempfile
    out: dict[str, list[float]] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            env = {**os.environ, "TMPDIR": tmp, "RAY_AUTH_MODE": "disabled", "TRANSFORMERS_VERBOSITY": "error"}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", WORKER_STARTUP, storage, target], capture_output=True,
                                  text=True, env=env, cwd=ROOT, timeout=300)
            total = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        parts = json.loads(proc.stdout.strip().splitlines()[-1])
        parts["whole process (incl. interpreter start/exit)"] = total
        for k, v in parts.items():
            out.setdefault(k, []).append(v)
    return {k: stats(v) for k, v in out.items()}


def concurrency(trials: list[dict]) -> int:
    events = sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials])
    cur = best = 0
    for _, e in events:
        cur += e
        best = max(best, cur)
    return best


def run(args) -> dict:
    run_dir = args.run if os.path.isabs(args.run) else os.path.join(ROOT, args.run)
    trials = read_run(run_dir)
    if not trials:
        return {"title": "5. Ray fixed cost per trial", "tables": [],
                "notes": [f"No finished Tune trials under {run_dir}/tune; run a sweep first (not started here)."]}
    fixed = [t["time_total_s"] - t["wall_s"] for t in trials]
    rows = [[f"all ({len(trials)} trials)", fmt_stats(stats([t["time_total_s"] for t in trials]), 1),
             fmt_stats(stats([t["wall_s"] for t in trials]), 2), fmt_stats(stats(fixed), 1),
             fmt_stats(stats([t["time_total_s"] / t["wall_s"] for t in trials]), 1, "x"),
             fmt_stats(stats([t["first_fixed"] for t in trials if t["first_fixed"] is not None]), 1)]]
    for model in sorted({t["model"] for t in trials}):
        sub = [t for t in trials if t["model"] == model]
        rows.append([f"{model} ({len(sub)})", fmt_stats(stats([t["time_total_s"] for t in sub]), 1),
                     fmt_stats(stats([t["wall_s"] for t in sub]), 2),
                     fmt_stats(stats([t["time_total_s"] - t["wall_s"] for t in sub]), 1),
                     fmt_stats(stats([t["time_total_s"] / t["wall_s"] for t in sub]), 1, "x"),
                     fmt_stats(stats([t["first_fixed"] for t in sub if t["first_fixed"] is not None]), 1)])
    notes = []
    timed = [t for t in trials if t["start"] is not None]
    if timed:
        span = max(t["end"] for t in timed) - min(t["start"] for t in timed)
        conc = concurrency(timed)
        cycle = span * conc / len(timed)
        mean_total = sum(t["time_total_s"] for t in timed) / len(timed)
        notes.append(f"Slot cycle: {len(timed)} trials in {span:.0f} s at concurrency {conc} -> {cycle:.1f} s per trial "
                     f"per slot, of which {mean_total:.1f} s inside time_total_s and ~{cycle - mean_total:.1f} s "
                     "outside it (scheduling, teardown after the final report; 1 s timestamp resolution).")
    tables = [{"columns": ["trials", "Tune time_total_s", "loop wall_s (summary)", "fixed = total - wall",
                           "total / wall", "start-up before step 1"], "rows": rows}]
    storage = os.path.dirname(run_dir)
    target = next((t["target_hash"] for t in trials
                   if t["target_hash"] and os.path.isdir(os.path.join(storage, "targets", t["target_hash"]))), None)
    if target and not args.no_startup:
        try:
            parts = worker_startup(storage, target, 2 if args.quick else 3)
            tables.append({"caption": f"The worker's own start-up work without Ray (fresh process each repeat, target "
                                      f"{target}, seconds)", "columns": ["part", "seconds"],
                           "rows": [[k, fmt_stats(v, 2)] for k, v in parts.items()]})
            before = stats([t["first_fixed"] for t in trials if t["first_fixed"] is not None])["median"]
            own = parts["whole process (incl. interpreter start/exit)"]["median"]
            notes.append(f"Of the median {before:.1f} s before step 1, the worker's own start-up work (fresh interpreter, "
                         f"imports, load_target, first step) is ~{own:.1f} s when run alone now; the other ~{before - own:.1f} s "
                         "is Ray Tune/Train machinery (Train controller, worker group and placement group, actor process "
                         "start) -- an estimate: the two were measured at different times and loads.")
        except Exception as e:  # noqa: BLE001 -- informational; the product code may be mid-edit
            notes.append(f"Worker start-up measurement failed: {type(e).__name__}: {str(e)[-300:]}")
    notes.append(f"Source: {os.path.relpath(run_dir, ROOT)} (finished trials with status ok only; the run may still "
                 "be in progress). Trials ran concurrently on the same 2 cores, so every time includes contention.")
    med = stats(fixed)["median"]
    summary = [{"what": f"Ray fixed cost per trial ({len(trials)} trials of {os.path.basename(run_dir)})",
                "target": "(informational)",
                "value": f"{med:.1f} s (Tune time_total_s - loop wall_s), loop itself {stats([t['wall_s'] for t in trials])['median']:.1f} s",
                "met": None, "why": ""}]
    return {"title": "5. Ray fixed cost per trial (from an existing run's Tune results)", "summary": summary,
            "intro": ["Seconds; cells min / **median** / max. No target was set; informational."],
            "tables": tables, "notes": notes, "raw": trials}


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0],
         lambda ap: (ap.add_argument("--run", default="runs/demo", help="run folder (storage/run), default runs/demo"),
                     ap.add_argument("--no-startup", action="store_true",
                                     help="skip timing the worker's start-up work in fresh processes")))
