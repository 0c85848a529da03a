"""Benchmark 3: NPO's peak memory vs GDiff's (reference log-probs cached; no second model in memory).

Variants (sweeper.unlearn.loop.Unlearner, Adam, the same batches): ``gdiff`` (rule gdiff c=0.5, forget loss nll),
``npo`` (the grid's npo preset: rule ga, forget loss npo, beta 0.1) and ``gdiff+npo`` (rule gdiff c=0.5, forget
loss npo). NPO's pi_ref is the per-row log-probability of the starting model computed by stage 1's own
``sweeper.unlearn.targets.reference_logprobs``, so the loop holds a [n_forget] float tensor instead of a second model.
Target: peak(NPO) / peak(GDiff) <= 1.05.

    python benchmarks/bench_npo.py [--quick] [--device cpu|cuda] [--model-size small|phi|phi-mini] [--json out.json]
"""
from __future__ import annotations

import gc
import sys
import warnings

from harness import MB, clone, cli, fmt, fmt_stats, interleaved, n_params, peak_memory, ratios, setup, stats
from sweeper.unlearn.targets import reference_logprobs
from sweeper.tasks import get_task

TARGET = 1.05


def live_models(cls: type) -> int:
    """Live instances of the top-level model class (GPT2LMHeadModel holds a GPT2Model, also a PreTrainedModel)."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gc.get_objects() touches deprecated module attributes
        return sum(type(o) is cls for o in gc.get_objects())


def bench_model(S, name: str, repeats: int, block: int = 3) -> dict:
    base = S.model(name)
    with S.ctx():
        ref = reference_logprobs(get_task("tofu"), base, S.data.tokenizer, S.data.forget)
    before = live_models(type(base))
    npo = {"forget_loss": "npo", "forget_loss_params": {"beta": 0.1}}
    us = {"gdiff": S.unlearner(clone(base), "gdiff", method_params={"c": 0.5}),
          "npo": S.unlearner(clone(base), "ga", ref=ref, **npo),
          "gdiff+npo": S.unlearner(clone(base), "gdiff", method_params={"c": 0.5}, ref=ref, **npo)}
    steps = {k: S.stepper(u) for k, u in us.items()}
    for t in (1, 2):
        for f in steps.values():
            f(t)
    models_added = live_models(type(base)) - before   # one model copy per Unlearner is expected: 3
    P = n_params(base)
    del base
    times = interleaved(steps, repeats, lambda r: range(3 + r * block, 3 + (r + 1) * block), dev=S.dev)
    t0, mem = 3 + repeats * block, {}
    for k, u in us.items():
        cache = [u.ref_logprobs] if u.ref_logprobs is not None else []
        mem[k] = {**peak_memory(S.dev, u, steps[k], range(t0, t0 + 3), [u.g_retain] + cache),
                  "cache": sum(x.numel() * x.element_size() for x in cache)}
    return {"name": name, "params": P, "mem": mem, "times": times, "ref_bytes": ref.numel() * ref.element_size(),
            "models_added": models_added, "n_unlearners": len(us)}


def run(args) -> dict:
    S = setup(args)
    full = {"tiny-gpt2": 8, "gpt2-5m": 4, "phi-1.5": 4, "phi-mini": 2}
    results = [bench_model(S, n, 1 if args.quick else full[n]) for n in S.names]
    mem_rows, time_rows, notes, summary = [], [], [], []
    for res in results:
        label, g = f"{res['name']} ({res['params'] / 1e6:.2f}M)", res["mem"]["gdiff"]["total"]
        for k, m in res["mem"].items():
            ratio = m["total"] / g
            mem_rows.append([label, k, fmt((m["params"] + m["grads"] + m["optimizer_state"]) / MB, 2),
                             fmt((m["extra"] - m["cache"]) / MB, 2), m["cache"], fmt(m["transient"] / MB, 2),
                             fmt(m["total"] / MB, 2), fmt(ratio), "" if k == "gdiff" else f"<= {TARGET}",
                             "" if k == "gdiff" else ("met" if ratio <= TARGET else "**not met**")])
        for k in ("npo", "gdiff+npo"):
            time_rows.append([label, f"{k} / gdiff", *(fmt_stats(stats(ratios(res["times"], k, "gdiff", c)))
                                                       for c in ("cpu", "wall")), len(res["times"]["gdiff"]["cpu"])])
        notes.append(f"{res['name']}: NPO reference cache = {res['ref_bytes']} bytes ({len(S.data.forget)} forget rows x "
                     f"float32) vs {4 * res['params'] / MB:.2f} MiB for a second model; live PreTrainedModel objects "
                     f"added by building {res['n_unlearners']} Unlearners (one model copy each) and stepping them: "
                     f"{res['models_added']} (no hidden reference model).")
        r = res["mem"]["npo"]["total"] / g
        summary.append({"what": f"NPO peak memory / GDiff, {res['name']}", "target": f"<= {TARGET}",
                        "value": f"{r:.3f} (ref cache {res['ref_bytes']} B, no second model)", "met": r <= TARGET,
                        "why": "NPO's step holds more than GDiff's"})
    notes.append("Memory method as in benchmark 1: persistent tensors counted directly (parameters, flat gradient "
                 "buffer, g_R copy, Adam state, the NPO reference cache) + the transient peak of one step, max over 3 "
                 "steps with the same tokens in every variant.")
    return {"title": "3. NPO peak memory vs GDiff", "summary": summary,
            "intro": [f"Adam lr {S.lr:g}, batch {S.batch} + {S.batch}, beta 0.1; ratio = total peak / GDiff's total "
                      f"peak; {args.dev.name}."],
            "tables": [{"caption": "Peak memory (MiB)", "columns": ["model", "variant", "params + grads + Adam",
                                                                    "g_R copy", "ref cache (bytes)", "step transient peak",
                                                                    "total peak", "vs gdiff", "target", "result"],
                        "rows": mem_rows},
                       {"caption": "Step time ratio (for information; interleaved blocks of 3 steps)",
                        "columns": ["model", "ratio", "CPU time", "wall time", "repeats"], "rows": time_rows}],
            "notes": notes, "raw": [{k: v for k, v in r.items() if k != "times"} for r in results]}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__, sizes=True)


if __name__ == "__main__":
    main(sys.argv[1:])
