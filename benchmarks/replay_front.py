"""Replay the front search's sampler offline over a task's measured landscape: hundreds of search seeds in
seconds, where a real launch takes ~25 s a seed (how the gap sampler's defaults were chosen for issue 22).

    .venv/bin/python benchmarks/replay_front.py --storage /tmp/bf22 --task gdiff_gpt2 --seeds 300
    .venv/bin/python benchmarks/replay_front.py --storage /tmp/bf22 --task npo_llama --random-order
    .venv/bin/python benchmarks/replay_front.py --storage /tmp/bf22 --task gdiff_gpt2 --show 17   # one seed's log
    .venv/bin/python benchmarks/replay_front.py --storage /tmp/bf22 --task all --train-seeds 0 1 2 --seeds 50 \
        --both-orders        # every task's landscape at each training seed (~3 min): how a change was judged

The landscape is every trial of ``bench_front.py``'s runs of the task in ``--storage`` (its grids and
searches, any tag): each configuration's full trajectory (forget, retain at every evaluated step). A
replayed search proposes like the real one (``make_sampler("gap", ...)`` with the study's reference and
lr axis, the No-unlearn point as anchor, two configurations in flight) and each proposal gets the
trajectory of the nearest measured configuration (max-norm in the unit cube). No Ray, no rungs: every
configuration runs its full length, so a replay buys the budget's N configurations and no more.
Completion is first-in-first-out, or in random order with ``--random-order`` (rung stops and uneven
trial times reorder real completions). The hypervolume is reported against the task's grid run
(``<task>_grid24<--grid-tag>``). A nearest-neighbour landscape is rougher where few configurations were
measured; use it to compare sampler variants, and check a choice with real launches (bench_front.py).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)


def landscape(storage: str, task: str, train_seed: int = 0):
    """(units (n, 2), trajectories [[(step, forget, retain)]], lr Range, anchor) of the trials trained with
    ``train_seed`` (bench_front.py's ``--train-seeds``: another seed is another landscape)."""
    import warnings
    from analysis.front import evaluation_points
    from analysis.load import BASELINE, REFERENCE, load_run
    from bench_front import LR_RANGE, TASKS
    from sweeper.grid.search_settings import Range
    _, fixed, _, param, prange = TASKS[task]
    prange, lr = Range(param, *prange), Range("lr", *LR_RANGE, log=True)
    last = fixed["unlearn"]["steps"]
    tracks, anchor = {}, None
    for run in sorted(glob.glob(os.path.join(storage, f"{task}_*"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                points = evaluation_points(load_run(run))
            except Exception:  # noqa: BLE001 - a run folder without Parquet (killed early): skip it
                continue
        base = points[points["method"] == BASELINE]
        if anchor is None and len(base):
            anchor = (float(base["rouge_forget"].iloc[0]), float(base["rouge_retain"].iloc[0]))
        points = points[~points["method"].isin([BASELINE, REFERENCE]) & (points["seed"] == train_seed)]
        for _, rows in points.groupby("trial_id"):
            config = json.loads(rows["config"].iloc[0])
            value = {**config.get("method_params", {}), **config.get("forget_loss_params", {})}.get(param)
            rows = rows.sort_values("step")
            if value is None or rows["step"].max() < last:
                continue
            key = (round(prange.unit(value), 6), round(lr.unit(config["lr"]), 6))
            tracks[key] = [(int(s), float(f), float(y))
                           for s, f, y in zip(rows["step"], rows["rouge_forget"], rows["rouge_retain"])]
    keys = list(tracks)
    return np.array(keys, float), [tracks[k] for k in keys], lr, anchor


def replay(seed: int, keys, tracks, lr, anchor, n: int = 8, initial: int = 3, random_order: bool = False,
           show: bool = False) -> np.ndarray:
    """Every (forget, retain) point of one replayed search of ``n`` configurations."""
    from sweeper.front.samplers import make_sampler
    sampler = make_sampler("gap", 2, ("min", "max"), seed, initial, ref=(1.0, 0.0), lr_axis=(1, lr))
    rng = np.random.default_rng(seed)
    finished, pending = [], []
    while len(finished) < n:
        while len(pending) < 2 and len(finished) + len(pending) < n:
            got = sampler.propose(finished, pending, (anchor, 1) if anchor else None)
            if got is None:
                break
            pending.append(got[0])
            if show:
                print(f"  propose {np.round(got[0], 3).tolist()}: {got[1]}")
        u = pending.pop(int(rng.integers(len(pending))) if random_order else 0)
        track = tracks[int(np.argmin(np.max(np.abs(keys - np.asarray(u)), axis=1)))]
        finished.append((u, track))
        if show:
            print(f"  done    {np.round(u, 3).tolist()}: " + " ".join(f"{s}:({f:.3f}, {y:.3f})" for s, f, y in track))
    return np.array([(f, y) for _, t in finished for _, f, y in t])


def main(argv=None) -> None:
    from analysis.pareto import hypervolume_2d
    from bench_front import TASKS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True, help="where bench_front.py's runs are (its --storage)")
    p.add_argument("--task", default="gdiff_gpt2", choices=[*TASKS, "all"])
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="landscapes of these training seeds "
                   "(bench_front.py's --train-seeds), each against its own grid (<grid>_t<seed>)")
    p.add_argument("--both-orders", action="store_true", help="replay each seed in both completion orders")
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--n", type=int, default=8, help="configurations per search (bench_front's budget N)")
    p.add_argument("--grid-tag", default="Z", help="the grid run to compare with: <task>_grid24<tag>")
    p.add_argument("--random-order", action="store_true", help="complete the two running configurations in random order")
    p.add_argument("--show", type=int, default=None, help="print one seed's proposals and trajectories")
    args = p.parse_args(argv)
    if args.show is not None and args.task == "all":
        p.error("--show replays one task: name it with --task")
    if args.show is not None:
        keys, tracks, lr, anchor = landscape(args.storage, args.task, args.train_seeds[0])
        grid = _grid_hv(args, args.task, args.train_seeds[0])
        pts = replay(args.show, keys, tracks, lr, anchor, args.n, random_order=args.random_order, show=True)
        print(f"seed {args.show}: HV / grid HV {hypervolume_2d(pts, (1.0, 0.0), ('min', 'max')) / grid:.3f}")
        return
    orders = (False, True) if args.both_orders else (args.random_order,)
    tenths, medians, everything = [], [], []
    for task in (list(TASKS) if args.task == "all" else [args.task]):
        for t in args.train_seeds:
            keys, tracks, lr, anchor = landscape(args.storage, task, t)
            grid = _grid_hv(args, task, t)
            r = np.array([hypervolume_2d(replay(s, keys, tracks, lr, anchor, args.n, random_order=o),
                                         (1.0, 0.0), ("min", "max")) / grid
                          for o in orders for s in range(args.seeds)])
            q = np.quantile(r, [0.05, 0.1, 0.25, 0.5])
            tenths.append(q[1]), medians.append(q[3]), everything.append(r)
            print(f"{task} (training seed {t}): {len(keys)} measured configurations, {len(r)} replays"
                  f"{' (random completion order)' if orders == (True,) else ''}: HV / grid HV min {r.min():.3f}, "
                  f"5 % {q[0]:.3f}, 10 % {q[1]:.3f}, 25 % {q[2]:.3f}, median {q[3]:.3f}; "
                  f">= 0.98: {np.mean(r >= 0.98):.0%}", flush=True)
    if len(tenths) > 1:
        print(f"all {len(tenths)} landscapes: mean of the 10 % quantiles {np.mean(tenths):.3f}, mean of the medians "
              f"{np.mean(medians):.3f}, replays >= 0.98: {np.mean(np.concatenate(everything) >= 0.98):.1%}")


def _grid_hv(args, task: str, t: int) -> float:
    """The hypervolume of the grid run a replay of ``task`` at training seed ``t`` is judged against."""
    from bench_front import measure
    return measure(os.path.join(args.storage, f"{task}_grid{3 * args.n}{args.grid_tag}" + (f"_t{t}" if t else "")))["hv"]


if __name__ == "__main__":
    main()
