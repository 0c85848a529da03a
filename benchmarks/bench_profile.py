"""Benchmark 7: where the time goes in one trial, and achieved FLOP/s (MFU) against the measured matmul peak.

1 (CPU, small models). One demo-sized trial in-process, phase by phase, as sweeper.cluster.trial runs it without Ray: NGDiff
  + Adam + AutoLR (K = 10), 30 steps of batch 8 + 8, the TOFU task's curve_metrics every 10 steps (+ the checkpoint
  torch.save), then evaluate + select, on the built-in TOFU twin and a target fine-tuned until answers end at EOS.
  Phases are timed by wrapping the Unlearner *instance*'s methods, torch.Tensor.backward and tofu_eval's helpers
  for the trial only (sweeper/ untouched); exclusive times; trials without the wrappers show their own cost.
2. Ray's share of a demo-sized trial, read (not measured) from a run folder (``--run``, bench_ray.read_run).
3 (any device and --model-size). FLOPs of a static NGDiff step (harness.count_flops, on a second copy stepping
  the same batches), its time, tokens/s and MFU against the best measured torch.mm rate in the compute dtype (CUDA
  bf16: also against sweeper.cluster.estimate's 989 TFLOP/s spec). ``--device cuda --model-size phi`` is the former
  gpu_phi.py's Phi-1.5-size check in bf16 compute; NOT YET RUN ON A GPU (phi-mini runs the path on a CPU).
4 (CPU, small models). One step under torch.profiler split into matmul kernels, other tensor ops, framework
  overhead and Python, and the matmul rates at the step's own shapes.

    python benchmarks/bench_profile.py [--quick] [--device cpu|cuda] [--model-size small|phi|phi-mini] [--run runs/demo]
"""
from __future__ import annotations

import contextlib
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import torch

from harness import ROOT, clone, cli, count_flops, fine_tune, fmt, fmt_stats, matmul_peak, mm_rate, n_params, \
    setup, stats
from sweeper.cluster.estimate import GPU_PEAK_BF16
from sweeper.grid.load import DEFAULTS
from sweeper.tasks import get_task, tofu_eval

STEPS, K = 30, 10                 # the demo grid's unlearn.steps and AutoLR's K
EVAL = dict(DEFAULTS["eval"])     # max_questions 20, max_new_tokens 24, every 10, batch_size 32: the demo's
DATA_SPEC = {"source": "builtin", "n_authors": 20, "qa_per_author": 10, "forget_split": "forget10", "seed": 0}
P_BATCH, P_FWD, P_BWD = "batch selection + collation", "forward (model + answer log-probs)", "backward"
P_GRAD, P_DOT = "gradient buffer: zero / copy g_R / combine", "norms + dot product (3 x _dot_tensor)"
P_OPT, P_AUTOLR = "optimizer step (Adam)", "AutoLR probes (2 forwards + foreach passes)"
P_GEN, P_NLL = "evaluation: greedy generation", "evaluation: answer NLL"
P_LIK, P_EVAL = "evaluation: Prob. / truth-ratio log-likelihoods", "evaluation: ROUGE-L + aggregation"
P_CKPT, P_OTHER = "checkpoint (state_dict + torch.save)", "other (step bookkeeping, rule, trial loop)"
P_FIRST = "first-call costs of a fresh worker process (ROUGE's nltk import, first generate)"
PHASES = [P_BATCH, P_FWD, P_BWD, P_GRAD, P_DOT, P_OPT, P_AUTOLR, P_GEN, P_NLL, P_LIK, P_EVAL, P_CKPT, P_OTHER]
EVAL_PHASES = (P_GEN, P_NLL, P_LIK, P_EVAL)


class PhaseTimer:
    """Exclusive CPU and wall seconds per phase (a nested phase's time is taken off its parent)."""

    def __init__(self, active: bool = True):
        self.active, self.cpu, self.wall, self.stack = active, defaultdict(float), defaultdict(float), []

    @contextlib.contextmanager
    def phase(self, name: str):
        if not self.active:
            yield
            return
        frame = [name, time.process_time(), time.perf_counter(), 0.0, 0.0]
        self.stack.append(frame)
        try:
            yield
        finally:
            dc, dw = time.process_time() - frame[1], time.perf_counter() - frame[2]
            self.stack.pop()
            self.cpu[name] += dc - frame[3]
            self.wall[name] += dw - frame[4]
            if self.stack:
                self.stack[-1][3] += dc
                self.stack[-1][4] += dw

    def wrap(self, name: str, fn, absorb: tuple = ()):
        """``fn`` timed as phase ``name``, unless called inside a phase of ``absorb`` (which keeps it)."""
        def timed(*args, **kwargs):
            if self.stack and self.stack[-1][0] in absorb:
                return fn(*args, **kwargs)
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed


def range_wrap(name: str, fn, absorb: tuple = ()):
    """``fn`` inside a torch.profiler record_function range ``name`` (part 4)."""
    return torch.profiler.record_function(name)(fn)


def instrument(u, wrap) -> None:
    """Wrap the Unlearner instance's phase methods (AutoLR's probe forwards stay in the AutoLR phase)."""
    u.batches.indices, u._batch = wrap(P_BATCH, u.batches.indices), wrap(P_BATCH, u._batch)
    u.logprobs = wrap(P_FWD, u.logprobs, absorb=(P_AUTOLR,))
    for name in ("_zero_grads", "_reduce_grads", "_save_retain", "_combine"):
        setattr(u, name, wrap(P_GRAD, getattr(u, name)))
    u._grad_products, u.optimizer.step = wrap(P_DOT, u._grad_products), wrap(P_OPT, u.optimizer.step)
    if u.autolr is not None:
        u.autolr.step = wrap(P_AUTOLR, u.autolr.step)


@contextlib.contextmanager
def patched(wrap, evaluation: bool = True):
    """Tensor.backward and tofu_eval's generation / likelihood helpers timed as phases for the block."""
    saved = [(torch.Tensor, "backward", P_BWD)] + ([(tofu_eval, "greedy_answers", P_GEN), (tofu_eval, "answer_nll", P_NLL),
                                                    (tofu_eval, "score_pairs", P_LIK)] if evaluation else [])
    saved = [(o, a, getattr(o, a), n) for o, a, n in saved]
    for o, a, f, n in saved:
        setattr(o, a, wrap(n, f))
    try:
        yield
    finally:
        for o, a, f, _ in saved:
            setattr(o, a, f)


def trial(S, u, task, splits: dict, timer: PhaseTimer, folder: str) -> dict:
    """One trial as train_worker runs it after load_target: steps, curve metrics + checkpoint every EVAL['every']
    steps, final evaluate + select. Returns inclusive CPU seconds of its parts."""
    rows, parts, tok = [], defaultdict(float), S.data.tokenizer
    c0, w0 = time.process_time(), time.perf_counter()
    with timer.phase(P_OTHER):
        for t in range(1, STEPS + 1):
            s0 = time.process_time()
            rows.append(u.step(t))
            parts["steps"] += time.process_time() - s0
            if t % EVAL["every"] == 0 or t == STEPS:
                s0 = time.process_time()
                with timer.phase(P_EVAL):
                    rows[-1].update(task.curve_metrics(u.model, tok, splits, EVAL))
                parts["curve evaluations"] += time.process_time() - s0
                with timer.phase(P_CKPT):   # what _report does before ray.train.report
                    torch.save({"unlearner": u.state_dict(), "rows": rows, "step": t}, os.path.join(folder, "state.pt"))
        s0 = time.process_time()
        with timer.phase(P_EVAL):
            final, _ = task.select(*task.evaluate(u.model, tok, splits, EVAL, None), EVAL)
        parts["final evaluation"] += time.process_time() - s0
    return {**parts, "cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "final": final,
            "statuses": [r["autolr_status"] for r in rows if r.get("autolr_status")]}


def profile_trials(S, base, splits: dict, repeats: int, with_plain: bool) -> dict:
    """Timed trials (a fresh copy of the target each), interleaved with untimed ones when ``with_plain``."""
    task, timed, plain = get_task("tofu"), [], []
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        for r in range(repeats):
            for kind in (["timed", "plain"][::1 if r % 2 == 0 else -1] if with_plain else ["timed"]):
                u = S.unlearner(clone(base), autolr_every=K)
                gc.collect()
                if kind == "plain":
                    plain.append(trial(S, u, task, splits, PhaseTimer(active=False), folder))
                    continue
                timer = PhaseTimer()
                instrument(u, timer.wrap)
                with patched(timer.wrap):
                    timed.append({**trial(S, u, task, splits, timer, folder), "phase_cpu": dict(timer.cpu),
                                  "phase_wall": dict(timer.wall)})
    return {"timed": timed, "plain": plain,
            **{k: {p: statistics.median([t[f"phase_{k}"].get(p, 0.0) for t in timed]) for p in PHASES}
               for k in ("cpu", "wall")}}


def time_steps(S, base, n: int) -> dict:
    """Judged time (and on the CPU the forward + backward phases) of n static NGDiff steps; their FLOPs counted on
    a second copy stepping the same batches, so the counter's dispatch overhead stays out of the timed steps."""
    counter, u, timer = S.unlearner(clone(base)), S.unlearner(clone(base)), PhaseTimer(active=not S.dev.cuda)
    if timer.active:
        instrument(u, timer.wrap)
    step, secs, ts = S.stepper(u), [], range(3, 3 + n)
    with patched(timer.wrap, evaluation=False) if timer.active else contextlib.nullcontext():
        step(1), step(2)   # warm-up: allocator, first-call paths
        timer.cpu.clear()
        for t in ts:
            w0, c0 = S.dev.clocks()
            with timer.phase(P_OTHER):
                step(t)
            w1, c1 = S.dev.clocks()
            secs.append((w1 - w0) if S.dev.cuda else (c1 - c0))
    cstep, tokens = S.stepper(counter), S.tokens(u, ts)[1]
    flops = [count_flops(lambda t=t: cstep(t)) for t in ts]
    del counter, u
    S.dev.free()
    return {"secs": secs, "flops": [sum(f.values()) for f in flops], "steps": n, "tokens": tokens,
            "by_op": {k: sum(f.get(k, 0) for f in flops) / n for k in flops[0]},
            "fwd_bwd": timer.cpu.get(P_FWD, 0.0) + timer.cpu.get(P_BWD, 0.0) if timer.active else None}


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
NO_ARITHMETIC = {f"aten::{x}" for x in (
    "view reshape _reshape_alias transpose t permute expand as_strided slice select unsqueeze squeeze split "
    "split_with_sizes narrow detach alias _unsafe_view empty empty_like empty_strided unbind chunk lift_fresh "
    "resolve_conj resolve_neg expand_as view_as resize_ set_ result_type is_nonzero item _local_scalar_dense to "
    "contiguous flatten _has_compatible_shallow_copy_type numel size stride").split()}
G_MATMUL, G_ATTN = "matmul kernels (mm / addmm / bmm)", "attention kernels (SDPA forward + backward)"
G_COMPUTE = "other tensor ops in forward/backward (layer norm, GELU, log-softmax + NLL, elementwise, embedding)"
G_OPT, G_UNL, G_BATCH = "optimizer step (Adam foreach ops)", "Unlearner gradient buffer + norms/dots", P_BATCH
G_FRAME = "framework: views/reshapes/allocation, composite-op wrappers, autograd nodes"
G_PY = "Python + engine time between ops (inside no op)"
GROUPS = [G_MATMUL, G_ATTN, G_COMPUTE, G_OPT, G_UNL, G_BATCH, G_FRAME, G_PY]
RANGE_GROUP = {P_GRAD: G_UNL, P_DOT: G_UNL, P_BATCH: G_BATCH}


def _group(evt) -> str:
    """Category of an event's self time: a labelled range it runs in wins, else the op's kind."""
    if evt.name in (P_FWD, P_BWD):   # self time of these ranges = time between the ops they contain
        return G_PY
    p = evt
    while p is not None:
        if p.name in RANGE_GROUP or p.name.startswith("Optimizer.step#"):
            return RANGE_GROUP.get(p.name, G_OPT)
        p = p.cpu_parent
    if evt.name in MATMUL_OPS:
        return G_MATMUL
    if "scaled_dot_product" in evt.name and "attention_for_cpu" in evt.name:
        return G_ATTN
    return G_COMPUTE if evt.name.startswith("aten::") and evt.name not in NO_ARITHMETIC and not evt.cpu_children \
        else G_FRAME


def op_profile(S, base, tries: int) -> dict:
    """One static NGDiff step under torch.profiler (record_shapes): self time per category, matmul shapes and
    FLOPs, aten op counts. The profiler's clock is wall time (a preemption lands in whatever op runs), so the same
    step from the same state is profiled ``tries`` times and every op keeps its minimum (else every category)."""
    from torch.profiler import ProfilerActivity, profile
    u = S.unlearner(clone(base))
    instrument(u, range_wrap)
    runs = []
    with patched(range_wrap, evaluation=False):
        for t in (1, 2, 3):
            u.step(t)
        state = copy.deepcopy({k: v for k, v in u.state_dict().items()})
        for _ in range(tries):
            u.load_state_dict(state)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                w0 = time.perf_counter()
                u.step(4)
                traced = time.perf_counter() - w0
            ev = list(prof.events())
            covered = sum(e.cpu_time_total for e in ev if e.cpu_parent is None) / 1e6
            runs.append({"events": [(e.name, _group(e), e.self_cpu_time_total / 1e6) for e in ev],
                         "between": max(0.0, traced - covered), "ev": ev})
    groups = defaultdict(float)
    if all([n for n, _, _ in r["events"]] == [n for n, _, _ in runs[0]["events"]] for r in runs):
        for i, (_, grp, _) in enumerate(runs[0]["events"]):
            groups[grp] += min(r["events"][i][2] for r in runs)
    else:
        for grp in GROUPS:
            groups[grp] = min(sum(s for _, g, s in r["events"] if g == grp) for r in runs)
    groups[G_PY] += min(r["between"] for r in runs)
    shapes = {}
    for e in runs[0]["ev"]:
        if e.name in MATMUL_OPS and e.input_shapes:
            s = [x for x in e.input_shapes if x]
            a, b = s[-2:] if e.name != "aten::bmm" else s[:2]
            key = (a[-2] * (a[0] if len(a) == 3 else 1), a[-1], b[-1])   # bmm as one (B*M, K, N) for the rate
            shapes[key] = [shapes.get(key, [0])[0] + 1, shapes.get(key, [0, 0])[1] + 2 * key[0] * key[1] * key[2]]
    aten = [e for e in runs[0]["ev"] if e.name.startswith("aten::")]
    return {"groups": dict(groups), "traced": sum(groups.values()), "tries": tries, "aten_ops": len(aten),
            "top_level_aten_ops": sum(1 for e in aten if not (e.cpu_parent and e.cpu_parent.name.startswith("aten::"))),
            "shapes": sorted(([list(k), *v] for k, v in shapes.items()), key=lambda x: -x[2]),
            "matmul_flops": sum(v[1] for v in shapes.values())}


def ray_costs(run_dir: str) -> dict | None:
    """Ray's fixed cost per tiny-gpt2 trial of an existing run (bench_ray.read_run), or None."""
    if not os.path.isdir(os.path.join(run_dir, "tune")):
        return None
    from bench_ray import concurrency, read_run
    trials = read_run(run_dir)
    tiny = [t for t in trials if t["model"] == "tiny-gpt2"]
    if not tiny:
        return None
    out = {"n": len(tiny), "n_all": len(trials), "fixed": stats([t["time_total_s"] - t["wall_s"] for t in tiny]),
           "loop_wall": stats([t["wall_s"] for t in tiny])}
    if timed := [t for t in trials if t["start"] is not None]:
        span = max(t["end"] for t in timed) - min(t["start"] for t in timed)
        out.update(concurrency=concurrency(timed),
                   outside=span * concurrency(timed) / len(timed) - sum(t["time_total_s"] for t in timed) / len(timed))
    return out


def pct(x: float, total: float) -> str:
    return f"{100 * x / total:.1f} %" if total else "n/a"


def run(args) -> dict:
    S, quick = setup(args), args.quick
    cpu_small = S.size == "small" and not S.dev.cuda
    names, res, tables, notes, summary, split_rows = list(S.names), {}, [], [], [], []
    step_n = {"tiny-gpt2": 6, "gpt2-5m": 3} if quick else {"tiny-gpt2": 15, "gpt2-5m": 6}
    first_call = splits = None
    if cpu_small:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as d:
            splits = get_task("tofu").prepare(DATA_SPEC, d)
        assert [r["question"] for r in splits["forget"]] == [r["question"] for r in S.data.forget]
    for name in names:
        base, r = S.model(name), {}
        if cpu_small:   # target: fine-tuned until answers end at EOS (tiny-gpt2: the demo target's 30 epochs)
            epochs, lr = {"tiny-gpt2": (10 if quick else 30, 3e-3), "gpt2-5m": (1 if quick else 3, 1e-3)}[name]
            r["fine_tune"] = fine_tune(base, S.data, S.data.rows, epochs=epochs, lr=lr)
            if first_call is None:   # the process-wide first-call costs land here, once, before any trial
                task, cs = get_task("tofu"), []
                for _ in range(2):
                    c0 = time.process_time()
                    task.select(*task.evaluate(clone(base), S.data.tokenizer, splits, EVAL, None), EVAL)
                    cs.append(time.process_time() - c0)
                first_call = {"first_cpu": cs[0], "second_cpu": cs[1], "extra_cpu": cs[0] - cs[1]}
            r.update(profile_trials(S, base, splits, (1 if quick else {"tiny-gpt2": 3, "gpt2-5m": 2}[name]), not quick))
            r["profile"] = op_profile(S, base, 3 if quick else 5)
        r.update(params=n_params(base), steps=time_steps(S, base, step_n.get(name, 2 if quick else 5)))
        res[name] = r
        del base
        S.dev.free()

    dtype = getattr(torch, S.dtype)
    peak_where, peak, squares = matmul_peak(S.dev, dtype, quick)
    for name in names if cpu_small else ():
        res[name]["shape_rates"] = [{"shape": tuple(s), "count": c, "flops": f,
                                     "rate": mm_rate(*s, S.dev, dtype, 3, 0.05 if quick else 0.1)}
                                    for s, c, f in res[name]["profile"]["shapes"][:5 if quick else 10]]
        for x in res[name]["shape_rates"]:
            if x["rate"]["median"] > peak:
                peak_where, peak = f"{name} {'x'.join(map(str, x['shape']))}", x["rate"]["median"]
    floor_us = None
    if cpu_small:   # the per-op floor: CPU microseconds of the cheapest aten op (add of two 1-element tensors)
        a, n_add, c0 = torch.ones(1), 5000 if quick else 20000, time.process_time()
        for _ in range(n_add):
            torch.add(a, a)
        floor_us = (time.process_time() - c0) / n_add * 1e6
        tot = {n: sum(res[n]["cpu"].values()) for n in names}   # ---- part 1 and 2 tables
        rows = [[label] + [c for n in names for c in (fmt(sum(res[n]["cpu"][p] for p in ks), 3),
                                                       pct(sum(res[n]["cpu"][p] for p in ks), tot[n]),
                                                       fmt(sum(res[n]["wall"][p] for p in ks), 3))]
                for label, ks in [(p, [p]) for p in PHASES] + [("*= evaluation, all parts*", EVAL_PHASES),
                                                                ("*= step phases (batch .. AutoLR)*", PHASES[:7]),
                                                                ("**total (in-process trial)**", PHASES)]]
        tables.append({"caption": f"One trial in-process, phase by phase (NGDiff + AutoLR K={K}, {STEPS} steps, curve "
                                  f"metrics every {EVAL['every']}, final evaluate; median of "
                                  f"{' / '.join(str(len(res[n]['timed'])) for n in names)} trials; exclusive seconds)",
                       "columns": ["phase"] + [c for n in names for c in (f"{n} CPU s", f"{n} share", f"{n} wall s")],
                       "rows": rows})
        run_dir = args.run if os.path.isabs(args.run) else os.path.join(ROOT, args.run)
        try:
            ray = ray_costs(run_dir)
        except Exception as e:  # noqa: BLE001 -- informational; the run folder may be mid-change
            ray, notes = None, notes + [f"Reading {args.run} failed ({type(e).__name__}: {str(e)[-200:]})."]
        tiny = res[names[0]]
        if ray:
            in_proc = {**{p: tiny["cpu"][p] for p in PHASES}, P_FIRST: max(0.0, first_call["extra_cpu"])}
            extra = {"Ray fixed cost (start-up + teardown) inside Tune's time_total_s": ray["fixed"]["median"]}
            if "outside" in ray:
                extra["Ray scheduling + teardown outside time_total_s (slot-cycle estimate)"] = max(0.0, ray["outside"])
            total, here = sum(in_proc.values()) + sum(extra.values()), "measured here, in-process (CPU s)"
            src = f"{args.run}: median of {ray['n']} tiny-gpt2 trials, wall s (concurrency {ray.get('concurrency', '?')})"
            tables.append({"caption": "A demo-sized trial end to end (tiny-gpt2): the in-process phases above plus Ray's "
                                      "fixed cost read from the run folder (not measured here)",
                           "columns": ["part", "seconds", "share", "source"],
                           "rows": [[p, fmt(v, 3), pct(v, total), here] for p, v in in_proc.items()]
                           + [["*= in-process trial*", fmt(sum(in_proc.values()), 3), pct(sum(in_proc.values()), total),
                               here]]
                           + [[f"**{k}**", fmt(v, 2), pct(v, total), src] for k, v in extra.items()]
                           + [["**total per trial slot**", fmt(total, 2), "100 %", ""]]})
            notes.append(f"Ray rows: from {args.run} via bench_ray.read_run ({ray['n']} tiny-gpt2 of {ray['n_all']} "
                         f"finished trials): fixed = Tune time_total_s - the trial's loop wall_s, "
                         f"{fmt_stats(ray['fixed'], 1)} s; the run's loop wall_s {fmt_stats(ray['loop_wall'], 2)} s vs "
                         f"{sum(tiny['wall'].values()):.2f} s in-process here. Rerun after a new demo run to update them.")
            summary.append({"what": "Ray's part of a demo-sized trial slot (tiny-gpt2)", "target": "(informational)",
                            "value": f"{sum(extra.values()):.1f} s Ray (from {args.run}) vs {sum(in_proc.values()):.2f} s "
                                     f"in-process work: Ray {pct(sum(extra.values()), total)}", "met": None, "why": ""})
        else:
            notes.append(f"No finished Tune trials of tiny-gpt2 under {args.run}/tune: the Ray rows are skipped (run "
                         "`python -m sweeper.launch --grid demo` first).")

    # ---- part 3: achieved FLOP/s and MFU
    spec = GPU_PEAK_BF16 / 1e9 if S.dev.cuda and S.dtype == "bfloat16" else None
    flop_rows = []
    for name in names:
        s, r = res[name]["steps"], res[name]
        f_step, t_step = statistics.mean(s["flops"]), statistics.median(s["secs"])
        achieved = sum(s["flops"]) / sum(s["secs"]) / 1e9
        fb = sum(s["flops"]) / s["fwd_bwd"] / 1e9 if s["fwd_bwd"] else None
        pr = r.get("profile")
        kern = (pr["groups"].get(G_MATMUL, 0) + pr["groups"].get(G_ATTN, 0)) / pr["traced"] * t_step if pr else None
        r["flop_summary"] = {"flops": f_step, "step_s": t_step, "achieved": achieved, "mfu": achieved / peak,
                             "mfu_fb": fb / peak if fb else None, "tokens_per_s": s["tokens"] / t_step}
        flop_rows.append([f"{name} ({r['params'] / 1e6:.2f}M)", fmt(f_step / 1e6, 1),
                          ", ".join(f"{k} {v / f_step:.0%}" for k, v in sorted(s["by_op"].items(), key=lambda x: -x[1])),
                          fmt(t_step * 1e3, 1), f"{s['tokens'] / t_step:,.0f}",
                          fmt_stats(stats([f / c / 1e9 for f, c in zip(s["flops"], s["secs"])]), 2),
                          fmt(fb, 2) if fb else "n/a", fmt(f_step / kern / 1e9, 2) if kern else "n/a", fmt(peak, 1),
                          f"**{100 * achieved / peak:.1f} %**", f"{100 * fb / peak:.1f} %" if fb else "n/a",
                          f"{100 * achieved / spec:.1f} %" if spec else "n/a", s["steps"]])
        summary.append({"what": f"Model FLOPs utilisation of a training step, {name}", "target": "(informational)",
                        "met": None, "why": "", "value": f"{achieved:.2f} GFLOP/s of {peak:.1f} peak = "
                        f"{100 * achieved / peak:.1f} %" + (f" ({100 * fb / peak:.1f} % over forward + backward only)"
                                                            if fb else "") + (f"; {100 * achieved / spec:.1f} % of the "
                                                                              "bf16 spec peak" if spec else "")})
    clock = "wall (synchronised)" if S.dev.cuda else "CPU"
    tables.append({"caption": f"Achieved FLOP/s of one training step (static-lr NGDiff step: forward + backward of the "
                              f"retain and the forget batch; {S.dev.name}; {S.dtype} compute) vs the measured matmul peak",
                   "columns": ["model", "MFLOP / step", "FLOPs by op", f"step {clock} ms (median)", "tokens/s (padded)",
                               "achieved GFLOP/s (per step)", "GFLOP/s over fwd+bwd time only",
                               "GFLOP/s inside matmul+attention kernels (profile share x step time)", "peak GFLOP/s",
                               "MFU (whole step)", "MFU (fwd+bwd only)", "MFU vs bf16 spec (989 TFLOP/s)", "steps"],
                   "rows": flop_rows})
    peak_rows = [[f"square {k} x {k} x {k}", "", fmt_stats(v, 1)] for k, v in squares.items()]
    peak_rows += [[f"{n}: {' x '.join(map(str, x['shape']))}", f"{x['count']} calls, "
                   f"{x['flops'] / res[n]['profile']['matmul_flops']:.0%} of its matmul FLOPs", fmt_stats(x["rate"], 1)]
                  for n in names if cpu_small for x in res[n]["shape_rates"]]
    tables.append({"caption": f"Matmul peak: torch.mm {S.dtype}, {S.dev.name}, {clock} time (M x K x N; GFLOP/s min / "
                              f"**median** / max over 3 repeats); peak = best median ({peak_where}: {peak:.1f} GFLOP/s)",
                   "columns": ["shape", "in one step", "GFLOP/s"], "rows": peak_rows})

    if cpu_small:   # ---- part 4: where the gap goes
        tables.append({"caption": "Where the gap goes: one static NGDiff step under torch.profiler -- each category's "
                                  "share of the profiled step's self time, and that share of the step's CPU time without "
                                  "the profiler (ms); the profiler adds ~1-2 us per op, so small-op categories read high",
                       "columns": ["category"] + [c for n in names for c in (f"{n} share", f"{n} ~ms")],
                       "rows": [[g] + [c for n in names for c in (
                           pct(res[n]["profile"]["groups"].get(g, 0.0), res[n]["profile"]["traced"]),
                           fmt(res[n]["profile"]["groups"].get(g, 0.0) / res[n]["profile"]["traced"]
                               * res[n]["flop_summary"]["step_s"] * 1e3, 1))] for g in GROUPS]
                       + [["**step**"] + [c for n in names for c in (
                           f"100 % of {res[n]['profile']['traced'] * 1e3:.0f} ms under the profiler (min per op of "
                           f"{res[n]['profile']['tries']})", f"**{res[n]['flop_summary']['step_s'] * 1e3:.1f}** (CPU, no "
                           "profiler)")]]})
        for n in names:   # the matmul part of the gap: at the peak, at the shapes' standalone rates, in the step
            pr, sr, fs = res[n]["profile"], res[n]["shape_rates"], res[n]["flop_summary"]
            g, tr, mm = pr["groups"], pr["traced"], pr["matmul_flops"]
            res[n]["gap"] = gap = {"t_peak": mm / (peak * 1e9), "t_kernel": g.get(G_MATMUL, 0.0) / tr * fs["step_s"],
                                   "t_shapes": sum(x["flops"] / (x["rate"]["median"] * 1e9) for x in sr)
                                   * mm / sum(x["flops"] for x in sr)}
            notes.append(f"Why the gap, {n} (MFU {100 * fs['mfu']:.1f} %, {fs['step_s'] * 1e3:.1f} CPU ms/step): its "
                         f"{mm / 1e6:.1f} matmul MFLOP (mm/addmm) would take {gap['t_peak'] * 1e3:.2f} ms at the peak, "
                         f"{gap['t_shapes'] * 1e3:.2f} ms at their shapes' standalone rates, ~{gap['t_kernel'] * 1e3:.2f} "
                         f"ms inside the step (profile share); other tensor work (attention, norms, GELU, loss, Adam, the "
                         f"Unlearner's buffer and dots; memory-bound) is "
                         f"{pct(sum(g.get(k, 0.0) for k in (G_ATTN, G_COMPUTE, G_OPT, G_UNL)), tr)} of the profiled step; "
                         f"per-op overhead ({pr['aten_ops']} aten ops, {pr['top_level_aten_ops']} top-level, >= "
                         f"{floor_us:.1f} us each = {pr['aten_ops'] * floor_us / 1e3:.1f} ms; views, autograd, Python, "
                         f"collation) {pct(sum(g.get(k, 0.0) for k in (G_FRAME, G_PY, G_BATCH)), tr)} -- fixed per op, "
                         "so the smaller model pays it most; avoidable only by fewer, larger ops (fusion, bigger batches).")
        for n in names:
            tm, ft, tot = res[n]["timed"], res[n]["fine_tune"], sum(res[n]["cpu"].values())
            med = {k: statistics.median([t[k] for t in tm]) for k in ("steps", "curve evaluations", "final evaluation")}
            fin, c = tm[-1]["final"], res[n]["cpu"]
            n_curve = len(range(EVAL["every"], STEPS + 1, EVAL["every"])) + (STEPS % EVAL["every"] != 0)
            notes.append(f"{n}: inclusive CPU s per trial: {STEPS} steps {med['steps']:.2f}, {n_curve} curve evaluations "
                         f"{med['curve evaluations']:.2f}, final evaluation {med['final evaluation']:.2f}. Target: "
                         f"fine-tuned {ft['epochs']} epochs (loss {ft['final_loss']:.2f}); after unlearning ROUGE forget "
                         f"{fin['rouge_forget']:.2f} / retain {fin['rouge_retain']:.2f}; AutoLR probes: "
                         f"{', '.join(tm[-1]['statuses'])}. The last curve evaluation and the final evaluate's first part "
                         f"score the same parameters: {med['curve evaluations'] / n_curve:.3f} CPU s computed twice = "
                         f"{pct(med['curve evaluations'] / n_curve, tot)} of the trial; the Unlearner's own gradient work "
                         f"is {pct(c[P_GRAD] + c[P_DOT], sum(c[p] for p in PHASES[:7]))} of the step phases."
                         + (f" Trial CPU {statistics.median([p['cpu'] for p in tm]):.2f} s with the wrappers vs "
                            f"{statistics.median([p['cpu'] for p in res[n]['plain']]):.2f} s without (the timing's own "
                            "cost, noise included)." if res[n]["plain"] else ""))
            split_rows.append({"what": f"Trial time split, {n} (in-process, {STEPS} steps + evaluations)",
                               "target": "(informational)", "met": None, "why": "",
                               "value": f"{tot:.2f} CPU s: evaluation {pct(sum(c[p] for p in EVAL_PHASES), tot)}, forward "
                                        f"{pct(c[P_FWD], tot)}, backward {pct(c[P_BWD], tot)}, grad buffer + dots "
                                        f"{pct(c[P_GRAD] + c[P_DOT], tot)}"})
        notes.append(f"First-call costs: the final evaluation on the fresh {names[0]} target took "
                     f"{first_call['first_cpu']:.2f} CPU s the first time in this process and "
                     f"{first_call['second_cpu']:.2f} s the second: {first_call['extra_cpu']:.2f} s is paid once per "
                     "trial worker (ROUGE's nltk import, first generate).")
    else:
        notes.append("Parts 1, 2 and 4 (trial phase split, Ray's share, torch.profiler categories) run on the CPU with "
                     "the small models only; this run measured part 3.")
    notes += ["FLOPs: harness.count_flops (FlopCounterMode: mm / addmm / bmm and attention, forward + backward of both "
              "batches; the CPU flash-attention kernel gets torch's sdpa formula). Adam, norms, GELU, softmax, the loss "
              "and the Unlearner's dots are not counted (a few %, memory-bound). MFU = achieved / the best measured "
              "matmul rate (squares and, on the CPU, the step's own shapes).",
              f"Precision: {S.dtype} compute (sweeper.models.language.compute_precision); weights and Adam state float32."]
    raw = {"peak": {"gflops": peak, "where": peak_where, "squares": squares}, "dispatch_floor_us": floor_us,
           "first_call": first_call, "models": res}
    return {"title": "7. Where the time goes in one trial, and achieved FLOP/s vs the matmul peak",
            "intro": [(f"Built-in TOFU twin (20 authors x 10 QA, forget10), eval max_questions {EVAL['max_questions']}, "
                       f"max_new_tokens {EVAL['max_new_tokens']}" if cpu_small else "Real-length synthetic QA (100 authors"
                       ", forget10), random weights (Phi-1.5's architecture, no hub download)") + f"; NGDiff + Adam lr "
                      f"{S.lr:g}, batch {S.batch} + {S.batch}; {S.dev.name}. Informational: no targets."],
            "tables": tables, "notes": notes, "summary": split_rows + summary, "raw": raw}


def main(argv=None) -> dict:
    return cli(argv, run, __doc__, sizes=True, add_args=lambda ap: ap.add_argument(
        "--run", default="runs/demo", help="run folder whose Tune results give Ray's fixed cost (default runs/demo)"))


if __name__ == "__main__":
    main(sys.argv[1:])
