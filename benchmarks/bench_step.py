"""Benchmark 1: an NGDiff step vs a GDiff step on the same tokens -- time ratio, tokens/s and peak memory.

Variants, each on its own copy of the same initial model, stepping through the same (retain, forget) batches
(the loop's StepBatches, same seed: step t sees the same tokens in every variant):

* ``ngdiff``   sweeper.unlearn.loop.Unlearner, method ngdiff (two backward passes, norms, flat g_R copy);
* ``gdiff(a)`` sweeper.unlearn.loop.Unlearner, method gdiff c=0.5 (the same two backward passes, logs the norms);
* ``gdiff(b)`` harness.PlainGDiff: loss = c L_R - (1-c) L_F, ONE backward, optimizer step.

Targets: time ratio NGDiff / GDiff <= 1.05; peak memory at most one extra parameter-sized buffer.
``--device cuda --model-size phi`` runs the same on a Phi-1.5-sized model in bf16 compute (the former
gpu_phi.py); that path has not run on a GPU yet (``--model-size phi-mini`` checks it on a CPU).

    python benchmarks/bench_step.py [--quick] [--device cpu|cuda] [--model-size small|phi|phi-mini] [--json out.json]
"""
from __future__ import annotations

import sys

from harness import MB, PlainGDiff, clone, cli, fmt, fmt_stats, interleaved, n_params, peak_memory, ratios, setup, \
    stats

TARGET_RATIO = 1.05
TARGET_EXTRA_BUFFERS = 1.0


def bench_model(S, name: str, repeats: int, block: int) -> dict:
    base = S.model(name)
    P = n_params(base)
    objs = {"ngdiff": S.unlearner(clone(base)), "gdiff(a)": S.unlearner(clone(base), "gdiff", method_params={"c": 0.5}),
            "gdiff(b)": PlainGDiff(clone(base), S)}
    del base
    ng, gb = objs["ngdiff"], objs["gdiff(b)"]
    for t in (1, 2, 7):
        assert all(ng.batches.indices(s, t) == gb.batches.indices(s, t) for s in ("retain", "forget"))
    steps = {k: S.stepper(o) for k, o in objs.items()}
    first = 3
    times = interleaved(steps, repeats, lambda r: range(first + r * block, first + (r + 1) * block),
                        lambda: [f(t) for t in (1, 2) for f in steps.values()], S.dev)
    next_t = first + repeats * block
    tokens = S.tokens(ng, range(first, next_t))
    mem = {v: peak_memory(S.dev, o, steps[v], range(next_t, next_t + 3), [] if o is gb else [o.g_retain])
           for v, o in objs.items()}   # persistent tensors + the transient peak of one step (max over 3)
    r = {k: {c: stats(ratios(times, "ngdiff", k, c)) for c in ("cpu", "wall")} for k in ("gdiff(a)", "gdiff(b)")}
    return {"name": name, "params": P, "times": times, "block": block, "r": r, "mem": mem, "tokens": tokens,
            "extra_buffers": (mem["ngdiff"]["total"] - mem["gdiff(b)"]["total"]) / (4 * P)}


def run(args) -> dict:
    S = setup(args)
    big = S.size == "phi"
    repeats = {"tiny-gpt2": 20, "gpt2-5m": 12, "phi-1.5": 8, "phi-mini": 6}
    blocks = {"tiny-gpt2": 5, "gpt2-5m": 3, "phi-1.5": 5, "phi-mini": 2}
    if args.quick:
        repeats = {k: 2 if big else 3 for k in repeats}
    results = [bench_model(S, n, repeats[n], blocks[n]) for n in S.names]
    j = S.dev.judge
    time_rows, ratio_rows, mem_rows, notes, summary = [], [], [], [], []
    for res in results:
        label = f"{res['name']} ({res['params'] / 1e6:.2f}M)"
        for v, tt in res["times"].items():
            med = stats(tt[j])["median"] / res["block"]
            time_rows.append([label, v, *(fmt_stats(stats(tt[c]), 1, scale=1e3 / res["block"]) for c in ("cpu", "wall")),
                              f"{res['tokens'][1] / med:,.0f}"])
        for which, key in (("NGDiff / GDiff(a) Unlearner", "gdiff(a)"), ("NGDiff / GDiff(b) plain 1-backward", "gdiff(b)")):
            rr = res["r"][key]
            met = rr[j]["median"] <= TARGET_RATIO
            ratio_rows.append([label, which, fmt_stats(rr["cpu"]), fmt_stats(rr["wall"]), f"<= {TARGET_RATIO}",
                               "met" if met else "**not met**", rr["cpu"]["n"]])
            summary.append({"what": f"NGDiff/GDiff({key[-2]}) step time, {res['name']}", "target": f"<= {TARGET_RATIO}",
                            "value": f"{rr['cpu']['median']:.3f} (CPU), {rr['wall']['median']:.3f} (wall)", "met": met,
                            "why": "the two-backward step costs more than the plain step"})
        ref = res["mem"]["gdiff(b)"]["total"]
        for v, m in res["mem"].items():
            mem_rows.append([label, v, *(fmt(m[k] / MB, 2) for k in ("params", "grads", "optimizer_state", "extra",
                                                                     "transient", "total")),
                             fmt(m["total"] / ref), fmt((m["total"] - ref) / (4 * res["params"]), 2)])
        e = res["extra_buffers"]
        pers = (res["mem"]["ngdiff"]["persistent"] - res["mem"]["gdiff(b)"]["persistent"]) / (4 * res["params"]) - 1
        met = e <= TARGET_EXTRA_BUFFERS + 0.05
        notes.append(f"{res['name']}: NGDiff peak - plain GDiff peak = {e:.2f} parameter-sized buffers (target <= "
                     f"{TARGET_EXTRA_BUFFERS:.0f}): {'met' if met else 'NOT met'}; {res['tokens'][0]:.0f} real / "
                     f"{res['tokens'][1]:.0f} padded tokens per step.")
        summary.append({"what": f"NGDiff peak memory vs plain GDiff, {res['name']}", "target": "<= 1 extra P-sized buffer",
                        "value": f"{e:+.2f} P total peak ({res['mem']['ngdiff']['total'] / ref:.2f}x); persistent "
                                 f"{pers:+.2f} P (g_R)", "met": met, "why": "g_R plus the step's activations"})
    notes += [
        "Memory method: persistent tensors counted directly (distinct storages of parameters, .grad / the flat "
        "gradient buffer, Adam state, the Unlearner's g_R copy), plus the transient peak of one step (CPU: "
        "torch.profiler(profile_memory=True), the max of the allocator's running 'Total Allocated'; CUDA: "
        "torch.cuda.max_memory_allocated above what was allocated before); max over 3 steps with the same tokens in "
        "every variant. Not RSS (glibc keeps freed pages).",
        "Persistent: Unlearner = params + flat grads + g_R + Adam(2) = 5 P; plain = params + Adam(2) (+ grads "
        "allocated during backward) = 4 P. The plain step holds both batches' graphs at once, the Unlearner only "
        "one at a time, which offsets part of g_R on small models.",
    ]
    if S.dtype != "float32":
        notes.append(f"Precision: float32 weights, gradients and Adam state; every step under "
                     f"sweeper.models.language.compute_precision({S.dtype!r}) (torch.autocast, cast cache off), as trials with "
                     f"`dtype: {S.dtype}` run. Random weights; real-length synthetic rows.")
    if args.dev.cuda:
        notes.append("CUDA: blocks synchronised; targets judged on wall time (the CPU columns are the host's time).")
    return {"title": "1. NGDiff step vs GDiff step (same tokens)", "summary": summary,
            "intro": [f"Adam lr {S.lr:g}, batch {S.batch} retain + {S.batch} forget rows, c = 0.5 for GDiff; blocks of "
                      + " / ".join(f"{blocks[n]} ({n})" for n in S.names) + " steps per variant, interleaved, order "
                      "rotated; " + " / ".join(str(repeats[n]) for n in S.names) + f" repeats; {args.dev.name}. Cells: "
                      f"min / **median** / max. Target judged on the {S.dev.clock}-time median (one torch thread: CPU "
                      "time counts work, wall time also counts waiting for a shared core)."],
            "tables": [{"caption": "Time per step (ms); tokens/s = padded tokens per step / median step time",
                        "columns": ["model", "variant", "CPU ms/step", "wall ms/step", "tokens/s"], "rows": time_rows},
                       {"caption": "Time ratios (per repeat)", "columns": ["model", "ratio", "CPU time", "wall time",
                                                                           "target", "result", "repeats"],
                        "rows": ratio_rows},
                       {"caption": "Peak memory (MiB)", "columns": ["model", "variant", "params", "grads", "Adam state",
                                                                    "g_R copy", "step transient peak", "total peak",
                                                                    "vs (b)", "extra P-buffers vs (b)"],
                        "rows": mem_rows}],
            "notes": notes, "raw": results}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__, sizes=True)


if __name__ == "__main__":
    main(sys.argv[1:])
