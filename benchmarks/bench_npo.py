"""Benchmark 3: NPO's peak memory vs GDiff's (reference log-probs cached; no second model in memory).

Variants (sweeper.loop.Unlearner, Adam, the same batches):

* ``gdiff``      rule gdiff c=0.5, forget loss nll;
* ``npo``        the grid's ``npo`` preset: rule ga, forget loss npo (beta 0.1);
* ``gdiff+npo``  rule gdiff c=0.5, forget loss npo (NPO with a retain term).

The NPO reference pi_ref is the cached per-row sequence log-probability of the starting model
(what stage 1 stores, computed as ``sweeper.targets.reference_logprobs`` does), so the loop holds a [n_forget] float tensor
instead of a second model. Target: peak(NPO) / peak(GDiff) <= 1.05.

    python benchmarks/bench_npo.py [--quick] [--json out.json]
"""
from __future__ import annotations

import gc
import warnings

import torch

from common import (MODELS, Data, clone, fmt, fmt_stats, interleaved, main, make_unlearner, n_params,
                    persistent_bytes, profiled_peak, ratios, stats)
from sweeper.lm import sequence_logprobs  # noqa: E402

TARGET = 1.05
MB = 2 ** 20


@torch.no_grad()
def reference_logprobs(model, data: Data, batch_size: int = 64) -> torch.Tensor:
    """What stage 1 caches (sweeper.targets.reference_logprobs, same computation; not imported so this benchmark
    does not depend on the grid/launch modules): every forget row's answer log-prob under the start model."""
    model.eval()
    ds = data.forget_ds
    out = [sequence_logprobs(model, data.collate([ds[i] for i in range(b, min(b + batch_size, len(ds)))]))[0].float()
           for b in range(0, len(ds), batch_size)]
    return torch.cat(out)


def live_models(cls: type) -> int:
    """Live instances of the top-level model class (GPT2LMHeadModel holds a GPT2Model, also a PreTrainedModel)."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gc.get_objects() touches deprecated module attributes
        return sum(type(o) is cls for o in gc.get_objects())


def bench_model(name: str, data: Data, repeats: int, block: int) -> dict:
    base = MODELS[name](data)
    ref = reference_logprobs(base, data)
    before = live_models(type(base))
    us = {"gdiff": make_unlearner(clone(base), data, "gdiff", method_params={"c": 0.5}),
          "npo": make_unlearner(clone(base), data, "ga", forget_loss="npo", forget_loss_params={"beta": 0.1},
                                ref=ref),
          "gdiff+npo": make_unlearner(clone(base), data, "gdiff", method_params={"c": 0.5}, forget_loss="npo",
                                      forget_loss_params={"beta": 0.1}, ref=ref)}
    for t in (1, 2):
        for u in us.values():
            u.step(t)
    models_added = live_models(type(base)) - before   # one model copy per Unlearner is expected: 3
    times = interleaved({k: u.step for k, u in us.items()}, repeats,
                        lambda r: range(3 + r * block, 3 + (r + 1) * block))
    t0 = 3 + repeats * block
    mem = {}
    for k, u in us.items():
        best = None
        for t in (t0, t0 + 1, t0 + 2):
            cache = [u.ref_logprobs] if u.ref_logprobs is not None else []
            pers = persistent_bytes(u.model, u.optimizer, extra=[u.g_retain] + cache)
            pers["cache"] = sum(x.numel() * x.element_size() for x in cache)
            peak = profiled_peak(lambda: u.step(t))
            if best is None or pers["total"] + peak > best["total"]:
                best = {**pers, "transient": peak, "total": pers["total"] + peak}
        mem[k] = best
    return {"name": name, "params": n_params(base), "mem": mem, "times": times, "ref_bytes": ref.numel() * ref.element_size(),
            "models_added": models_added, "n_unlearners": len(us)}


def run(args) -> dict:
    data = Data()
    repeats = {"tiny-gpt2": 8, "gpt2-5m": 4} if not args.quick else {"tiny-gpt2": 2, "gpt2-5m": 1}
    results = [bench_model(n, data, repeats[n], 3) for n in MODELS]
    mem_rows, time_rows, notes = [], [], []
    for res in results:
        label = f"{res['name']} ({res['params'] / 1e6:.2f}M)"
        g = res["mem"]["gdiff"]["total"]
        for k, m in res["mem"].items():
            ratio = m["total"] / g
            verdict = "" if k == "gdiff" else ("met" if ratio <= TARGET else "**not met**")
            mem_rows.append([label, k, fmt((m["params"] + m["grads"] + m["optimizer_state"]) / MB, 2),
                             fmt((m["extra"] - m["cache"]) / MB, 2), m["cache"], fmt(m["transient"] / MB, 2), fmt(m["total"] / MB, 2),
                             fmt(ratio), "" if k == "gdiff" else f"<= {TARGET}", verdict])
        for k in ("npo", "gdiff+npo"):
            time_rows.append([label, f"{k} / gdiff", fmt_stats(stats(ratios(res["times"], k, "gdiff", "cpu"))),
                              fmt_stats(stats(ratios(res["times"], k, "gdiff", "wall"))),
                              len(res["times"]["gdiff"]["cpu"])])
        notes.append(f"{res['name']}: NPO reference cache = {res['ref_bytes']} bytes ({len(data.forget)} forget rows x "
                     f"float32) vs {4 * res['params'] / MB:.2f} MiB for a second model; live PreTrainedModel objects "
                     f"added by building {res['n_unlearners']} Unlearners (one model copy each) and stepping them: "
                     f"{res['models_added']} (no hidden reference model).")
    notes.append("Memory method as in benchmark 1: persistent tensors counted directly (parameters, flat gradient "
                 "buffer, g_R copy, Adam state, the NPO reference cache) + the torch.profiler transient peak of one "
                 "step, max over 3 steps with the same tokens in every variant.")
    summary = []
    for res in results:
        r = res["mem"]["npo"]["total"] / res["mem"]["gdiff"]["total"]
        summary.append({"what": f"NPO peak memory / GDiff, {res['name']}", "target": f"<= {TARGET}",
                        "value": f"{r:.3f} (ref cache {res['ref_bytes']} B, no second model)", "met": r <= TARGET,
                        "why": ""})
    return {
        "title": "3. NPO peak memory vs GDiff",
        "summary": summary,
        "intro": ["Adam lr 1e-3, batch 8 + 8, beta 0.1; ratio = total peak / GDiff's total peak."],
        "tables": [
            {"caption": "Peak memory (MiB)", "columns": ["model", "variant", "params + grads + Adam",
                                                         "g_R copy", "ref cache (bytes)", "step transient peak", "total peak",
                                                         "vs gdiff", "target", "result"], "rows": mem_rows},
            {"caption": "Step time ratio (for information; interleaved blocks of 3 steps)",
             "columns": ["model", "ratio", "CPU time", "wall time", "repeats"], "rows": time_rows},
        ],
        "notes": notes,
        "raw": [{k: v for k, v in r.items() if k != "times"} for r in results],
    }


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
