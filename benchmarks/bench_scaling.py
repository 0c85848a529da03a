"""Benchmark 6: scaling of cost with work -- ms/step vs forget size, retain size, model size and batch size,
trial time for a paper-style schedule, FLOPs and throughput, and a GPU-hour estimate of the paper grid.

* ms/step vs one factor at a time: Unlearner steps (NGDiff, Adam lr 1e-3, batch 8 + 8, static lr, no evaluation) on
  (a) forget sets of 10..160 rows, (b) retain sets of 20..640, (c) models from 0.4M to ~20M parameters (the five
  tiny twins and GPT-2s of the gpt2-5m recipe), (d) batch sizes 4..32. All configurations of a factor run the same
  step indices, interleaved, order rotated; cells min / **median** / max over repeats.
* FLOPs of those very steps (harness.count_flops: matmuls, convolutions, attention), tokens/s, achieved FLOP/s and
  its share of the measured matmul peak (harness.matmul_peak).
* Trial time for a paper-style schedule: 15 epochs over the forget set, then one final evaluation
  (sweeper.metrics.evaluate.evaluate_qa on min(n_forget, 100) forget and as many retain questions, 24 new tokens).
* Log-log slopes (numpy.polyfit) of each curve, and the GPU-hours of ``--grid paper`` from FLOPs (sweeper.cluster.estimate)
  at an assumed 35 % MFU of an H100/H200's bf16 peak and at the MFU measured here.

The plot goes to ``benchmarks/scaling.png`` (--quick: to the temp folder, keeping the measured plot).

    python benchmarks/bench_scaling.py [--quick] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import gc
import math
import os
import sys
import tempfile

import numpy as np
import torch

from harness import THREADS, clone, cli, count_flops, fmt_stats, gpt2, interleaved, matmul_peak, n_params, setup, \
    stats, tiny
from sweeper.data.qa import QADataset
from sweeper.cluster.estimate import ASSUMED_MFU, GPU_PEAK_BF16, TOFU_TOKENS_PER_ROW, flops_per_row, gpu_hours, \
    resnet50_flops_per_image, row_tokens, trial_flops
from sweeper.metrics.evaluate import evaluate_qa
from sweeper.grid.load import expand, load_grid, resolve_grid_path

HERE = os.path.dirname(os.path.abspath(__file__))
N_FORGET, N_RETAIN = 20, 180   # the smoke/demo grids' split sizes while another factor varies
EPOCHS, EVAL_CAP, EVAL_NEW_TOKENS, FIRST_STEP = 15, 100, 24, 3
TOFU_ROWS, CIFAR_TRAIN = 4000, 50_000
ZOO = {**{f"tiny-{a}": tiny(a) for a in ("gpt2", "phi", "falcon", "llama", "mistral")},
       "gpt2-1m": gpt2(128, 4, 4), "gpt2-5m": gpt2(256, 6, 8), "gpt2-20m": gpt2(512, 6, 8)}
GPT2_FAMILY = ("tiny-gpt2", "gpt2-1m", "gpt2-5m", "gpt2-20m")


def measure_factor(S, unlearners: dict, repeats: int, block: int, peak: float) -> dict:
    """Time every Unlearner on the same ``block`` steps (interleaved), then count FLOPs and tokens of them."""
    steps, fns = range(FIRST_STEP, FIRST_STEP + block), {k: S.stepper(u) for k, u in unlearners.items()}
    times = interleaved(fns, repeats, lambda r: steps, lambda: [f(t) for f in fns.values() for t in (1, 2)], S.dev)
    out = {}
    for label, u in unlearners.items():
        cpu, wall = ([x / block for x in times[label][c]] for c in ("cpu", "wall"))
        real, padded = S.tokens(u, steps)
        flops = sum(count_flops(lambda: [fns[label](t) for t in steps]).values()) / block
        med = stats(times[label][S.dev.judge])["median"] / block
        out[label] = {"params": n_params(u.model), "cpu": cpu, "wall": wall, "flops": flops, "tokens_real": real,
                      "tokens_padded": padded, "tokens_per_s": padded / med, "flop_per_s": flops / med,
                      "mfu": flops / med / peak}
    return out


def schedule_trial(S, base, n_forget: int) -> dict:
    """A paper-style trial from a fresh Unlearner: EPOCHS epochs over the forget set, then the final evaluation."""
    d = S.data.subset(n_forget, N_RETAIN)
    u = S.unlearner(clone(base), data=d)
    steps, step = math.ceil(EPOCHS * n_forget / u.cfg.batch_size), S.stepper(u)
    gc.collect()
    w0, c0 = S.dev.clocks()
    for t in range(1, steps + 1):
        step(t)
    w1, c1 = S.dev.clocks()
    q = min(n_forget, EVAL_CAP)
    for rows in (d.forget[:q], d.retain[:q]):
        evaluate_qa(u.model, d.tokenizer, rows, max_new_tokens=EVAL_NEW_TOKENS)
    w2, c2 = S.dev.clocks()
    return {"n_forget": n_forget, "steps": steps, "questions": 2 * q, "steps_cpu": c1 - c0, "steps_wall": w1 - w0,
            "eval_cpu": c2 - c1, "eval_wall": w2 - w1}


def slope(xs, ys) -> float:
    """Log-log least-squares slope: y ~ x^slope."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def paper_estimate() -> dict:
    """Per part of the paper grid (each part expanded on its own, a trial shared with an earlier part counted
    there only): trials, FLOPs of steps and AutoLR probes; stage-1 targets per task kind (upper bound)."""
    path = resolve_grid_path("paper")
    seen, targets, rows, total = set(), {}, [], {"trials": 0, "steps": 0.0, "probes": 0.0}
    for part in load_grid(path)["parts"]:
        specs = expand(load_grid(path.parent / part), run=load_grid(path)["name"])
        new = [s for s in specs if s.trial_id not in seen]
        seen.update(s.trial_id for s in specs)
        targets.update({s.target_hash: s for s in new})
        fl = [trial_flops(s) for s in new]
        rows.append({"part": os.path.splitext(part)[0], "trials": len(new), "of": len(specs),
                     "models": sorted({s.model["name"].split("/")[-1] for s in new}),
                     "shape": sorted({f"{s.steps} x 2 x {s.batch_size} x {row_tokens(s)}" for s in new}),
                     "steps_flops": sum(f["steps"] for f in fl), "probe_flops": sum(f["probes"] for f in fl),
                     "s_per_step": [p / (GPU_PEAK_BF16 * ASSUMED_MFU) for p in sorted({f["per_step"] for f in fl})]})
        for k, v in (("trials", len(new)), ("steps", rows[-1]["steps_flops"]), ("probes", rows[-1]["probe_flops"])):
            total[k] += v
    stage1 = {}
    for s in targets.values():
        e = stage1.setdefault(s.data["kind"], {"targets": 0, "flops": 0.0, "unknown": 0})
        rows_n = {"tofu": TOFU_ROWS, "vision": CIFAR_TRAIN}.get(s.data["kind"])   # MUSE: size unknown offline
        e["targets"] += 1
        e["unknown"] += rows_n is None
        e["flops"] += 0.0 if rows_n is None else s.target["max_epochs"] * rows_n * flops_per_row(s)[0]
    return {"parts": rows, "total": total, "stage1": stage1, "resnet50": resnet50_flops_per_image()}


def plot(factors: dict, schedule: dict, peak: float, path: str, clock: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    def curve(ax, res, xs, label, **kw):
        med = [stats(r[clock])["median"] * 1e3 for r in res]
        ax.errorbar(xs, med, yerr=[[m - min(r[clock]) * 1e3 for m, r in zip(med, res)],
                                   [max(r[clock]) * 1e3 - m for m, r in zip(med, res)]],
                    marker="o", capsize=3, label=label, **kw)

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, key, xlabel in ((axes[0, 0], "forget", "forget-set rows (retain 180)"),
                            (axes[0, 1], "retain", "retain-set rows (forget 20)"),
                            (axes[1, 0], "batch", "batch size (rows per split)")):
        res = list(factors[key].values())
        curve(ax, res, [r["x"] for r in res], "tiny-gpt2")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=f"{clock} ms / step", title=f"ms/step vs {key}")
        ax.set_xticks([r["x"] for r in res])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax, res = axes[0, 2], factors["model"]
    fam = [res[k] for k in GPT2_FAMILY if k in res]
    curve(ax, fam, [r["params"] for r in fam], "GPT-2 family")
    for k, r in res.items():
        if k not in GPT2_FAMILY:
            ax.plot(r["params"], stats(r[clock])["median"] * 1e3, "s", label=k)
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel=f"{clock} ms / step", title="ms/step vs model size")
    ax = axes[1, 1]
    ns = sorted(schedule)
    med = {k: [float(np.median([x[k] for x in schedule[n]])) for n in ns] for k in ("steps_cpu", "eval_cpu")}
    ax.plot(ns, med["steps_cpu"], "o-", label="steps")
    ax.plot(ns, np.add(med["steps_cpu"], med["eval_cpu"]), "s--", label="steps + final eval")
    ax.set(xscale="log", yscale="log", xlabel="forget-set rows", ylabel="CPU s per trial",
           title=f"trial time, {EPOCHS} epochs over the forget set")
    ax = axes[1, 2]
    for k, r in res.items():
        ax.plot(r["params"], r["flop_per_s"] / 1e9, "o")
        ax.annotate(k, (r["params"], r["flop_per_s"] / 1e9), fontsize=7)
    ax.axhline(peak / 1e9, color="grey", ls="--", label="torch.mm peak")
    ax.set(xscale="log", xlabel="parameters", ylabel="GFLOP/s", title="achieved FLOP/s vs model size")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def factor_rows(res: dict) -> list[list]:
    return [[k, f"{r['params'] / 1e6:.2f}M", f"{r['tokens_real']:.0f} / {r['tokens_padded']:.0f}",
             fmt_stats(stats(r["cpu"]), 1, scale=1e3), fmt_stats(stats(r["wall"]), 1, scale=1e3), f"{r['flops'] / 1e9:.2f}",
             f"{r['flops'] / (6 * r['params'] * r['tokens_padded']):.2f}", f"{r['tokens_per_s']:.0f}",
             f"{r['flop_per_s'] / 1e9:.1f}", f"{100 * r['mfu']:.0f} %"] for k, r in res.items()]


def run(args) -> dict:
    quick, plot_path = args.quick, os.path.join(tempfile.gettempdir() if args.quick else HERE, "scaling.png")
    S = setup(args, n_authors=100)   # 1000 rows: room for 160 forget + 640 retain, disjoint
    _, peak, _ = matmul_peak(S.dev, quick=quick)
    peak *= 1e9
    base = S.model("tiny-gpt2")
    sizes = {"forget": [10, 40, 160] if quick else [10, 20, 40, 80, 160],
             "retain": [20, 160, 640] if quick else [20, 40, 80, 160, 320, 640],
             "batch": [4, 16] if quick else [4, 8, 16, 32]}
    sched_sizes = [10, 20, 40] if quick else [10, 20, 40, 80, 160]
    (rep, block), (rep_model, block_model), rep_sched = ((2, 2), (2, 1), 1) if quick else ((8, 4), (5, 2), 3)
    split = {"forget": lambda n: (n, N_RETAIN, 8), "retain": lambda n: (N_FORGET, n, 8),
             "batch": lambda n: (N_FORGET, N_RETAIN, n)}
    factors = {}
    for key, xs in sizes.items():
        us = {f"{key} {x}" + (f"+{x}" if key == "batch" else ""): S.unlearner(
            clone(base), data=S.data.subset(*split[key](x)[:2]), batch_size=split[key](x)[2]) for x in xs}
        factors[key] = measure_factor(S, us, rep, block, peak)
        for x, r in zip(xs, factors[key].values()):
            r["x"] = x
    d0 = S.data.subset(N_FORGET, N_RETAIN)
    zoo = [k for k in ZOO if not quick or k in ("tiny-gpt2", "tiny-llama", "gpt2-1m", "gpt2-5m")]
    with torch.device(S.dev.kind):
        models = {k: S.unlearner(ZOO[k](d0).to(S.dev.kind), data=d0) for k in zoo}
    factors["model"] = measure_factor(S, models, rep_model, block_model, peak)
    del models
    gc.collect()
    schedule = {n: [] for n in sched_sizes}
    evaluate_qa(clone(base), S.data.tokenizer, S.data.rows[:8], max_new_tokens=EVAL_NEW_TOKENS)   # first-call costs
    for r in range(rep_sched):
        order = sched_sizes[r % len(sched_sizes):] + sched_sizes[:r % len(sched_sizes)]
        for n in (order[::-1] if r % 2 else order):
            schedule[n].append(schedule_trial(S, base, n))
    plot(factors, schedule, peak, plot_path, S.dev.judge)

    fam = [factors["model"][k] for k in GPT2_FAMILY if k in factors["model"]]
    med = (lambda r: stats(r[S.dev.judge])["median"])
    smed = (lambda n, k: float(np.median([x[k] for x in schedule[n]])))
    j = S.dev.clock
    fits = [(f"{j} s/step vs forget rows (tiny-gpt2, batch 8+8)", "0 (fixed batch: dataset size does not enter a step)",
             slope(sizes["forget"], [med(r) for r in factors["forget"].values()])),
            (f"{j} s/step vs retain rows (tiny-gpt2, batch 8+8)", "0",
             slope(sizes["retain"], [med(r) for r in factors["retain"].values()])),
            (f"{j} s/step vs batch rows per split (tiny-gpt2)", "-> 1 once fixed per-step costs are amortised",
             slope(sizes["batch"], [med(r) for r in factors["batch"].values()])),
            (f"{j} s/step vs parameters (GPT-2 {fam[0]['params'] / 1e6:.2f}M-{fam[-1]['params'] / 1e6:.0f}M)",
             "-> 1 once the weight matmuls dominate", slope([r["params"] for r in fam], [med(r) for r in fam])),
            ("FLOPs/step vs parameters (GPT-2 family)", "~1 (6 N T)",
             slope([r["params"] for r in fam], [r["flops"] for r in fam])),
            (f"trial CPU s, steps only ({EPOCHS} epochs) vs forget rows", "1 (steps = ceil(15 n / 8))",
             slope(sched_sizes, [smed(n, "steps_cpu") for n in sched_sizes])),
            ("final-eval CPU s vs evaluated questions", "<= 1 (batched generation, 32 per batch)",
             slope([schedule[n][0]["questions"] for n in sched_sizes], [smed(n, "eval_cpu") for n in sched_sizes]))]
    largest_name = [k for k in GPT2_FAMILY if k in factors["model"]][-1]
    largest = factors["model"][largest_name]
    mfu, est = largest["mfu"], paper_estimate()

    sched_rows = [[n, xs[0]["steps"], fmt_stats(stats([x["steps_cpu"] for x in xs]), 2),
                   f"{1e3 * smed(n, 'steps_cpu') / xs[0]['steps']:.1f}", xs[0]["questions"],
                   fmt_stats(stats([x["eval_cpu"] for x in xs]), 2),
                   fmt_stats(stats([x["steps_cpu"] + x["eval_cpu"] for x in xs]), 2),
                   fmt_stats(stats([x["steps_wall"] + x["eval_wall"] for x in xs]), 2), len(xs)]
                  for n, xs in schedule.items()]
    gh = (lambda f: f"{gpu_hours(f, ASSUMED_MFU):.1f}", lambda f: f"{gpu_hours(f, mfu):.1f}")
    part_rows = [[p["part"], f"{p['trials']} (of {p['of']})", ", ".join(p["models"]), "; ".join(p["shape"]),
                  f"{p['steps_flops'] / 1e15:.0f}", f"{p['probe_flops'] / 1e15:.1f}",
                  ", ".join(f"{s:.2f}" for s in p["s_per_step"]), *(g(p["steps_flops"] + p["probe_flops"]) for g in gh)]
                 for p in est["parts"]]
    tot = est["total"]
    tot_fl = tot["steps"] + tot["probes"]
    part_rows.append(["**all trials**", f"**{tot['trials']}**", "", "", f"**{tot['steps'] / 1e15:.0f}**",
                      f"**{tot['probes'] / 1e15:.1f}**", "", *(f"**{g(tot_fl)}**" for g in gh)])
    s1 = 0.0
    for kind, e in est["stage1"].items():
        if e["unknown"] == e["targets"]:
            part_rows.append([f"stage 1: {kind} targets", f"{e['targets']} targets", "",
                              "not estimated (corpus size not known offline)", "", "", "", "?", "?"])
            continue
        s1 += e["flops"]
        part_rows.append([f"stage 1: {kind} targets (upper bound)", f"{e['targets']} targets", "",
                          f"<= {TOFU_ROWS if kind == 'tofu' else CIFAR_TRAIN} {'rows' if kind == 'tofu' else 'images'} "
                          "x max_epochs", f"{e['flops'] / 1e15:.0f}", "", "", *(g(e["flops"]) for g in gh)])
    part_rows.append(["**trials + stage 1 (estimated parts)**", "", "", "", f"**{(tot_fl + s1) / 1e15:.0f}**", "", "",
                      *(f"**{g(tot_fl + s1)}**" for g in gh)])

    pad = next(iter(factors["forget"].values()))
    notes = [
        f"Plot: `{plot_path if quick else os.path.relpath(plot_path, os.path.dirname(HERE))}` (ms/step vs forget, retain, "
        "parameters and batch size; trial time vs forget size; achieved FLOP/s vs parameters). Matmul peak: "
        f"harness.matmul_peak (best median square torch.mm), {S.dev.name}: {peak / 1e9:.1f} GFLOP/s; the MFU used "
        f"below is the largest GPT-2's ({largest_name}, {largest['params'] / 1e6:.1f}M): {100 * mfu:.0f} %.",
        "FLOPs: FlopCounterMode counts matmuls, convolutions and attention of forward and backward (the CPU flash "
        "attention kernel via torch's sdpa formula; the previous code left it out, so its FLOPs / (6 N T) read a few % "
        "lower); norms, softmax, Adam and NGDiff's dots are not counted. FLOPs / (6 N T_padded) near 1: the 6 N T rule "
        "holds (N includes the position embeddings; attention adds 12 L d T per token).",
        "Per-step cost does not depend on the forget or retain set size (fixed batch; differences come from the rows' "
        "padded lengths); a trial's cost scales with the forget set through its number of steps (a fixed number of "
        "epochs, the paper: 15) and of evaluated questions. Trial table: fresh tiny-gpt2 Unlearner per trial (random "
        f"init: every answer runs the full {EVAL_NEW_TOKENS} new tokens, the worst case); final evaluation = "
        "sweeper.metrics.evaluate.evaluate_qa (ROUGE-L/exact, answer NLL); Truth Ratio, Model Utility and curve evaluations "
        "not included.",
        f"Built-in rows: {np.mean([len(x['input_ids']) for x in QADataset(S.data.rows, S.data.tokenizer)]):.1f} tokens "
        f"on average in the data's {len(S.data.tokenizer)}-token BPE (padded: "
        f"{pad['tokens_padded'] / pad['tokens_real']:.2f}x at batch 8+8); shorter than TOFU's, so the GPU estimate "
        "does not use them.",
        "GPU estimate: trials as `python -m sweeper.launch --grid paper` expands them; sweeper.cluster.estimate's FLOPs per "
        f"trained row (6 N + 12 L d T) T with the published models' N, L, d, T = {TOFU_TOKENS_PER_ROW} tokens per TOFU "
        "row (ASSUMED) and 512 per MUSE chunk, x 2 batches x batch x steps, + AutoLR's 2 probe forwards every K steps; "
        f"ResNet-50 ({est['resnet50'][0] / 1e6:.1f}M): {est['resnet50'][1] / 1e9:.2f} GFLOP per image. Not counted: "
        f"evaluation, loading, Ray, MUSE retrained references. GPU-hours = FLOPs / ({GPU_PEAK_BF16 / 1e12:.0f} TFLOP/s "
        f"x MFU) at an ASSUMED {100 * ASSUMED_MFU:.0f} % MFU and at the MFU MEASURED here ({100 * mfu:.0f} %, "
        f"{S.dev.name}: a proxy unless measured on the GPU). Stage 1 is an upper bound (max_epochs full passes).",
    ]
    summary = [{"what": w, "target": "(informational)", "value": f"log-log slope {s:.2f} (expected {e})",
                "met": None, "why": ""} for w, e, s in (fits[0], fits[1], fits[3], fits[5])]
    summary += [{"what": f"achieved FLOP/s on this {'GPU' if S.dev.cuda else 'CPU'} ({largest_name}, NGDiff step)",
                 "target": "(informational)", "met": None, "why": "",
                 "value": f"{largest['flop_per_s'] / 1e9:.1f} GFLOP/s = {100 * mfu:.0f} % of the mm peak "
                          f"{peak / 1e9:.1f} GFLOP/s"},
                {"what": f"paper grid on GPUs, {tot['trials']} trials (steps + AutoLR probes)", "target": "(estimate)",
                 "met": None, "why": "", "value": f"{gpu_hours(tot_fl, ASSUMED_MFU):.1f} GPU-h at "
                 f"{100 * ASSUMED_MFU:.0f} % MFU, {gpu_hours(tot_fl, mfu):.1f} at the measured {100 * mfu:.0f} %; "
                 f"stage 1 adds <= {gpu_hours(s1, ASSUMED_MFU):.1f}"}]
    cols = ["config", "params", "tokens/step (real / padded)", "CPU ms/step", "wall ms/step", "GFLOP/step",
            "FLOPs / (6 N T_padded)", f"tokens/s (padded, {j})", "GFLOP/s", "of mm peak"]
    return {"title": "6. Scaling of cost with work", "summary": summary, "notes": notes,
            "intro": [f"sweeper.unlearn.loop.Unlearner steps, NGDiff, Adam lr 1e-3, static lr, no evaluation inside the timed "
                      f"steps; {S.dev.name}; every configuration of a factor runs the same {block} steps (from step "
                      f"{FIRST_STEP}, after 2 warm-up steps) per repeat, interleaved, order rotated; {rep} repeats "
                      f"({rep_model} x {block_model} steps for the model factor). Cells: min / **median** / max per "
                      "step; FLOPs of the same steps."],
            "tables": [{"caption": f"(a) Forget-set size (tiny-gpt2, retain {N_RETAIN} rows, batch 8+8)", "columns": cols,
                        "rows": factor_rows(factors["forget"])},
                       {"caption": f"(b) Retain-set size (tiny-gpt2, forget {N_FORGET} rows, batch 8+8)", "columns": cols,
                        "rows": factor_rows(factors["retain"])},
                       {"caption": f"(c) Model size (forget {N_FORGET} / retain {N_RETAIN} rows, batch 8+8)",
                        "columns": cols, "rows": factor_rows(factors["model"])},
                       {"caption": "(d) Batch size (tiny-gpt2; rows per split per step)", "columns": cols,
                        "rows": factor_rows(factors["batch"])},
                       {"caption": f"(e) Trial time for a paper-style schedule: {EPOCHS} epochs over the forget set, "
                                   "batch 8+8, tiny-gpt2, then one final evaluation (CPU seconds)",
                        "columns": ["forget rows", "steps", "steps CPU s", "CPU ms/step", "eval questions", "eval CPU s",
                                    "trial CPU s", "trial wall s", "repeats"], "rows": sched_rows},
                       {"caption": "Fitted log-log slopes (numpy.polyfit on the medians)",
                        "columns": ["curve", "slope", "expected"], "rows": [[w, f"{s:.2f}", e] for w, e, s in fits]},
                       {"caption": "(f) The paper grid (`--grid paper`) on GPUs, estimated from FLOPs (PFLOP = 1e15; "
                                   "shape = steps x 2 batches x batch x tokens per row, 1 image for ResNet-50)",
                        "columns": ["part", "trials (new)", "models", "shape", "steps PFLOP", "AutoLR probes PFLOP",
                                    f"s/step @ {100 * ASSUMED_MFU:.0f} % MFU", f"GPU-h @ {100 * ASSUMED_MFU:.0f} % MFU",
                                    f"GPU-h @ {100 * mfu:.0f} % (measured)"], "rows": part_rows}],
            "raw": {"peak_flop_per_s": peak, "factors": factors, "schedule": {str(k): v for k, v in schedule.items()},
                    "fits": [{"curve": w, "expected": e, "slope": s} for w, e, s in fits], "paper_estimate": est,
                    "plot": plot_path, "threads": THREADS}}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
