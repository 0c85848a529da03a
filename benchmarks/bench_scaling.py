"""Benchmark 6: scaling of cost with work -- ms/step vs forget size, retain size, model size and batch size,
trial time for a paper-style schedule, FLOPs and throughput, and a GPU-hour estimate of the paper grid.

What is measured (CPU, torch threads = common.THREADS, CPU time = ``time.process_time``):

* **ms/step vs one factor at a time**: sweeper.loop.Unlearner steps (NGDiff, Adam lr 1e-3, batch 8 retain
  + 8 forget rows as in common.make_unlearner, static lr, no evaluation) on (a) forget sets of 10..160
  rows, (b) retain sets of 20..640 rows, (c) models from 0.4M to ~20M parameters (the five tiny twins of
  sweeper.models and GPT-2s built from transformers.GPT2Config like common.gpt2_5m), (d) batch sizes
  4..32. Every configuration gets its own Unlearner; all of a factor's configurations run the *same*
  step indices (so the same tokens in every repeat), interleaved in blocks with the order rotated
  (common.interleaved); cells are min / **median** / max over the repeats.
* **FLOPs** of those very steps, counted once afterwards with ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions and attention; elementwise ops are not counted), hence tokens/s, achieved
  FLOP/s and its share of this CPU's own float32 matmul peak (``torch.mm`` 2048 x 2048, best of a few).
* **Trial time for a paper-style schedule**: 15 epochs over the forget set, steps = ceil(15 n_forget / 8),
  from a fresh Unlearner, plus one final evaluation (ROUGE-L/exact/NLL via sweeper.evaluate.evaluate_qa on
  min(n_forget, 100) forget and as many retain questions, 24 new tokens); steps and evaluation timed apart.
* **Log-log slopes** (numpy.polyfit) of each curve.
* **GPU-hour estimate of ``--grid paper``** from FLOPs: every trial of every part (as sweeper.grid expands
  it), ~(6 N + 12 L d T) FLOPs per trained token x 2 batches (retain + forget) x batch x T x steps, plus
  AutoLR's two probe forwards of the retain batch every K steps, converted to GPU-hours at an assumed
  35 % MFU of an H100/H200's 989 TFLOP/s bf16 dense peak and at the MFU measured here on the CPU.

The plot goes to ``benchmarks/scaling.png``.

    python benchmarks/bench_scaling.py [--quick] [--json out.json]
"""
from __future__ import annotations

import copy
import gc
import math
import os
import time

import numpy as np
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from common import (THREADS, Data, clone, fmt_stats, gpt2_5m, interleaved, main, make_unlearner, n_params,  # first
                    stats, tiny_model)
from sweeper.data.qa import QADataset  # noqa: E402
from sweeper.evaluate import evaluate_qa  # noqa: E402
from sweeper.estimate import (ASSUMED_MFU, GPU_PEAK_BF16, TOFU_TOKENS_PER_ROW, flops_per_row,  # noqa: E402
                               gpu_hours, resnet50_flops_per_image, row_tokens, trial_flops)
from sweeper.grid import expand, load_grid, resolve_grid_path  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PLOT = os.path.join(HERE, "scaling.png")

#: The default split sizes (the smoke/demo grids: 20 authors x 10 QA, forget10) while another factor varies.
N_FORGET, N_RETAIN = 20, 180
EPOCHS = 15                  # the paper unlearns for 15 epochs over the forget set (Appendix F)
EVAL_CAP, EVAL_NEW_TOKENS = 100, 24
FIRST_STEP = 3               # steps 1-2 are the warm-up; every repeat times the same steps from here

TOFU_ROWS, CIFAR_TRAIN = 4000, 50_000   # TOFU full = 200 authors x 20 QA; CIFAR-10/100 training images


# ---------------------------------------------------------------- data and models


def subset(data: Data, n_forget: int, n_retain: int) -> Data:
    """A view of ``data`` with the last ``n_forget`` rows as forget set and the first ``n_retain`` as retain
    set (disjoint); same tokenizer, so token lengths stay comparable across sizes."""
    if n_forget + n_retain > len(data.rows):
        raise ValueError(f"{n_forget} + {n_retain} rows exceed the {len(data.rows)} generated")
    out = copy.copy(data)
    out.forget, out.retain = data.rows[-n_forget:], data.rows[:n_retain]
    out.forget_ds, out.retain_ds = QADataset(out.forget, data.tokenizer), QADataset(out.retain, data.tokenizer)
    return out


def gpt2(d: int, layers: int, heads: int):
    """A GPT-2 of width ``d`` and depth ``layers``, the recipe of common.gpt2_5m (which is d=256, 6 layers)."""
    def build(data: Data, seed: int = 0):
        tok = data.tokenizer
        torch.manual_seed(seed)
        cfg = transformers.GPT2Config(vocab_size=len(tok), n_embd=d, n_layer=layers, n_head=heads, n_inner=4 * d,
                                      n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                      bos_token_id=tok.eos_token_id)
        return transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return build


def model_zoo() -> dict:
    """name -> builder. GPT-2 family (for the fit): tiny-gpt2 0.43M, ~1M, 5M, ~20M; the other twins as points."""
    zoo = {f"tiny-{a}": (lambda data, a=a: tiny_model(data, a)) for a in ("gpt2", "phi", "falcon", "llama", "mistral")}
    zoo.update({"gpt2-1m": gpt2(128, 4, 4), "gpt2-5m": gpt2_5m, "gpt2-20m": gpt2(512, 6, 8)})
    return zoo


GPT2_FAMILY = ("tiny-gpt2", "gpt2-1m", "gpt2-5m", "gpt2-20m")


# ---------------------------------------------------------------- measurement


def cpu_matmul_peak(n: int = 2048, reps: int = 4) -> float:
    """This CPU's float32 matmul FLOP/s at THREADS threads: best of ``reps`` torch.mm of n x n (CPU time)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        c0 = time.process_time()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.process_time() - c0))
    return best


def step_tokens(u, steps) -> tuple[float, float]:
    """(real, padded) tokens per step over ``steps``, retain + forget batches (padded is what is computed)."""
    real = padded = 0
    for t in steps:
        for split, ds in (("retain", u.retain_ds), ("forget", u.forget_ds)):
            batch = u.collate([ds[i] for i in u.batches.indices(split, t)])
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    return real / len(steps), padded / len(steps)


def count_flops(u, steps) -> float:
    """FLOPs per step of these very steps (run again under FlopCounterMode, after the timing)."""
    with FlopCounterMode(display=False) as fc:
        for t in steps:
            u.step(t)
    return fc.get_total_flops() / len(steps)


def measure_factor(unlearners: dict, repeats: int, block: int, peak: float) -> dict:
    """Time every Unlearner on the same ``block`` steps (interleaved, order rotated), then count FLOPs and
    tokens of those steps. Returns {label: {cpu, wall (s/step lists), flops, tokens_real, tokens_padded, ...}}."""
    steps = range(FIRST_STEP, FIRST_STEP + block)

    def warmup():
        for u in unlearners.values():
            for t in range(1, FIRST_STEP):
                u.step(t)

    times = interleaved({k: u.step for k, u in unlearners.items()}, repeats, lambda r: steps, warmup)
    out = {}
    for label, u in unlearners.items():
        cpu = [x / block for x in times[label]["cpu"]]
        wall = [x / block for x in times[label]["wall"]]
        real, padded = step_tokens(u, steps)
        flops = count_flops(u, steps)
        med = stats(cpu)["median"]
        out[label] = {"params": n_params(u.model), "cpu": cpu, "wall": wall, "flops": flops, "tokens_real": real,
                      "tokens_padded": padded, "tokens_per_s": padded / med, "flop_per_s": flops / med,
                      "mfu_cpu": flops / med / peak}
    return out


def factor_unlearners(base, data: Data, configs: dict) -> dict:
    """label -> Unlearner on a clone of ``base``; configs: label -> (n_forget, n_retain, batch_size)."""
    return {label: make_unlearner(clone(base), subset(data, nf, nr), batch_size=bs)
            for label, (nf, nr, bs) in configs.items()}


def schedule_trial(base, data: Data, n_forget: int) -> dict:
    """One paper-style trial from a fresh Unlearner: EPOCHS epochs over the forget set (batch 8), then one
    final evaluation on min(n_forget, EVAL_CAP) forget and as many retain questions."""
    d = subset(data, n_forget, N_RETAIN)
    u = make_unlearner(clone(base), d)
    steps = math.ceil(EPOCHS * n_forget / u.cfg.batch_size)
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    for t in range(1, steps + 1):
        u.step(t)
    c1, w1 = time.process_time(), time.perf_counter()
    q = min(n_forget, EVAL_CAP)
    for rows in (d.forget[:q], d.retain[:q]):
        evaluate_qa(u.model, d.tokenizer, rows, max_new_tokens=EVAL_NEW_TOKENS)
    return {"n_forget": n_forget, "steps": steps, "questions": 2 * q, "steps_cpu": c1 - c0, "steps_wall": w1 - w0,
            "eval_cpu": time.process_time() - c1, "eval_wall": time.perf_counter() - w1}


def measure_schedule(base, data: Data, sizes: list[int], repeats: int) -> dict:
    """{n_forget: [trial dicts]}: the sizes' trials interleaved, order rotated each repeat."""
    # Untimed warm-up of generation: its first call pays one-off allocations (~1 s) that would land on
    # whichever trial came first.
    evaluate_qa(clone(base), data.tokenizer, data.rows[:8], max_new_tokens=EVAL_NEW_TOKENS)
    out = {n: [] for n in sizes}
    for r in range(repeats):
        order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
        for n in (order[::-1] if r % 2 else order):
            out[n].append(schedule_trial(base, data, n))
    return out


def slope(xs, ys) -> float:
    """Log-log least-squares slope: y ~ x^slope."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


# ---------------------------------------------------------------- paper grid estimate


def paper_parts() -> list[tuple[str, list]]:
    """[(part name, its TrialSpecs)], each part expanded on its own as sweeper.grid.expand_grid does."""
    path = resolve_grid_path("paper")
    doc = load_grid(path)
    return [(os.path.splitext(part)[0], expand(load_grid(path.parent / part), run=doc["name"]))
            for part in doc["parts"]]


def target_flops(spec) -> float | None:
    """Upper bound of one stage-1 fine-tune (max_epochs over forget + retain, no early stop at the gate),
    or None where the training-set size is not known offline (MUSE)."""
    train_row, _ = flops_per_row(spec)
    rows = {"tofu": TOFU_ROWS, "vision": CIFAR_TRAIN}.get(spec.data["kind"])
    return None if rows is None else spec.target["max_epochs"] * rows * train_row


def paper_estimate(mfu_measured: float) -> dict:
    """Per part of the paper grid: trials (new ones only: a trial shared with an earlier part runs once),
    FLOPs, GPU-hours at the assumed and at the measured MFU; stage-1 targets as separate rows."""
    vision = resnet50_flops_per_image()
    seen, targets, rows, total = set(), {}, [], {"trials": 0, "steps": 0.0, "probes": 0.0}
    for part, specs in paper_parts():
        new = [s for s in specs if s.trial_id not in seen]
        seen.update(s.trial_id for s in specs)
        for s in new:
            targets.setdefault(s.target_hash, s)
        fl = [trial_flops(s) for s in new]
        steps, probes = sum(f["steps"] for f in fl), sum(f["probes"] for f in fl)
        per_step = sorted({f["per_step"] for f in fl})
        models = sorted({s.model["name"].split("/")[-1] for s in new})
        shape = sorted({f"{s.steps} x 2 x {s.batch_size} x {row_tokens(s)}"
                        for s in new})
        rows.append({"part": part, "trials": len(new), "of": len(specs), "models": models, "shape": shape,
                     "steps_flops": steps, "probe_flops": probes,
                     "s_per_step": [p / (GPU_PEAK_BF16 * ASSUMED_MFU) for p in per_step]})
        total["trials"] += len(new)
        total["steps"] += steps
        total["probes"] += probes
    stage1 = {}
    for s in targets.values():
        k = s.data["kind"]
        entry = stage1.setdefault(k, {"targets": 0, "flops": 0.0, "unknown": 0})
        entry["targets"] += 1
        f = target_flops(s)
        if f is None:
            entry["unknown"] += 1
        else:
            entry["flops"] += f
    return {"parts": rows, "total": total, "stage1": stage1, "resnet50": {"params": vision[0], "flops_per_image": vision[1]},
            "mfu_measured": mfu_measured}


# ---------------------------------------------------------------- plot


def plot(factors: dict, schedule: dict, peak: float, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import LogFormatter, NullFormatter, ScalarFormatter

    def plain_log(ax, xs):
        """Log axes labelled with plain numbers: x ticks at the measured values, y with matplotlib's thinning."""
        ax.set_xticks(list(xs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))

    def errorbar(ax, xs, res, **kw):
        med = [stats(r["cpu"])["median"] * 1e3 for r in res]
        lo = [m - min(r["cpu"]) * 1e3 for m, r in zip(med, res)]
        hi = [max(r["cpu"]) * 1e3 - m for m, r in zip(med, res)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, **kw)

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, key, xlabel in ((axes[0, 0], "forget", "forget-set rows (retain 180)"),
                            (axes[0, 1], "retain", "retain-set rows (forget 20)")):
        res = factors[key]
        errorbar(ax, [v["x"] for v in res.values()], list(res.values()), label="tiny-gpt2")
        ax.set_xscale("log")
        ax.set_ylim(0, None)
        ax.set(xlabel=xlabel, ylabel="CPU ms / step", title=f"ms/step vs {key} size (batch 8+8)")
        plain_log(ax, [v["x"] for v in res.values()])
        ax.legend()
    ax = axes[0, 2]
    res = factors["model"]
    fam = [res[k] for k in GPT2_FAMILY if k in res]
    errorbar(ax, [r["params"] for r in fam], fam, label="GPT-2 family")
    for k, r in res.items():
        if k not in GPT2_FAMILY:
            ax.plot(r["params"], stats(r["cpu"])["median"] * 1e3, "s", label=k)
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="CPU ms / step", title="ms/step vs model size")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    res = factors["batch"]
    errorbar(ax, [v["x"] for v in res.values()], list(res.values()), label="tiny-gpt2")
    ax.set(xscale="log", yscale="log", xlabel="batch size (rows per split)", ylabel="CPU ms / step",
           title="ms/step vs batch size")
    plain_log(ax, [v["x"] for v in res.values()])
    ax.legend()
    ax = axes[1, 1]
    ns = sorted(schedule)
    med = lambda n, k: float(np.median([x[k] for x in schedule[n]]))  # noqa: E731
    ax.plot(ns, [med(n, "steps_cpu") for n in ns], "o-", label="steps")
    ax.plot(ns, [med(n, "steps_cpu") + med(n, "eval_cpu") for n in ns], "s--", label="steps + final eval")
    ax.set(xscale="log", yscale="log", xlabel="forget-set rows", ylabel="CPU s per trial",
           title=f"trial time, {EPOCHS} epochs over the forget set")
    plain_log(ax, ns)
    ax.legend()
    ax = axes[1, 2]
    allres = factors["model"]
    ax.plot([r["params"] for r in allres.values()], [r["flop_per_s"] / 1e9 for r in allres.values()], "o")
    for k, r in allres.items():
        ax.annotate(k, (r["params"], r["flop_per_s"] / 1e9), fontsize=7)
    ax.axhline(peak / 1e9, color="grey", ls="--", label=f"torch.mm peak ({THREADS} thread)")
    ax.set(xscale="log", xlabel="parameters", ylabel="GFLOP/s (FlopCounterMode / CPU time)",
           title="achieved FLOP/s vs model size")
    ax.set_ylim(0, None)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- tables


def factor_rows(res: dict) -> list[list]:
    rows = []
    for k, r in res.items():
        rows.append([k, f"{r['params'] / 1e6:.2f}M", f"{r['tokens_real']:.0f} / {r['tokens_padded']:.0f}",
                     fmt_stats(stats([x * 1e3 for x in r["cpu"]]), 1), fmt_stats(stats([x * 1e3 for x in r["wall"]]), 1),
                     f"{r['flops'] / 1e9:.2f}", f"{r['flops'] / (6 * r['params'] * r['tokens_padded']):.2f}",
                     f"{r['tokens_per_s']:.0f}", f"{r['flop_per_s'] / 1e9:.1f}", f"{100 * r['mfu_cpu']:.0f} %"])
    return rows


FACTOR_COLUMNS = ["config", "params", "tokens/step (real / padded)", "CPU ms/step", "wall ms/step", "GFLOP/step",
                  "FLOPs / (6 N T_padded)", "tokens/s (padded, CPU)", "GFLOP/s", "of CPU mm peak"]


def run(args) -> dict:
    quick = args.quick
    peak = cpu_matmul_peak(reps=3 if quick else 5)
    data = Data(n_authors=100, qa_per_author=10)   # 1000 rows: room for 160 forget + 640 retain, disjoint
    base = tiny_model(data, "gpt2")

    forget_sizes = [10, 40, 160] if quick else [10, 20, 40, 80, 160]
    retain_sizes = [20, 160, 640] if quick else [20, 40, 80, 160, 320, 640]
    batch_sizes = [4, 16] if quick else [4, 8, 16, 32]
    sched_sizes = [10, 20, 40] if quick else [10, 20, 40, 80, 160]
    rep, block = (2, 2) if quick else (8, 4)
    rep_model, block_model = (2, 1) if quick else (5, 2)
    rep_schedule = 1 if quick else 3

    factors = {}
    configs = {f"forget {n}": (n, N_RETAIN, 8) for n in forget_sizes}
    factors["forget"] = measure_factor(factor_unlearners(base, data, configs), rep, block, peak)
    for n, r in zip(forget_sizes, factors["forget"].values()):
        r["x"] = n
    configs = {f"retain {n}": (N_FORGET, n, 8) for n in retain_sizes}
    factors["retain"] = measure_factor(factor_unlearners(base, data, configs), rep, block, peak)
    for n, r in zip(retain_sizes, factors["retain"].values()):
        r["x"] = n
    configs = {f"batch {b}+{b}": (N_FORGET, N_RETAIN, b) for b in batch_sizes}
    factors["batch"] = measure_factor(factor_unlearners(base, data, configs), rep, block, peak)
    for b, r in zip(batch_sizes, factors["batch"].values()):
        r["x"] = b
    gc.collect()
    d0 = subset(data, N_FORGET, N_RETAIN)
    models = {name: make_unlearner(build(d0), d0) for name, build in model_zoo().items()}
    factors["model"] = measure_factor(models, rep_model, block_model, peak)
    del models
    gc.collect()

    schedule = measure_schedule(base, data, sched_sizes, rep_schedule)
    plot(factors, schedule, peak, PLOT)

    # --- slopes
    fam = [factors["model"][k] for k in GPT2_FAMILY]
    med = lambda r: stats(r["cpu"])["median"]  # noqa: E731
    smed = lambda n, k: float(np.median([x[k] for x in schedule[n]]))  # noqa: E731
    fits = [
        ("CPU s/step vs forget rows (tiny-gpt2, batch 8+8)", "0 (fixed batch: dataset size does not enter a step)",
         slope(forget_sizes, [med(r) for r in factors["forget"].values()])),
        ("CPU s/step vs retain rows (tiny-gpt2, batch 8+8)", "0",
         slope(retain_sizes, [med(r) for r in factors["retain"].values()])),
        ("CPU s/step vs batch rows per split (tiny-gpt2)", "-> 1 once fixed per-step costs are amortised",
         slope(batch_sizes, [med(r) for r in factors["batch"].values()])),
        ("CPU s/step vs parameters (GPT-2 0.43M-20M)", "-> 1 once the weight matmuls dominate",
         slope([r["params"] for r in fam], [med(r) for r in fam])),
        ("FLOPs/step vs parameters (GPT-2 0.43M-20M)", "~1 (6 N T)",
         slope([r["params"] for r in fam], [r["flops"] for r in fam])),
        (f"trial CPU s, steps only ({EPOCHS} epochs) vs forget rows", "1 (steps = ceil(15 n / 8))",
         slope(sched_sizes, [smed(n, "steps_cpu") for n in sched_sizes])),
        ("final-eval CPU s vs evaluated questions", "<= 1 (batched generation, 32 per batch)",
         slope([schedule[n][0]["questions"] for n in sched_sizes], [smed(n, "eval_cpu") for n in sched_sizes])),
    ]

    largest = factors["model"]["gpt2-20m"]
    mfu = largest["mfu_cpu"]
    est = paper_estimate(mfu)

    # --- tables
    sched_rows = []
    for n in sched_sizes:
        xs = schedule[n]
        sched_rows.append([n, xs[0]["steps"], fmt_stats(stats([x["steps_cpu"] for x in xs]), 2),
                           f"{1e3 * smed(n, 'steps_cpu') / xs[0]['steps']:.1f}", xs[0]["questions"],
                           fmt_stats(stats([x["eval_cpu"] for x in xs]), 2),
                           fmt_stats(stats([x["steps_cpu"] + x["eval_cpu"] for x in xs]), 2),
                           fmt_stats(stats([x["steps_wall"] + x["eval_wall"] for x in xs]), 2), len(xs)])
    part_rows = []
    for p in est["parts"]:
        fl = p["steps_flops"] + p["probe_flops"]
        part_rows.append([p["part"], f"{p['trials']} (of {p['of']})", ", ".join(p["models"]), "; ".join(p["shape"]),
                          f"{p['steps_flops'] / 1e15:.0f}", f"{p['probe_flops'] / 1e15:.1f}",
                          ", ".join(f"{s:.2f}" for s in p["s_per_step"]),
                          f"{gpu_hours(fl, ASSUMED_MFU):.1f}", f"{gpu_hours(fl, mfu):.1f}"])
    tot = est["total"]
    tot_fl = tot["steps"] + tot["probes"]
    part_rows.append(["**all trials**", f"**{tot['trials']}**", "", "", f"**{tot['steps'] / 1e15:.0f}**",
                      f"**{tot['probes'] / 1e15:.1f}**", "", f"**{gpu_hours(tot_fl, ASSUMED_MFU):.1f}**",
                      f"**{gpu_hours(tot_fl, mfu):.1f}**"])
    s1_total = 0.0
    for kind, e in est["stage1"].items():
        if e["unknown"] == e["targets"]:
            part_rows.append([f"stage 1: {kind} targets", f"{e['targets']} targets", "", "not estimated (corpus size "
                              "not known offline)", "", "", "", "?", "?"])
            continue
        s1_total += e["flops"]
        what = (f"<= {TOFU_ROWS} rows x max_epochs" if kind == "tofu" else f"<= {CIFAR_TRAIN} images x max_epochs")
        part_rows.append([f"stage 1: {kind} targets (upper bound)", f"{e['targets']} targets", "", what,
                          f"{e['flops'] / 1e15:.0f}", "", "", f"{gpu_hours(e['flops'], ASSUMED_MFU):.1f}",
                          f"{gpu_hours(e['flops'], mfu):.1f}"])
    part_rows.append(["**trials + stage 1 (estimated parts)**", "", "", "", f"**{(tot_fl + s1_total) / 1e15:.0f}**", "",
                      "", f"**{gpu_hours(tot_fl + s1_total, ASSUMED_MFU):.1f}**",
                      f"**{gpu_hours(tot_fl + s1_total, mfu):.1f}**"])

    mean_row = float(np.mean([len(x["input_ids"]) for x in QADataset(data.rows, data.tokenizer)]))
    pad = next(iter(factors["forget"].values()))
    notes = [
        f"Plot: `{os.path.relpath(PLOT, os.path.dirname(HERE))}` (ms/step vs forget size, retain size, parameters and "
        f"batch size; trial time vs forget size; achieved FLOP/s vs parameters).",
        f"CPU matmul peak: torch.mm 2048 x 2048 float32, {THREADS} thread(s), best of a few: {peak / 1e9:.1f} GFLOP/s. "
        f"The measured MFU used below is the largest model's (gpt2-20m, {largest['params'] / 1e6:.1f}M): "
        f"{100 * mfu:.0f} % of that peak (FlopCounterMode FLOPs / median CPU time).",
        "FLOPs: FlopCounterMode counts matmuls, convolutions and attention of forward and backward; layer norms, "
        "softmax, Adam's update and NGDiff's norms/dot products (a few FLOPs per parameter per step) are not "
        "counted. FLOPs / (6 N T_padded) near 1 says the 6 N T rule holds on these models (N includes the "
        "position embeddings, which cost no matmul; attention adds 12 L d T per token).",
        "Per-step cost does not depend on the forget or retain set size (fixed batch, fixed number of "
        "steps); differences between sizes come from the rows drawn (their padded length). The cost of a "
        "trial scales with the forget set only through the number of steps when the schedule is a fixed "
        "number of epochs over it (the paper: 15 epochs), and through the number of evaluated questions.",
        f"Trial-time table: fresh tiny-gpt2 Unlearner per trial (random init, so greedy answers never stop at "
        f"EOS and every answer runs the full {EVAL_NEW_TOKENS} new tokens: the evaluation's worst case); final "
        "evaluation = sweeper.evaluate.evaluate_qa (greedy answers -> ROUGE-L/exact, answer NLL) on the forget "
        "questions and as many retain questions; TOFU's likelihood metrics (Truth Ratio, Model Utility) and the "
        "curve evaluations every `eval.every` steps are not included.",
        f"Built-in rows: {mean_row:.1f} tokens on average in the data's own {len(data.tokenizer)}-token BPE "
        f"(padded to the batch's longest: {pad['tokens_padded'] / pad['tokens_real']:.2f}x the real tokens at batch "
        "8+8). They are shorter than TOFU's, so the GPU estimate does not use them.",
        "GPU estimate, assumptions: trials as `python -m sweeper.launch --grid paper` expands them (each part "
        "on its own; a trial that an earlier part already has is counted there only); FLOPs per trained row "
        f"(6 N + 12 L d T) T with N, L, d of the published models, T = {TOFU_TOKENS_PER_ROW} tokens per TOFU "
        "row (ASSUMED: TOFU QA pairs are ~60-100 tokens with the prompt template, padded to a batch of 32's "
        "longest) and T = max_length = 512 for MUSE chunks (assumed full); x 2 batches (retain + forget) x "
        "batch x steps, as the loop runs every method (GA/NPO included); AutoLR: 2 forward passes of the retain "
        f"batch every K steps; ResNet-50 (CIFAR stem, {est['resnet50']['params'] / 1e6:.1f}M): "
        f"{est['resnet50']['flops_per_image'] / 1e9:.2f} GFLOP forward+backward per 32x32 image, counted with "
        "FlopCounterMode. Not counted: evaluation (greedy generation is memory-bound on a GPU, its time is "
        "not a FLOP count), model loading, Ray start-up, the MUSE retrained references.",
        f"GPU-hours = FLOPs / ({GPU_PEAK_BF16 / 1e12:.0f} TFLOP/s x MFU): H100 SXM / H200 bf16 dense peak, at an "
        f"ASSUMED {100 * ASSUMED_MFU:.0f} % MFU, and at the MFU MEASURED here on the CPU ({100 * mfu:.0f} % of its own "
        "float32 matmul peak, batch 8+8 on a 20M model) -- a proxy only: no GPU was available, nothing was "
        "run on one. 's/step' is a step's FLOPs at the assumed MFU (sweeper.launch --dry-run assumes a flat "
        "0.5 s per GPU step for every model).",
        "Stage 1 (the No-unlearn targets each trial starts from) is an upper bound: max_epochs full passes "
        f"over TOFU's {TOFU_ROWS} rows / CIFAR's {CIFAR_TRAIN} images; the exact-match gate usually stops earlier.",
    ]
    summary = [{"what": w, "target": "(informational)", "value": f"log-log slope {s:.2f} (expected {e})",
                "met": None, "why": ""} for w, e, s in (fits[0], fits[1], fits[3], fits[5])]
    summary.append({"what": "achieved FLOP/s on this CPU (gpt2-20m, NGDiff step)", "target": "(informational)",
                    "value": f"{largest['flop_per_s'] / 1e9:.1f} GFLOP/s = {100 * mfu:.0f} % of the {THREADS}-thread "
                             f"mm peak {peak / 1e9:.1f} GFLOP/s", "met": None, "why": ""})
    summary.append({"what": f"paper grid on GPUs, {tot['trials']} trials (steps + AutoLR probes)",
                    "target": "(estimate)",
                    "value": f"{gpu_hours(tot_fl, ASSUMED_MFU):.1f} GPU-h at {100 * ASSUMED_MFU:.0f} % MFU, "
                             f"{gpu_hours(tot_fl, mfu):.1f} at the CPU-measured {100 * mfu:.0f} %; stage 1 adds "
                             f"<= {gpu_hours(s1_total, ASSUMED_MFU):.1f}", "met": None, "why": ""})
    return {
        "title": "6. Scaling of cost with work",
        "summary": summary,
        "intro": [f"sweeper.loop.Unlearner steps, NGDiff, Adam lr 1e-3, static lr, no evaluation inside the timed "
                  f"steps; {THREADS} torch thread(s); every configuration of a factor runs the same {block} steps "
                  f"(from step {FIRST_STEP}, after 2 warm-up steps) per repeat, interleaved with order rotated; "
                  f"{rep} repeats ({rep_model} x {block_model} steps for the model factor). Cells: min / **median** / "
                  "max of CPU (process) time per step; FLOPs of the same steps counted with FlopCounterMode."],
        "tables": [
            {"caption": f"(a) Forget-set size (tiny-gpt2, retain {N_RETAIN} rows, batch 8+8)", "columns": FACTOR_COLUMNS,
             "rows": factor_rows(factors["forget"])},
            {"caption": f"(b) Retain-set size (tiny-gpt2, forget {N_FORGET} rows, batch 8+8)", "columns": FACTOR_COLUMNS,
             "rows": factor_rows(factors["retain"])},
            {"caption": f"(c) Model size (forget {N_FORGET} / retain {N_RETAIN} rows, batch 8+8)",
             "columns": FACTOR_COLUMNS, "rows": factor_rows(factors["model"])},
            {"caption": "(d) Batch size (tiny-gpt2; rows per split per step)", "columns": FACTOR_COLUMNS,
             "rows": factor_rows(factors["batch"])},
            {"caption": f"(e) Trial time for a paper-style schedule: {EPOCHS} epochs over the forget set, batch 8+8, "
                        f"tiny-gpt2, then one final evaluation (CPU seconds)",
             "columns": ["forget rows", "steps", "steps CPU s", "CPU ms/step", "eval questions", "eval CPU s",
                         "trial CPU s", "trial wall s", "repeats"], "rows": sched_rows},
            {"caption": "Fitted log-log slopes (numpy.polyfit on the medians)",
             "columns": ["curve", "slope", "expected"], "rows": [[w, f"{s:.2f}", e] for w, e, s in fits]},
            {"caption": f"(f) The paper grid (`--grid paper`) on GPUs, estimated from FLOPs (PFLOP = 1e15; "
                        f"shape = steps x 2 batches x batch x tokens per row, 1 image for ResNet-50)",
             "columns": ["part", "trials (new)", "models", "shape", "steps PFLOP", "AutoLR probes PFLOP",
                         f"s/step @ {100 * ASSUMED_MFU:.0f} % MFU", f"GPU-h @ {100 * ASSUMED_MFU:.0f} % MFU",
                         f"GPU-h @ {100 * mfu:.0f} % (CPU-measured)"], "rows": part_rows},
        ],
        "notes": notes,
        "raw": {"peak_flop_per_s": peak, "factors": factors, "schedule": {str(k): v for k, v in schedule.items()},
                "fits": [{"curve": w, "expected": e, "slope": s} for w, e, s in fits], "paper_estimate": est,
                "plot": PLOT},
    }


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
