"""Benchmark 1: an NGDiff step vs a GDiff step on the same tokens -- time ratio and peak memory.

Variants, each on its own copy of the same initial model, stepping through the same (retain, forget)
batches (the loop's StepBatches, same seed, so step t sees the same tokens in every variant):

* ``ngdiff``   sweeper.loop.Unlearner, method ngdiff (two backward passes, norms, flat g_R copy);
* ``gdiff(a)`` sweeper.loop.Unlearner, method gdiff c=0.5 (the same two backward passes, logs the norms);
* ``gdiff(b)`` a plain GDiff written here: loss = c L_R - (1-c) L_F, ONE backward, optimizer step.

Targets: time ratio NGDiff / GDiff <= 1.05; peak memory at most one extra parameter-sized buffer.

    python benchmarks/bench_step.py [--quick] [--json out.json]
"""
from __future__ import annotations

from common import (MODELS, Data, PlainGDiff, clone, fmt, fmt_stats, interleaved, main, make_unlearner, n_params,
                    persistent_bytes, profiled_peak, ratios, stats)

TARGET_RATIO = 1.05
TARGET_EXTRA_BUFFERS = 1.0
MB = 2 ** 20


def bench_model(name: str, data: Data, repeats: int, block: int) -> dict:
    base = MODELS[name](data)
    P = n_params(base)
    ng = make_unlearner(clone(base), data, "ngdiff")
    ga = make_unlearner(clone(base), data, "gdiff", method_params={"c": 0.5})
    gb = PlainGDiff(clone(base), data, c=0.5)
    for t in (1, 2, 7):
        assert ng.batches.indices("retain", t) == gb.batches.indices("retain", t)
        assert ng.batches.indices("forget", t) == gb.batches.indices("forget", t)
    variants = {"ngdiff": ng.step, "gdiff(a)": ga.step, "gdiff(b)": gb.step}

    def warmup():
        for t in (1, 2):
            for f in variants.values():
                f(t)

    first = 3
    times = interleaved(variants, repeats, lambda r: range(first + r * block, first + (r + 1) * block), warmup)
    next_t = first + repeats * block

    # Peak memory: persistent tensors (counted directly) + the transient peak of one step (torch profiler).
    # The plain reference frees its .grad at zero_grad(set_to_none=True) before backward; do that before
    # profiling (the profiler cannot see frees of tensors allocated before it started).
    mem = {}
    for vname, obj in (("ngdiff", ng), ("gdiff(a)", ga), ("gdiff(b)", gb)):
        best = None
        for t in (next_t, next_t + 1, next_t + 2):
            if obj is gb:
                gb.optimizer.zero_grad(set_to_none=True)
                pers = persistent_bytes(gb.model, gb.optimizer)
            else:
                pers = persistent_bytes(obj.model, obj.optimizer, extra=[obj.g_retain])
            peak = profiled_peak(lambda: obj.step(t))
            total = pers["total"] + peak
            if best is None or total > best["total"]:
                best = {**pers, "persistent": pers["total"], "transient": peak, "total": total}
        mem[vname] = best

    r_a = {k: stats(ratios(times, "ngdiff", "gdiff(a)", k)) for k in ("cpu", "wall")}
    r_b = {k: stats(ratios(times, "ngdiff", "gdiff(b)", k)) for k in ("cpu", "wall")}
    extra = (mem["ngdiff"]["total"] - mem["gdiff(b)"]["total"]) / (4 * P)
    return {"name": name, "params": P, "times": times, "block": block, "r_a": r_a, "r_b": r_b, "mem": mem,
            "extra_buffers": extra}


def run(args) -> dict:
    data = Data()
    repeats = {"tiny-gpt2": 20, "gpt2-5m": 12}
    blocks = {"tiny-gpt2": 5, "gpt2-5m": 3}
    if args.quick:
        repeats = {k: 3 for k in repeats}
    results = [bench_model(n, data, repeats[n], blocks[n]) for n in MODELS]

    time_rows, ratio_rows, mem_rows = [], [], []
    for res in results:
        label = f"{res['name']} ({res['params'] / 1e6:.2f}M)"
        for v, tt in res["times"].items():
            time_rows.append([label, v, fmt_stats(stats([x / res["block"] * 1e3 for x in tt["cpu"]]), 1),
                              fmt_stats(stats([x / res["block"] * 1e3 for x in tt["wall"]]), 1)])
        for which, key in (("NGDiff / GDiff(a) Unlearner", "r_a"), ("NGDiff / GDiff(b) plain 1-backward", "r_b")):
            r = res[key]
            met = r["cpu"]["median"] <= TARGET_RATIO
            ratio_rows.append([label, which, fmt_stats(r["cpu"]), fmt_stats(r["wall"]), f"<= {TARGET_RATIO}",
                               "met" if met else "**not met**", r["cpu"]["n"]])
        P4 = 4 * res["params"]
        for v, m in res["mem"].items():
            mem_rows.append([label, v, fmt(m["params"] / MB, 2), fmt(m["grads"] / MB, 2),
                             fmt(m["optimizer_state"] / MB, 2), fmt(m["extra"] / MB, 2),
                             fmt(m["transient"] / MB, 2), fmt(m["total"] / MB, 2),
                             fmt(m["total"] / res["mem"]["gdiff(b)"]["total"]),
                             fmt((m["total"] - res["mem"]["gdiff(b)"]["total"]) / P4, 2)])
    notes = []
    for res in results:
        met = res["extra_buffers"] <= TARGET_EXTRA_BUFFERS + 0.05
        notes.append(f"{res['name']}: NGDiff peak - plain GDiff peak = {res['extra_buffers']:.2f} parameter-sized "
                     f"buffers (target <= {TARGET_EXTRA_BUFFERS:.0f}): {'met' if met else 'NOT met'}.")
    notes += [
        "Memory method: persistent tensors counted directly (distinct storages of parameters, .grad / the "
        "flat gradient buffer, Adam state, the Unlearner's g_R copy), plus the transient peak of one step "
        "from torch.profiler(profile_memory=True) (max of the CPU allocator's running 'Total Allocated'); "
        "max over 3 steps with the same tokens in every variant. Not RSS (glibc keeps freed pages).",
        "Persistent: Unlearner = params + flat grads + g_R + Adam(2) = 5 P; plain = params + Adam(2) (+ grads "
        "allocated during backward) = 4 P. The plain step holds both batches' graphs at once, the Unlearner "
        "only one at a time, which offsets part of g_R on small models.",
    ]
    summary = []
    for res in results:
        for which, key in (("NGDiff/GDiff(a) step time", "r_a"), ("NGDiff/GDiff(b) step time", "r_b")):
            m = res[key]["cpu"]["median"]
            summary.append({"what": f"{which}, {res['name']}", "target": f"<= {TARGET_RATIO}",
                            "value": f"{m:.3f} (CPU), {res[key]['wall']['median']:.3f} (wall)",
                            "met": m <= TARGET_RATIO,
                            "why": "" if m <= TARGET_RATIO else "the two-backward step costs more than the plain step"})
        e = res["extra_buffers"]
        pers_extra = (res["mem"]["ngdiff"]["persistent"] - res["mem"]["gdiff(b)"]["persistent"]) / (4 * res["params"]) - 1
        summary.append({"what": f"NGDiff peak memory vs plain GDiff, {res['name']}",
                        "target": "<= 1 extra P-sized buffer",
                        "value": f"{e:+.2f} P total peak ({res['mem']['ngdiff']['total'] / res['mem']['gdiff(b)']['total']:.2f}x); "
                                 f"persistent {pers_extra:+.2f} P (g_R)",
                        "met": e <= TARGET_EXTRA_BUFFERS + 0.05, "why": ""})
    return {
        "title": "1. NGDiff step vs GDiff step (same tokens)",
        "summary": summary,
        "intro": [f"Adam lr 1e-3, batch 8 retain + 8 forget rows, c = 0.5 for GDiff; blocks of "
                  f"{blocks['tiny-gpt2']} (tiny) / {blocks['gpt2-5m']} (5M) steps per variant, interleaved, "
                  f"order rotated; {repeats['tiny-gpt2']} / {repeats['gpt2-5m']} repeats. Cells: "
                  "min / **median** / max. Target judged on the CPU-time median (one torch thread: CPU time "
                  "counts work, wall time also counts waiting for a shared core)."],
        "tables": [
            {"caption": "Time per step (ms)", "columns": ["model", "variant", "CPU ms/step", "wall ms/step"],
             "rows": time_rows},
            {"caption": "Time ratios (per repeat)", "columns": ["model", "ratio", "CPU time", "wall time", "target",
                                                                "result", "repeats"], "rows": ratio_rows},
            {"caption": "Peak memory (MiB)", "columns": ["model", "variant", "params", "grads", "Adam state",
                                                         "g_R copy", "step transient peak", "total peak",
                                                         "vs (b)", "extra P-buffers vs (b)"],
             "rows": mem_rows},
        ],
        "notes": notes,
        "raw": [{k: v for k, v in r.items()} for r in results],
    }


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
