"""Benchmark 8: the field's objectives vs GDiff: step time on the same batches, and peak memory.

Variants (sweeper.unlearn.loop.Unlearner, Adam, the same seed so the same forget/retain rows every step): ``gdiff``
(rule gdiff c=0.5, forget loss nll, retain loss nll) and, with the same rule, each forget objective (npo, simnpo,
wga, satimp, ce_u, undial, idknll, idkdpo), rmu (forget rmu + retain rmu, the block "auto" picks), the KL retain
side (nll forget + retain kl) and the pdu rule (nll). The target's values UNDIAL, RMU, KL and IdkDPO need are cached
from the model before its first update (rows of the benchmark's steps, on the host); the cache is counted in the
memory total here (on a GPU it lives in host memory, not on the device). idknll / idkdpo also run the refusal
batch's forward and backward (a second answer per forget row), so their tokens per step are not GDiff's.
Goals (issue 20): step time <= 1.10 x GDiff for token-level objectives; RMU and UNDIAL peak memory <= 1.3 x GDiff.

    python benchmarks/bench_field.py [--quick] [--device cpu|cuda] [--model-size small|phi|phi-mini] [--json out.json]
"""
from __future__ import annotations

import sys

from harness import MB, QADataset, clone, cli, fmt, fmt_stats, interleaved, n_params, peak_memory, ratios, setup, stats
from sweeper.unlearn.loop import LoopConfig, Unlearner
from sweeper.data.refusals import idk_rows
from sweeper.tasks import get_task
from sweeper.unlearn.targets import reference_logprobs

TIME_GOAL, MEM_GOAL = 1.10, 1.3
TOKEN_LEVEL = {"wga", "satimp", "ce_u", "simnpo", "npo"}
#: variant -> LoopConfig keywords (rule gdiff c = 0.5 unless the variant is a rule)
VARIANTS = {
    "gdiff": {},
    "npo": {"forget_loss": "npo"},
    "simnpo": {"forget_loss": "simnpo"},
    "wga": {"forget_loss": "wga"},
    "satimp": {"forget_loss": "satimp"},
    "ce_u": {"forget_loss": "ce_u"},
    "undial": {"forget_loss": "undial"},
    "rmu": {"forget_loss": "rmu", "retain_loss": "rmu"},
    "idknll": {"forget_loss": "idknll"},
    "idkdpo": {"forget_loss": "idkdpo"},
    "retain_kl": {"retain_loss": "kl"},
    "pdu": {"method": "pdu"},
}


def _cache_tensors(u) -> list:
    return [t for side in (u.forget, u.retain) for d in side.cache.values() for t in d.values()]


def unlearner(S, model, kw: dict, ref, alt, steps: int) -> Unlearner:
    """As the harness's ``Setup.unlearner``, with the refusal dataset and ``steps`` (the rows to cache)."""
    kw = {"method": "gdiff", **kw}
    params = {"c": 0.5} if kw["method"] == "gdiff" else {}
    cfg = LoopConfig(method_params=params, lr=S.lr, steps=steps, batch_size=S.batch, seed=0, **kw)
    with S.ctx():   # the target's values cached in the compute precision, as a trial does
        return Unlearner(model, S.data.forget_ds, S.data.retain_ds, S.data.collate, cfg, ref_logprobs=ref,
                         device=S.dev.kind, alt_forget_ds=alt)


def bench_model(S, name: str, repeats: int, steps: int, block: int = 3) -> dict:
    base = S.model(name)
    with S.ctx():
        ref = reference_logprobs(get_task("tofu"), base, S.data.tokenizer, S.data.forget)
    alt = QADataset(idk_rows(S.data.forget), S.data.tokenizer)
    us = {k: unlearner(S, clone(base), kw, ref, alt, steps) for k, kw in VARIANTS.items()}
    fns = {k: S.stepper(u) for k, u in us.items()}
    for f in fns.values():
        f(1)
    times = interleaved(fns, repeats, lambda r: range(2 + r * block, 2 + (r + 1) * block), dev=S.dev)
    t0, mem = 2 + repeats * block, {}
    for k, u in us.items():
        cache = _cache_tensors(u)
        mem[k] = {**peak_memory(S.dev, u, fns[k], range(t0, t0 + 2), [u.g_retain] + cache),
                  "cache": sum(x.numel() * x.element_size() for x in cache)}
    return {"name": name, "params": n_params(base), "mem": mem, "times": times}


def run(args) -> dict:
    S = setup(args)
    full = {"tiny-gpt2": 6, "gpt2-5m": 3, "phi-1.5": 3, "phi-mini": 2}
    block = 3
    results = []
    for n in S.names:
        reps = 1 if args.quick else full[n]
        results.append(bench_model(S, n, reps, steps=2 + (reps + 1) * block + 2, block=block))
    time_rows, mem_rows, summary = [], [], []
    for res in results:
        label, g = f"{res['name']} ({res['params'] / 1e6:.2f}M)", res["mem"]["gdiff"]["total"]
        for k in VARIANTS:
            if k == "gdiff":
                continue
            r = stats(ratios(res["times"], k, "gdiff", S.dev.judge))
            goal = f"<= {TIME_GOAL}" if k in TOKEN_LEVEL else "(measured)"
            met = "" if k not in TOKEN_LEVEL else ("met" if r["median"] <= TIME_GOAL else "**not met**")
            time_rows.append([label, f"{k} / gdiff", fmt_stats(r), goal, met, r["n"]])
            if k in TOKEN_LEVEL:
                summary.append({"what": f"{k}/GDiff step time, {res['name']}", "target": goal,
                                "value": f"{r['median']:.3f} ({S.dev.clock})", "met": r["median"] <= TIME_GOAL})
        for k, m in res["mem"].items():
            ratio = m["total"] / g
            goal = f"<= {MEM_GOAL}" if k in ("rmu", "undial") else ""
            mem_rows.append([label, k, fmt(m["persistent"] / MB, 2), fmt(m["cache"] / MB, 3), fmt(m["transient"] / MB, 2),
                             fmt(m["total"] / MB, 2), fmt(ratio), goal,
                             ("met" if ratio <= MEM_GOAL else "**not met**") if goal else ""])
            if goal:
                summary.append({"what": f"{k} peak memory / GDiff, {res['name']}", "target": goal,
                                "value": f"{ratio:.3f} (cache {m['cache'] / MB:.3f} MiB)", "met": ratio <= MEM_GOAL})
    return {"title": "8. The field's objectives vs GDiff: step time and peak memory", "summary": summary,
            "intro": [f"Adam lr {S.lr:g}, batch {S.batch} + {S.batch}, rule gdiff c = 0.5 for every objective, the "
                      f"same rows every step; {args.dev.name}. Ratios per repeat of interleaved blocks of {block} steps "
                      f"({S.dev.clock} time), min / **median** / max."],
            "tables": [{"caption": "Step time ratio vs GDiff", "columns": ["model", "ratio", f"{S.dev.clock} time",
                                                                           "goal", "result", "repeats"],
                        "rows": time_rows},
                       {"caption": "Peak memory (MiB): persistent (params, grads, g_R copy, Adam, target cache) + "
                                   "the step's transient peak",
                        "columns": ["model", "variant", "persistent", "target cache", "step transient peak",
                                    "total peak", "vs gdiff", "goal", "result"], "rows": mem_rows}],
            "notes": ["idknll / idkdpo: one more forward and backward per step (the refusal batch), so more tokens than "
                      "GDiff's; rmu: the full forward runs (the NLL column of every row needs the logits), the block's "
                      "output is taken by a hook.",
                      "The target cache holds the target's logits (undial, retain_kl) or block outputs (rmu) at the "
                      "answer positions of the rows the steps visit, and the refusals' log-probs (idkdpo)."],
            "raw": [{k: v for k, v in r.items() if k != "times"} for r in results]}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__, sizes=True)


if __name__ == "__main__":
    main(sys.argv[1:])
