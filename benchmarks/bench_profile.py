"""Benchmark 7: where the time goes in one trial, and achieved FLOP/s against the matmul peak.

Part 1 -- one trial's loop, in-process, phase by phase. A demo-sized trial as ``sweeper.trial.train_worker``
runs it, without Ray: NGDiff + Adam with AutoLR (K = 10), 30 steps of batch 8 + 8, the task's
``curve_metrics`` every 10 steps (followed by the checkpoint ``_report`` writes), then the task's final
``evaluate`` + ``select`` (all TOFU metrics: ROUGE, exact, losses, Prob., truth ratio, model utility). The
data is the built-in TOFU twin prepared by ``TofuTask.prepare`` (forget10 of 20 authors x 10 QA, the same
rows as ``common.Data``; the evaluation splits carry paraphrased / perturbed answers), the model is a
``common.MODELS`` entry (tiny-gpt2, gpt2-5m) fine-tuned first with ``common.fine_tune`` so that greedy
answers end at EOS as after stage 1. Method: the real code path, with the phases timed by wrapping
methods of the Unlearner *instance* (``_batch``, ``logprobs``, ``_zero_grads`` / ``_save_retain`` /
``_combine``, ``_grad_products``, ``optimizer.step``, ``autolr.step``), ``torch.Tensor.backward`` and the
evaluation helpers of ``sweeper.tasks.tofu_eval`` for the duration of the trial (nothing in sweeper/ is
edited). Times are exclusive: a phase nested in another (Adam's step inside AutoLR's) is counted once, in
the inner phase, so the phases add up to the trial. A trial without the wrappers is timed too, to show
the wrappers' own cost.

Part 2 -- Ray's share of a demo-sized trial, read (not measured) from an existing run folder
(``runs/demo``, with ``bench_ray.read_run``): Tune's time_total_s minus the trial's loop wall_s, and the
slot-cycle estimate of the cost outside time_total_s.

Part 3 -- achieved FLOP/s of one training step: ``torch.utils.flop_counter.FlopCounterMode`` counts the
matmul and attention FLOPs of the step (forward + backward of both batches), the same steps are timed
(CPU time, ``common.THREADS`` torch threads), and compared with the best torch.mm float32 rate measured here
at the same thread count (square sizes and the matmul shapes the step actually runs). One step under
torch.profiler splits the gap into matmul kernels, other tensor ops, framework overhead and Python.

    python benchmarks/bench_profile.py [--quick] [--json out.json] [--run runs/demo]
"""
from __future__ import annotations

import contextlib
import copy
import gc
import os
import statistics
import tempfile
import time
from collections import defaultdict

import torch

from common import (MODELS, ROOT, THREADS, Data, clone, fine_tune, fmt, fmt_stats, main, make_unlearner,  # first
                    n_params, stats)
from sweeper.grid import DEFAULTS  # noqa: E402
from sweeper.tasks import get_task  # noqa: E402
from sweeper.tasks import tofu_eval  # noqa: E402

STEPS = 30                    # the demo grid's unlearn.steps
K = 10                        # AutoLR every K steps (demo grid)
EVAL = dict(DEFAULTS["eval"])  # max_questions 20, max_new_tokens 24, every 10, batch_size 32: the demo's
DATA_SPEC = {"source": "builtin", "n_authors": 20, "qa_per_author": 10, "forget_split": "forget10", "seed": 0}
SQUARES = (256, 512, 1024, 2048)
MFLOP = 1e6

# Phases, in report order. Exclusive times: each second of the trial lands in exactly one of them.
P_BATCH = "batch selection + collation"
P_FWD = "forward (model + answer log-probs)"
P_BWD = "backward"
P_GRAD = "gradient buffer: zero / copy g_R / combine"
P_DOT = "norms + dot product (3 x _dot_tensor)"
P_OPT = "optimizer step (Adam)"
P_AUTOLR = "AutoLR probes (2 forwards + foreach passes)"
P_GEN = "evaluation: greedy generation"
P_NLL = "evaluation: answer NLL"
P_LIK = "evaluation: Prob. / truth-ratio log-likelihoods"
P_EVAL = "evaluation: ROUGE-L + aggregation"
P_CKPT = "checkpoint (state_dict + torch.save)"
P_OTHER = "other (step bookkeeping, rule, trial loop)"
P_FIRST = "first-call costs of a fresh worker process (ROUGE's nltk import, first generate)"
PHASES = [P_BATCH, P_FWD, P_BWD, P_GRAD, P_DOT, P_OPT, P_AUTOLR, P_GEN, P_NLL, P_LIK, P_EVAL, P_CKPT, P_OTHER]
EVAL_PHASES = (P_GEN, P_NLL, P_LIK, P_EVAL)


# ---------------------------------------------------------------- part 1: phase timing


class PhaseTimer:
    """Exclusive CPU and wall seconds per phase: time spent in a nested phase is subtracted from its parent,
    so the phases partition the time of the outermost one."""

    def __init__(self):
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []   # [name, cpu0, wall0, child_cpu, child_wall]

    @property
    def current(self) -> str | None:
        return self.stack[-1][0] if self.stack else None

    @contextlib.contextmanager
    def phase(self, name: str):
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

    def wrap(self, name: str, fn, absorb: tuple[str, ...] = ()):
        """``fn`` timed as phase ``name``, unless called inside a phase of ``absorb`` (which keeps it)."""
        def timed(*args, **kwargs):
            if self.current in absorb:
                return fn(*args, **kwargs)
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed


def range_wrap(name: str, fn, absorb: tuple[str, ...] = ()):
    """``fn`` inside a torch.profiler record_function range ``name`` (the profiled step of part 3)."""
    def ranged(*args, **kwargs):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)
    return ranged


def instrument(u, wrap) -> None:
    """Wrap the Unlearner instance's phase methods (instance attributes shadow the class's; sweeper/ is
    untouched). The forward passes of AutoLR's probes stay in the AutoLR phase."""
    u.batches.indices = wrap(P_BATCH, u.batches.indices)
    u._batch = wrap(P_BATCH, u._batch)
    u.logprobs = wrap(P_FWD, u.logprobs, absorb=(P_AUTOLR,))
    for name in ("_zero_grads", "_reduce_grads", "_save_retain", "_combine"):
        setattr(u, name, wrap(P_GRAD, getattr(u, name)))
    u._grad_products = wrap(P_DOT, u._grad_products)
    u.optimizer.step = wrap(P_OPT, u.optimizer.step)
    if u.autolr is not None:
        u.autolr.step = wrap(P_AUTOLR, u.autolr.step)


@contextlib.contextmanager
def patched(wrap, backward: bool = True, evaluation: bool = True):
    """For the block: Tensor.backward (the loop calls loss.backward()) and tofu_eval's generation and
    likelihood helpers timed as phases; everything is restored afterwards."""
    saved = []

    def patch(owner, attr, name):
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, wrap(name, getattr(owner, attr)))
    try:
        if backward:
            patch(torch.Tensor, "backward", P_BWD)
        if evaluation:
            patch(tofu_eval, "greedy_answers", P_GEN)
            patch(tofu_eval, "answer_nll", P_NLL)
            patch(tofu_eval, "score_pairs", P_LIK)
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


class NoTimer(PhaseTimer):
    """The same trial code with no phase timing (the reference for the wrappers' own cost)."""

    @contextlib.contextmanager
    def phase(self, name: str):
        yield


def trial(u, task, tokenizer, splits: dict, timer: PhaseTimer, folder: str) -> dict:
    """One trial as train_worker runs it after load_target: steps, curve metrics + checkpoint every
    EVAL['every'] steps, final evaluate + select. Returns inclusive seconds of its parts."""
    model, every = u.model, EVAL["every"]
    rows, parts = [], defaultdict(float)
    c0, w0 = time.process_time(), time.perf_counter()
    with timer.phase(P_OTHER):
        for t in range(1, STEPS + 1):
            s0 = time.process_time()
            row = u.step(t)
            parts["steps"] += time.process_time() - s0
            row["wall_s"] = time.perf_counter() - w0
            if t % every == 0 or t == STEPS:
                s0 = time.process_time()
                with timer.phase(P_EVAL):
                    scores = task.curve_metrics(model, tokenizer, splits, EVAL)
                parts["curve evaluations"] += time.process_time() - s0
                row.update(rouge_forget=scores["rouge_forget"], rouge_retain=scores["rouge_retain"])
                rows.append(row)
                with timer.phase(P_CKPT):   # what _report does before ray.train.report
                    torch.save({"unlearner": u.state_dict(), "rows": rows, "step": t,
                                "elapsed": time.perf_counter() - w0}, os.path.join(folder, "state.pt"))
            else:
                rows.append(row)
        s0 = time.process_time()
        with timer.phase(P_EVAL):
            final, _ = task.select(*task.evaluate(model, tokenizer, splits, EVAL, None), EVAL)
        parts["final evaluation"] += time.process_time() - s0
    parts.update(cpu=time.process_time() - c0, wall=time.perf_counter() - w0, final=final,
                 statuses=[r["autolr_status"] for r in rows if r.get("autolr_status")])
    return dict(parts)


def eval_splits(data: Data) -> dict:
    """The built-in TOFU twin's splits via the task's own prepare (forget/retain equal common.Data's)."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as d:
        splits = get_task("tofu").prepare(DATA_SPEC, d)
    assert [r["question"] for r in splits["forget"]] == [r["question"] for r in data.forget]
    assert [r["question"] for r in splits["retain"]] == [r["question"] for r in data.retain]
    return splits


def make_target(name: str, data: Data, quick: bool):
    """A stand-in for the stage-1 target: fine-tuned until answers end at EOS (tiny-gpt2: the demo target's
    30 epochs at the same recipe; gpt2-5m: 3 epochs at lr 1e-3 as benchmark 4)."""
    model = MODELS[name](data)
    epochs, lr = {"tiny-gpt2": (10 if quick else 30, 3e-3), "gpt2-5m": (1 if quick else 3, 1e-3)}[name]
    info = fine_tune(model, data, data.rows, epochs=epochs, lr=lr)
    return model, info


def first_call_cost(base, data: Data, splits: dict) -> dict:
    """CPU seconds of the task's final evaluation called twice on the target: the first call pays the one-time
    costs a fresh trial worker pays once (nltk import for ROUGE's stemmer, first generate), the second not."""
    task, model = get_task("tofu"), clone(base)
    out = []
    for _ in range(2):
        c0, w0 = time.process_time(), time.perf_counter()
        task.select(*task.evaluate(model, data.tokenizer, splits, EVAL, None), EVAL)
        out.append((time.process_time() - c0, time.perf_counter() - w0))
    return {"first_cpu": out[0][0], "second_cpu": out[1][0], "extra_cpu": out[0][0] - out[1][0],
            "extra_wall": out[0][1] - out[1][1]}


def profile_trials(base, data: Data, splits: dict, repeats: int, with_plain: bool) -> dict:
    """Timed trials (fresh copy of the target each), interleaved with untimed ones when ``with_plain``."""
    task = get_task("tofu")
    timed, plain = [], []
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        for r in range(repeats):
            order = ["timed", "plain"] if r % 2 == 0 else ["plain", "timed"]
            for kind in order if with_plain else ["timed"]:
                u = make_unlearner(clone(base), data, "ngdiff", autolr_every=K)
                gc.collect()
                if kind == "plain":
                    plain.append(trial(u, task, data.tokenizer, splits, NoTimer(), folder))
                    continue
                timer = PhaseTimer()
                instrument(u, timer.wrap)
                with patched(timer.wrap):
                    parts = trial(u, task, data.tokenizer, splits, timer, folder)
                parts.update(phase_cpu=dict(timer.cpu), phase_wall=dict(timer.wall))
                timed.append(parts)
    return {"timed": timed, "plain": plain}


def phase_medians(timed: list[dict], key: str) -> dict[str, float]:
    return {p: statistics.median([t[key].get(p, 0.0) for t in timed]) for p in PHASES}


# ---------------------------------------------------------------- part 3: FLOPs, peak, profile


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's FlopCounterMode has formulas for the CUDA attention kernels only; the CPU flash kernel that
# sdpa dispatches to here gets the same (non-causal, full T x T) count as torch's own sdpa formula.
SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops}


def count_flops(fn) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as fc:
        fn()
    return {short_op(str(k)): int(v) for k, v in fc.get_flop_counts()["Global"].items()}


def short_op(name: str) -> str:
    name = name.split(".")[-1]
    if "attention" in name:
        return "attention bwd" if name.endswith("backward") else "attention fwd"
    return name


def mm_rate(m: int, k: int, n: int, repeats: int, budget_s: float) -> dict:
    """GFLOP/s of torch.mm(a[m,k], b[k,n], out=c) in float32: calls repeated for ~budget_s of CPU time per
    repeat (so small shapes are timed over many calls); stats over repeats."""
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    torch.mm(a, b, out=c)
    rates = []
    for _ in range(repeats):
        calls, c0 = 0, time.process_time()
        while True:
            torch.mm(a, b, out=c)
            calls += 1
            dt = time.process_time() - c0
            if dt >= budget_s:
                break
        rates.append(2 * m * k * n * calls / dt / 1e9)
    return stats(rates)


def dispatch_floor_us(n: int = 20000) -> float:
    """CPU microseconds of the cheapest aten op (add of two 1-element tensors): the per-op floor."""
    a, b = torch.ones(1), torch.ones(1)
    for _ in range(1000):
        torch.add(a, b)
    c0 = time.process_time()
    for _ in range(n):
        torch.add(a, b)
    return (time.process_time() - c0) / n * 1e6


def time_steps(base, data: Data, n: int) -> dict:
    """FLOPs (counted on a separate copy, same StepBatches so same shapes) and CPU time of n static-lr
    NGDiff steps; the timed copy is phase-instrumented too, for the forward + backward share."""
    counter = make_unlearner(clone(base), data, "ngdiff")
    u = make_unlearner(clone(base), data, "ngdiff")
    timer = PhaseTimer()
    instrument(u, timer.wrap)
    first = 3
    with patched(timer.wrap, evaluation=False):
        for t in (1, 2):   # warm-up (allocator, first-call paths)
            u.step(t)
        timer.cpu.clear()
        timer.wall.clear()
        cpu = []
        for t in range(first, first + n):
            c0 = time.process_time()
            with timer.phase(P_OTHER):
                u.step(t)
            cpu.append(time.process_time() - c0)
    flops = [count_flops(lambda t=t: counter.step(t)) for t in range(first, first + n)]
    totals = [sum(f.values()) for f in flops]
    return {"cpu": cpu, "flops": totals, "by_op": {k: sum(f.get(k, 0) for f in flops) / n for k in flops[0]},
            "fwd_bwd_cpu": timer.cpu.get(P_FWD, 0.0) + timer.cpu.get(P_BWD, 0.0), "steps": n,
            "rates": [f / c / 1e9 for f, c in zip(totals, cpu)]}


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
NO_ARITHMETIC = {"aten::view", "aten::reshape", "aten::_reshape_alias", "aten::transpose", "aten::t", "aten::permute",
                 "aten::expand", "aten::as_strided", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze",
                 "aten::split", "aten::split_with_sizes", "aten::narrow", "aten::detach", "aten::alias",
                 "aten::_unsafe_view", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::unbind",
                 "aten::chunk", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::expand_as",
                 "aten::view_as", "aten::resize_", "aten::set_", "aten::result_type", "aten::is_nonzero",
                 "aten::item", "aten::_local_scalar_dense", "aten::to", "aten::contiguous", "aten::flatten",
                 "aten::_has_compatible_shallow_copy_type", "aten::numel", "aten::size", "aten::stride"}

G_MATMUL = "matmul kernels (mm / addmm / bmm)"
G_ATTN = "attention kernels (SDPA forward + backward)"
G_COMPUTE = "other tensor ops in forward/backward (layer norm, GELU, log-softmax + NLL, elementwise, embedding)"
G_OPT = "optimizer step (Adam foreach ops)"
G_UNL = "Unlearner gradient buffer + norms/dots"
G_BATCH = "batch selection + collation"
G_FRAME = "framework: views/reshapes/allocation, composite-op wrappers, autograd nodes"
G_PY = "Python + engine time between ops (inside no op)"
GROUPS = [G_MATMUL, G_ATTN, G_COMPUTE, G_OPT, G_UNL, G_BATCH, G_FRAME, G_PY]
RANGE_GROUP = {P_GRAD: G_UNL, P_DOT: G_UNL, P_BATCH: G_BATCH}


def _group(evt) -> str:
    """Category of an event's self time: a labelled range it runs in wins, else the op's kind."""
    name = evt.name
    if name in (P_FWD, P_BWD):   # self time of these ranges = time between the ops they contain
        return G_PY
    p = evt
    while p is not None:
        if p.name in RANGE_GROUP:
            return RANGE_GROUP[p.name]
        if p.name.startswith("Optimizer.step#"):
            return G_OPT
        p = p.cpu_parent
    if name in MATMUL_OPS:
        return G_MATMUL
    if "scaled_dot_product" in name and "attention_for_cpu" in name:
        return G_ATTN
    if name.startswith("aten::") and name not in NO_ARITHMETIC and not evt.cpu_children:
        return G_COMPUTE
    return G_FRAME


def _profiled_step(prof, traced: float) -> dict:
    """One profiled step as per-event (name, category, self seconds), the time inside no event, the
    matmul shapes and the op counts."""
    events = list(prof.events())
    shapes: dict[tuple, list] = {}
    for e in events:
        if e.name in MATMUL_OPS and e.input_shapes:
            s = [x for x in e.input_shapes if x]
            (a, b) = s[-2:] if e.name != "aten::bmm" else s[:2]
            key = (a[-2] * (a[0] if len(a) == 3 else 1), a[-1], b[-1])   # bmm as one (B*M, K, N) for the rate
            entry = shapes.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += 2 * key[0] * key[1] * key[2]
    covered = sum(e.cpu_time_total for e in events if e.cpu_parent is None) / 1e6
    return {"events": [(e.name, _group(e), e.self_cpu_time_total / 1e6) for e in events],
            "between": max(0.0, traced - covered), "traced": traced, "shapes": shapes,
            "aten_ops": sum(1 for e in events if e.name.startswith("aten::")),
            "top_level_aten_ops": sum(1 for e in events if e.name.startswith("aten::") and
                                      (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))}


def op_profile(base, data: Data, tries: int) -> dict:
    """One static NGDiff step under torch.profiler (record_shapes): self time per category, matmul shapes
    with their FLOPs, the number of aten ops, and the untraced step time for the overhead.

    The profiler's clock is wall time: on a shared core a preemption of several ms lands in whatever op is
    running and can double a small category. So the same step (same t, same starting state) is profiled
    ``tries`` times and every op keeps its minimum over the tries (preemption only adds time); if the op
    sequences differ between tries, every category keeps its minimum instead."""
    from torch.profiler import ProfilerActivity, profile
    u = make_unlearner(clone(base), data, "ngdiff")
    instrument(u, range_wrap)
    runs = []
    with patched(range_wrap, evaluation=False):
        for t in (1, 2):
            u.step(t)
        c0 = time.process_time()
        u.step(3)
        untraced = time.process_time() - c0
        state = u.state_dict()
        snapshot = {"model": copy.deepcopy(state["model"]), "optimizer": copy.deepcopy(state["optimizer"]),
                    "rule": state["rule"]}
        for _ in range(tries):
            u.load_state_dict(snapshot)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                w0 = time.perf_counter()
                u.step(4)
                traced = time.perf_counter() - w0
            runs.append(_profiled_step(prof, traced))
    same_ops = all([n for n, _, _ in r["events"]] == [n for n, _, _ in runs[0]["events"]] for r in runs)
    groups = defaultdict(float)
    if same_ops:
        for i, (_, grp, _) in enumerate(runs[0]["events"]):
            groups[grp] += min(r["events"][i][2] for r in runs)
    else:
        per_run = []
        for r in runs:
            g = defaultdict(float)
            for _, grp, sec in r["events"]:
                g[grp] += sec
            per_run.append(g)
        for grp in GROUPS:
            groups[grp] = min(g.get(grp, 0.0) for g in per_run)
    groups[G_PY] += min(r["between"] for r in runs)
    first = runs[0]
    return {"groups": dict(groups), "traced": sum(groups.values()), "traced_wall": [r["traced"] for r in runs],
            "per_op_min": same_ops, "tries": tries, "untraced_cpu": untraced,
            "aten_ops": first["aten_ops"], "top_level_aten_ops": first["top_level_aten_ops"],
            "shapes": sorted(([list(k), v[0], v[1]] for k, v in first["shapes"].items()), key=lambda x: -x[2]),
            "matmul_flops": sum(v[1] for v in first["shapes"].values())}


def shape_rates(shapes: list, repeats: int, budget_s: float, cover: float = 0.95, cap: int = 10) -> list:
    """torch.mm rates at the step's own shapes: the largest-FLOP shapes until ``cover`` of the FLOPs."""
    total, done, out = sum(s[2] for s in shapes), 0, []
    for (m, k, n), count, flops in shapes[:cap]:
        out.append({"shape": (m, k, n), "count": count, "flops": flops, "rate": mm_rate(m, k, n, repeats, budget_s)})
        done += flops
        if done >= cover * total:
            break
    return out


# ---------------------------------------------------------------- part 2: Ray, from a run folder


def ray_costs(run_dir: str) -> dict | None:
    """Ray's fixed cost per tiny-gpt2 trial of an existing run (bench_ray.read_run), or None."""
    if not os.path.isdir(os.path.join(run_dir, "tune")):
        return None
    from bench_ray import concurrency, read_run
    trials = read_run(run_dir)
    tiny = [t for t in trials if t["model"] == "tiny-gpt2"]
    if not tiny:
        return None
    out = {"n": len(tiny), "n_all": len(trials),
           "fixed": stats([t["time_total_s"] - t["wall_s"] for t in tiny]),
           "loop_wall": stats([t["wall_s"] for t in tiny]),
           "first_fixed": stats([t["first_fixed"] for t in tiny if t["first_fixed"] is not None] or [float("nan")]),
           "same": [t for t in tiny if t["method"] == "ngdiff" and t["lr_mode"] == "autolr"]}
    timed = [t for t in trials if t["start"] is not None]
    if timed:
        span = max(t["end"] for t in timed) - min(t["start"] for t in timed)
        conc = concurrency(timed)
        out["outside"] = span * conc / len(timed) - sum(t["time_total_s"] for t in timed) / len(timed)
        out["concurrency"] = conc
    return out


# ---------------------------------------------------------------- report


def pct(x: float, total: float) -> str:
    return f"{100 * x / total:.1f} %" if total else "n/a"


def run(args) -> dict:
    quick = args.quick
    data = Data()
    splits = eval_splits(data)
    names = list(MODELS)
    repeats = {"tiny-gpt2": 1, "gpt2-5m": 1} if quick else {"tiny-gpt2": 3, "gpt2-5m": 2}
    step_n = {"tiny-gpt2": 6, "gpt2-5m": 3} if quick else {"tiny-gpt2": 15, "gpt2-5m": 6}

    res, first_call = {}, None
    for name in names:
        base, ft = make_target(name, data, quick)
        if first_call is None:   # before any trial: the process-wide first-call costs land here, once
            first_call = first_call_cost(base, data, splits)
        prof = profile_trials(base, data, splits, repeats[name], with_plain=not quick)
        res[name] = {"params": n_params(base), "fine_tune": ft, **prof,
                     "cpu": phase_medians(prof["timed"], "phase_cpu"),
                     "wall": phase_medians(prof["timed"], "phase_wall"),
                     "steps": time_steps(base, data, step_n[name]),
                     "profile": op_profile(base, data, tries=3 if quick else 5)}
        del base
        gc.collect()

    # The matmul peak: squares, then each model's own shapes; best median wins.
    rep, budget = (3, 0.05) if quick else (3, 0.1)
    squares = {s: mm_rate(s, s, s, rep, budget) for s in SQUARES}
    for name in names:
        res[name]["shape_rates"] = shape_rates(res[name]["profile"]["shapes"], rep, budget, cap=5 if quick else 10)
    candidates = [(f"square {s}", r["median"]) for s, r in squares.items()]
    candidates += [(f"{name} {'x'.join(map(str, x['shape']))}", x["rate"]["median"])
                   for name in names for x in res[name]["shape_rates"]]
    peak_where, peak = max(candidates, key=lambda c: c[1])
    floor_us = dispatch_floor_us(5000 if quick else 20000)

    # ---- table 1: phases of one trial
    phase_rows = []
    for p in PHASES:
        row = [p]
        for name in names:
            tot = sum(res[name]["cpu"].values())
            row += [fmt(res[name]["cpu"][p], 3), pct(res[name]["cpu"][p], tot), fmt(res[name]["wall"][p], 3)]
        phase_rows.append(row)
    for label, keys in (("= evaluation, all parts", EVAL_PHASES),
                        ("= step phases (batch .. AutoLR)", PHASES[:7])):
        row = [f"*{label}*"]
        for name in names:
            tot = sum(res[name]["cpu"].values())
            c = sum(res[name]["cpu"][p] for p in keys)
            row += [fmt(c, 3), pct(c, tot), fmt(sum(res[name]["wall"][p] for p in keys), 3)]
        phase_rows.append(row)
    row = ["**total (in-process trial)**"]
    for name in names:
        row += [f"**{fmt(sum(res[name]['cpu'].values()), 3)}**", "100 %", fmt(sum(res[name]["wall"].values()), 3)]
    phase_rows.append(row)
    phase_cols = ["phase"] + [c for n in names for c in (f"{n} CPU s", f"{n} share", f"{n} wall s")]

    # ---- table 2: a demo-sized trial with Ray's part from the run folder
    run_dir = args.run if os.path.isabs(args.run) else os.path.join(ROOT, args.run)
    ray = None
    ray_note = None
    try:
        ray = ray_costs(run_dir)
    except Exception as e:  # noqa: BLE001 -- informational; the run folder or bench_ray may be mid-change
        ray_note = f"Reading {os.path.relpath(run_dir, ROOT)} failed ({type(e).__name__}: {str(e)[-200:]}); Ray rows skipped."
    tables = [{"caption": f"One trial in-process, phase by phase (NGDiff + AutoLR K={K}, {STEPS} steps, curve metrics "
                          f"every {EVAL['every']}, final evaluate; median of {repeats['tiny-gpt2']} / "
                          f"{repeats['gpt2-5m']} trials; exclusive seconds)", "columns": phase_cols, "rows": phase_rows}]
    tiny = res["tiny-gpt2"]
    demo_rows, demo = [], None
    if ray:
        # In-process rows in CPU seconds: the work itself, free of whoever shares the cores now; Ray's rows are
        # the run's wall seconds (2 trials on 2 cores: contention included).
        in_proc = {p: tiny["cpu"][p] for p in PHASES}
        in_proc[P_FIRST] = max(0.0, first_call["extra_cpu"])
        extra = {"Ray fixed cost (start-up + teardown) inside Tune's time_total_s": ray["fixed"]["median"]}
        if "outside" in ray:
            extra["Ray scheduling + teardown outside time_total_s (slot-cycle estimate)"] = max(0.0, ray["outside"])
        total = sum(in_proc.values()) + sum(extra.values())
        src_here = "measured here, in-process (CPU s)"
        src_run = (f"{os.path.relpath(run_dir, ROOT)}: median of {ray['n']} tiny-gpt2 trials, wall s "
                   f"(concurrency {ray.get('concurrency', '?')})")
        for p, v in in_proc.items():
            demo_rows.append([p, fmt(v, 3), pct(v, total), src_here])
        demo_rows.append(["*= in-process trial*", fmt(sum(in_proc.values()), 3), pct(sum(in_proc.values()), total),
                          src_here])
        for k, v in extra.items():
            demo_rows.append([f"**{k}**", fmt(v, 2), pct(v, total), src_run])
        demo_rows.append(["**total per trial slot**", fmt(total, 2), "100 %", ""])
        demo = {"in_process": sum(in_proc.values()), "ray": sum(extra.values()), "total": total}
        tables.append({"caption": "A demo-sized trial end to end (tiny-gpt2): the in-process phases above plus "
                                  "Ray's fixed cost read from the run folder (not measured here)",
                       "columns": ["part", "seconds", "share", "source"], "rows": demo_rows})

    # ---- table 3: achieved FLOP/s
    flop_rows, gap_rows = [], []
    for name in names:
        s = res[name]["steps"]
        f_step = statistics.mean(s["flops"])
        t_step = statistics.median(s["cpu"])
        achieved = sum(s["flops"]) / sum(s["cpu"]) / 1e9
        fb = sum(s["flops"]) / s["fwd_bwd_cpu"] / 1e9 if s["fwd_bwd_cpu"] else float("nan")
        # Kernel time = the kernels' share of the profiled step x the untraced step's CPU time: the profiler's
        # clock is wall time, so its absolute ms carry whatever else ran on the core; its shares much less.
        pr = res[name]["profile"]
        kern = (pr["groups"].get(G_MATMUL, 0) + pr["groups"].get(G_ATTN, 0)) / pr["traced"] * t_step
        in_kernel = f_step / kern / 1e9 if kern else float("nan")
        res[name]["flop_summary"] = {"flops": f_step, "step_cpu": t_step, "achieved": achieved, "fwd_bwd": fb,
                                     "in_kernel": in_kernel, "mfu": achieved / peak, "mfu_fb": fb / peak}
        flop_rows.append([f"{name} ({res[name]['params'] / 1e6:.2f}M)", fmt(f_step / MFLOP, 1),
                          ", ".join(f"{k} {v / f_step:.0%}" for k, v in sorted(s["by_op"].items(), key=lambda x: -x[1])),
                          fmt(t_step * 1e3, 1), fmt_stats(stats(s["rates"]), 2), fmt(fb, 2), fmt(in_kernel, 2),
                          fmt(peak, 1), f"**{100 * achieved / peak:.1f} %**", f"{100 * fb / peak:.1f} %", s["steps"]])
    tables.append({"caption": f"Achieved FLOP/s of one training step (static-lr NGDiff step: forward + backward of "
                              f"the retain and the forget batch, {THREADS} torch thread(s)) vs the measured matmul peak",
                   "columns": ["model", "MFLOP / step", "FLOPs by op", "step CPU ms (median)",
                               "achieved GFLOP/s (per step)", "GFLOP/s over fwd+bwd time only",
                               "GFLOP/s inside matmul+attention kernels (profile share x step time)", "peak GFLOP/s",
                               "MFU (whole step)", "MFU (fwd+bwd only)", "steps"], "rows": flop_rows})

    # ---- table 4: the peak
    peak_rows = [[f"square {s} x {s} x {s}", "", fmt_stats(r, 1)] for s, r in squares.items()]
    for name in names:
        for x in res[name]["shape_rates"]:
            m, k, n = x["shape"]
            peak_rows.append([f"{name}: {m} x {k} x {n}", f"{x['count']} calls, {x['flops'] / res[name]['profile']['matmul_flops']:.0%} of its matmul FLOPs",
                              fmt_stats(x["rate"], 1)])
    tables.append({"caption": f"Matmul peak: torch.mm float32, {THREADS} thread(s), CPU time (M x K x N; GFLOP/s min / "
                              f"**median** / max over {rep} repeats); peak = best median ({peak_where}: {peak:.1f} GFLOP/s)",
                   "columns": ["shape", "in one step", "GFLOP/s"], "rows": peak_rows})

    # ---- table 5: where the gap goes (shares of the profiled step, applied to the untimed step's CPU time)
    for grp in GROUPS:
        row = [grp]
        for name in names:
            pr, t_step = res[name]["profile"], res[name]["flop_summary"]["step_cpu"]
            v = pr["groups"].get(grp, 0.0)
            row += [pct(v, pr["traced"]), fmt(v / pr["traced"] * t_step * 1e3, 1)]
        gap_rows.append(row)
    row = ["**step**"]
    for name in names:
        pr = res[name]["profile"]
        row += [f"100 % of {pr['traced'] * 1e3:.0f} ms under the profiler (min per op of {pr['tries']})",
                f"**{fmt(res[name]['flop_summary']['step_cpu'] * 1e3, 1)}** (CPU, no profiler)"]
    gap_rows.append(row)
    model_rows = []
    for name in names:
        fs, pr = res[name]["flop_summary"], res[name]["profile"]
        sr = res[name]["shape_rates"]
        covered = sum(x["flops"] for x in sr)
        # untimed shapes (the last few % of the FLOPs) at the timed ones' average rate
        t_shapes = sum(x["flops"] / (x["rate"]["median"] * 1e9) for x in sr) * pr["matmul_flops"] / covered
        t_peak = pr["matmul_flops"] / (peak * 1e9)
        t_kernel = pr["groups"].get(G_MATMUL, 0.0) / pr["traced"] * fs["step_cpu"]
        res[name]["gap"] = {"t_peak": t_peak, "t_shapes": t_shapes, "t_kernel": t_kernel}
        model_rows.append([name, fmt(pr["matmul_flops"] / MFLOP, 1), fmt(t_peak * 1e3, 2), fmt(t_shapes * 1e3, 2),
                           fmt(t_kernel * 1e3, 2), fmt(fs["step_cpu"] * 1e3, 1),
                           f"{pr['aten_ops']} ({pr['top_level_aten_ops']} top-level)",
                           fmt(pr["aten_ops"] * floor_us / 1e3, 1)])
    tables.append({"caption": "Where the gap goes: one static NGDiff step under torch.profiler -- each category's share "
                              "of the profiled step's self time, and that share of the step's CPU time without the "
                              "profiler (ms); the profiler adds ~1-2 us per op, so small-op categories read high",
                   "columns": ["category"] + [c for n in names for c in (f"{n} share", f"{n} ~ms")], "rows": gap_rows})
    tables.append({"caption": "The matmul part of the gap (mm/addmm only, one step): at the peak rate, at the rates "
                              "these shapes reach standalone, and inside the step (profile share x step CPU time)",
                   "columns": ["model", "matmul MFLOP", "ms at peak", "ms at these shapes' standalone rates",
                               "ms in the step", "whole step CPU ms", "aten ops in the step",
                               f"ms at the per-op floor ({floor_us:.1f} us/op)"], "rows": model_rows})

    # ---- notes
    notes = [
        "Phase method: the real trial code (Unlearner.step, TofuTask.curve_metrics / evaluate / select, the checkpoint "
        "torch.save of _report) with the Unlearner instance's methods, torch.Tensor.backward and tofu_eval's "
        "greedy_answers / answer_nll / score_pairs wrapped by a timer for the trial only (sweeper/ is not edited; the "
        "loop has no record_function ranges). Exclusive times: Adam's step inside AutoLR counts as optimizer step, "
        "the probes' forwards as AutoLR; 'other' is what no wrapper covers (StepBatches bookkeeping outside "
        "_batch, losses .tolist(), rule, finiteness checks, row dicts, the trial loop, the wrappers themselves).",
    ]
    if not quick:
        for name in names:
            pl = [p["cpu"] for p in res[name]["plain"]]
            tm = [p["cpu"] for p in res[name]["timed"]]
            notes.append(f"{name}: trial CPU time {statistics.median(tm):.2f} s with the wrappers vs "
                         f"{statistics.median(pl):.2f} s without ({len(pl)} interleaved trials each): the timing's own "
                         f"cost is {100 * (statistics.median(tm) / statistics.median(pl) - 1):+.1f} % (noise included).")
    for name in names:
        tm = res[name]["timed"]
        ft = res[name]["fine_tune"]
        med = {k: statistics.median([t[k] for t in tm]) for k in ("steps", "curve evaluations", "final evaluation")}
        fin = tm[-1]["final"]
        notes.append(f"{name}: inclusive CPU s per trial: {STEPS} steps {med['steps']:.2f}, "
                     f"{STEPS // EVAL['every']} curve evaluations {med['curve evaluations']:.2f}, final evaluation "
                     f"{med['final evaluation']:.2f}. Target: fine-tuned {ft['epochs']} epochs (loss "
                     f"{ft['final_loss']:.2f}); after unlearning ROUGE forget {fin['rouge_forget']:.2f} / retain "
                     f"{fin['rouge_retain']:.2f}; AutoLR probes: {', '.join(tm[-1]['statuses'])}.")
    notes.append(f"First-call costs: the final evaluation on the fresh {names[0]} target took "
                 f"{first_call['first_cpu']:.2f} CPU s the first time in this process and {first_call['second_cpu']:.2f} s "
                 f"the second: {first_call['extra_cpu']:.2f} s is paid once per process (ROUGE's nltk import, first "
                 "generate), i.e. once per trial worker. The trials above run after it; the demo table adds it back.")
    for name in names:
        tm, tot = res[name]["timed"], sum(res[name]["cpu"].values())
        n_curve = len(range(EVAL["every"], STEPS + 1, EVAL["every"])) + (STEPS % EVAL["every"] != 0)
        per_curve = statistics.median([t["curve evaluations"] for t in tm]) / n_curve
        step_phases = sum(res[name]["cpu"][p] for p in PHASES[:7])
        unl = res[name]["cpu"][P_GRAD] + res[name]["cpu"][P_DOT]
        notes.append(f"{name}: the curve evaluation at the last step (t = steps, a multiple of eval.every) and the "
                     f"final evaluate's first part (curve_scores) score the same parameters: {per_curve:.3f} CPU s "
                     f"computed twice = {pct(per_curve, tot)} of the in-process trial. The Unlearner's own gradient "
                     f"work (buffer zero/copy/combine + 3 dot products) is {pct(unl, step_phases)} of the step phases.")
    if ray:
        same = ray["same"]
        notes.append(f"Ray rows: from {os.path.relpath(run_dir, ROOT)} via bench_ray.read_run (finished, status-ok "
                     f"trials; {ray['n']} tiny-gpt2 of {ray['n_all']}): fixed = Tune time_total_s - the trial's loop "
                     f"wall_s, min / median / max {fmt_stats(ray['fixed'], 1)} s; the run's own loop wall_s "
                     f"{fmt_stats(ray['loop_wall'], 2)} s (2 trials sharing 2 cores, and it includes ray.train.report's "
                     f"checkpoint upload) vs {sum(tiny['wall'].values()):.2f} s wall ({sum(tiny['cpu'].values()):.2f} CPU s) "
                     "in-process here"
                     + (f"; the tiny-gpt2 NGDiff+AutoLR trial itself: fixed {same[0]['time_total_s'] - same[0]['wall_s']:.1f} s"
                        if same else "") + ". The run folder is read as it is now (the Ray fixed cost is being "
                     "changed elsewhere; rerun after a new demo run to update these rows). The outside-time_total_s row "
                     "is bench_ray's slot-cycle estimate (1 s timestamp resolution).")
    else:
        notes.append(ray_note or f"No finished Tune trials of tiny-gpt2 under {os.path.relpath(run_dir, ROOT)}/tune: "
                                 "the Ray rows are skipped (run `python -m sweeper.launch --grid demo` first).")
    notes += [
        "FLOPs: FlopCounterMode counts mm / addmm / bmm and attention (2 FLOPs per multiply-add), forward + backward "
        "of both batches; torch 2.13 has no formula for the CPU flash-attention kernel, so it is given torch's own "
        "sdpa formula (non-causal T x T, as for CUDA). Adam, layer norm, GELU, softmax, the loss and the Unlearner's "
        "dots are not counted (a few % of the FLOPs, all memory-bound). Counted on a second copy stepping the same "
        "StepBatches (same shapes) so the counter's dispatch overhead is not in the timed steps.",
        f"Peak: the best median torch.mm rate measured here at {THREADS} thread(s) over the square sizes "
        f"{', '.join(map(str, SQUARES))} and each model's largest-FLOP step shapes ({peak_where}). A matmul-bound "
        "step could at best reach it; MFU = achieved / peak.",
        "Profile method: torch.profiler (CPU, record_shapes) over one static step, the Unlearner's phases marked with "
        "record_function ranges by the same instance wrapping; each event's self time goes to the range it runs in "
        "(optimizer, Unlearner buffer/dots, collation) or else to its op's kind; time inside no event is Python and "
        "autograd-engine time between ops. The profiler's times are wall-clock and add ~1-2 us per op: the same "
        "step is profiled several times from the same state and every op keeps its minimum over the tries "
        "(preemption by other processes only adds time); read the shares, not the absolute ms. For the "
        "Unlearner's own work the phase table (CPU time over 30 steps x several trials) is the better number.",
    ]
    for name in names:
        fs, pr, gp = res[name]["flop_summary"], res[name]["profile"], res[name]["gap"]
        g, tr = pr["groups"], pr["traced"]
        tensor_ops = sum(g.get(k, 0.0) for k in (G_ATTN, G_COMPUTE, G_OPT, G_UNL))
        overhead = sum(g.get(k, 0.0) for k in (G_FRAME, G_PY, G_BATCH))
        shape_rate = pr["matmul_flops"] / gp["t_shapes"] / 1e9
        notes.append(
            f"Why the gap, {name} (MFU {100 * fs['mfu']:.1f} %, {fs['step_cpu'] * 1e3:.0f} ms/step; at the peak the "
            f"matmuls alone would take {gp['t_peak'] * 1e3:.1f} ms): (1) matrix size -- at the step's own shapes "
            f"(M = batch x seq ~ 300 rows) torch.mm reaches {shape_rate:.1f} GFLOP/s standalone, "
            f"{100 * (1 - shape_rate / peak):.0f} % below the peak: the physical small-matrix cost, "
            f"{(gp['t_shapes'] - gp['t_peak']) * 1e3:.1f} ms; inside the step the same matmuls take "
            f"~{gp['t_kernel'] * 1e3:.1f} ms (profile share; operands not in cache, transposed operands in "
            f"backward, the profiler's share error). (2) other "
            f"tensor work (attention, layer norm, GELU, log-softmax + NLL over the vocabulary, elementwise, Adam, the "
            f"Unlearner's buffer and dots): {pct(tensor_ops, tr)} of the profiled step -- memory-bound, ~1 FLOP per "
            f"byte, physical for any model, its share falling as d grows. (3) per-op overhead: {pr['aten_ops']} aten "
            f"ops per step (>= {floor_us:.1f} us each, ~{pr['aten_ops'] * floor_us / 1e3:.1f} ms), views, autograd "
            f"nodes, Python and engine time between ops, collation: {pct(overhead, tr)} of the profiled step -- fixed "
            f"per op, not per FLOP, so the smaller model pays it most; avoidable only by fewer, larger ops (fusion, "
            f"torch.compile, bigger batches), not by the loop.")
    notes.append(f"Load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; "
                 "CPU times count this process's work, wall times also count waiting for a shared core.")

    # ---- summary
    summary = []
    for name in names:
        tot = sum(res[name]["cpu"].values())
        ev = sum(res[name]["cpu"][p] for p in EVAL_PHASES)
        fs = res[name]["flop_summary"]
        summary.append({"what": f"Trial time split, {name} (in-process, {STEPS} steps + evaluations)",
                        "target": "(informational)",
                        "value": f"{tot:.2f} CPU s: evaluation {pct(ev, tot)}, forward {pct(res[name]['cpu'][P_FWD], tot)}, "
                                 f"backward {pct(res[name]['cpu'][P_BWD], tot)}, grad buffer + dots "
                                 f"{pct(res[name]['cpu'][P_GRAD] + res[name]['cpu'][P_DOT], tot)}",
                        "met": None, "why": ""})
        summary.append({"what": f"Model FLOPs utilisation of a training step, {name}", "target": "(informational)",
                        "value": f"{fs['achieved']:.2f} GFLOP/s of {peak:.1f} peak = {100 * fs['mfu']:.1f} % "
                                 f"({100 * fs['mfu_fb']:.1f} % over forward + backward only)",
                        "met": None, "why": ""})
    if ray:
        summary.append({"what": "Ray's part of a demo-sized trial slot (tiny-gpt2)", "target": "(informational)",
                        "value": f"{demo['ray']:.1f} s Ray (from {os.path.relpath(run_dir, ROOT)}) vs "
                                 f"{demo['in_process']:.2f} s in-process work: Ray {pct(demo['ray'], demo['total'])}",
                        "met": None, "why": ""})

    raw = {"peak": {"gflops": peak, "where": peak_where, "squares": {str(k): v for k, v in squares.items()}},
           "dispatch_floor_us": floor_us, "first_call": first_call, "ray": ray, "demo": demo, "models": {}}
    for name in names:
        r = res[name]
        raw["models"][name] = {"params": r["params"], "fine_tune": r["fine_tune"], "phase_cpu_median": r["cpu"],
                               "phase_wall_median": r["wall"],
                               "trials": r["timed"],
                               "plain_trials_cpu": [p["cpu"] for p in r["plain"]], "steps": r["steps"],
                               "profile": r["profile"], "shape_rates": r["shape_rates"],
                               "flop_summary": r["flop_summary"], "gap": r["gap"]}
    return {"title": "7. Where the time goes in one trial, and achieved FLOP/s vs the matmul peak",
            "intro": [f"Built-in TOFU twin (20 authors x 10 QA, forget10), NGDiff + Adam lr 1e-3, batch 8 + 8, "
                      f"eval max_questions {EVAL['max_questions']}, max_new_tokens {EVAL['max_new_tokens']}; "
                      f"{THREADS} torch thread(s). Informational: no targets. Shares are of the median trial."],
            "tables": tables, "notes": notes, "summary": summary, "raw": raw}


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0],
         lambda ap: ap.add_argument("--run", default="runs/demo",
                                    help="run folder whose Tune results give Ray's fixed cost (default runs/demo)"))
