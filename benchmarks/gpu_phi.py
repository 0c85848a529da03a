"""GPU benchmark: the project's real unlearning step (sweeper.loop.Unlearner) on a Phi-1.5-sized model.

Precision measured: the product's mixed precision for a grid's ``dtype: bfloat16``: parameters, gradients
(the Unlearner's flat buffer), its g_R copy and Adam's moments are float32, and every step runs under
``sweeper.models.compute_precision("bfloat16", "cuda")`` (torch.autocast), so the matmuls and attention
compute in bf16. (Pure bf16 weights lost most Adam steps at lr 1e-5 to rounding; the product no longer
does that, so neither does this benchmark.)

What it does, in one process, offline (no hub, no network, no dataset download):

1. Builds a model with Phi-1.5's published shape from ``transformers.PhiConfig`` (vocab 51200, hidden
   2048, intermediate 8192, 24 layers, 32 heads, partial rotary 0.5, 2048 positions, untied head,
   gelu_new, dropout 0): 1,418,270,720 parameters, RANDOM weights, built directly on the GPU in FLOAT32
   with ``attn_implementation="sdpa"``. No ``from_pretrained``.
2. Makes TOFU-like random token data: forget / retain rows of 64..128 tokens, the first quarter to half
   a prompt (labels -100) and the rest an answer, right-padded to 128 by the project's ``collate_qa``;
   32 forget + 32 retain rows per step (Adam, lr 1e-5, as in the paper's TOFU runs).
3. Runs, each on its own copy of the same initial weights, through the project's real Unlearner
   (device cuda): ``ngdiff`` static, ``gdiff`` (c = 0.5) static, ``ngdiff+autolr`` (AutoLR, K = 10),
   and, as a reference, ``gdiff-plain``: c L_R - (1 - c) L_F by plain gradient accumulation, without the
   Unlearner's flat buffer, g_R copy, dot products and syncs (the gradient of bench_step's "GDiff (b)";
   ``--no-plain`` drops it). Every step (warm-up, timed, FLOP-counted, and the plain reference's) runs
   inside ``compute_precision("bfloat16", ...)``, as the product's trials do: torch.autocast with its
   cast cache off, so every forward pass (AutoLR's probes at theta +- xi Delta included) casts the
   weights as they are now.
   At most TWO variants are resident at once, in three phases, each a pair interleaved against the
   static NGDiff Unlearner:

   * phase A: ``ngdiff`` vs ``gdiff``          -> NGDiff / GDiff (both the Unlearner)
   * phase B: ``ngdiff`` vs ``ngdiff+autolr``  -> AutoLR overhead
   * phase C: ``ngdiff`` vs ``gdiff-plain``    -> NGDiff / plain GDiff (reference); GDiff Unlearner /
     plain GDiff is derived from phases A and C (via ngdiff, not paired)

   Within a phase: warm-up steps, then timed blocks of K = 10 steps (so each AutoLR block holds exactly
   one probe), the two variants interleaved with the order alternating every repeat, so drift (clocks,
   other jobs) hits both alike; torch.cuda.synchronize around every step. Between phases everything is
   freed (del, gc.collect(), torch.cuda.empty_cache()) and the model is rebuilt from the same seed.
4. Reports per variant and phase: ms/step (min / median / max over blocks), tokens/s, own peak memory
   (torch.cuda.max_memory_allocated, reset before every block, minus the partner's resident tensors),
   FLOPs/step counted with torch.utils.flop_counter.FlopCounterMode on real steps (plus 6 N tokens as a
   cross-check), achieved FLOP/s and MFU against the chip's bf16 dense spec peak (H100 SXM / H200 989
   TFLOP/s, H100 PCIe 756, A100 312, ...) AND against a measured 8192^3 bf16 torch.mm peak; the
   NGDiff/GDiff step-time ratio (target <= 1.05) and the AutoLR overhead (target <= 7 %); each phase's
   resident and peak memory; and a few loop internals (the three dot products, the g_R copy, Adam).
5. Handles: no GPU (exits with a message unless ``--cpu-smoke``); CUDA OOM (reported, that variant is
   dropped and its partner continues; a variant that ran out of memory only because its partner was
   resident is retried alone right after its phase, marked "solo"); a global time budget
   (``--budget-s``, default 420 s from start, shared out among the phases still to run: no new repeat is
   started that would not finish in its phase's share, what was measured is reported).

Command (from the repository root, on the GPU machine)::

    python benchmarks/gpu_phi.py --out benchmarks/gpu_results.json

Memory (N = 1,418,270,720 parameters; GiB = 2^30 bytes):

* an Unlearner variant keeps 5 x 4 B x N = 26.4 GiB resident: float32 params, flat gradient buffer,
  g_R copy, Adam m and v; the plain reference 4 x 4 B x N = 21.1 GiB (no g_R);
* during a step: the bf16 casts of the weights (2 B x N = 2.6 GiB per forward pass; backward
  keeps) plus one 32 x 128 batch's activations, ~15-20 GiB under autocast (estimated: ~125 KiB per token
  and layer under CPU autocast, more on CUDA where gelu_new's pow/tanh and layer_norm run in float32);
  Adam's foreach step and AutoLR's Delta add up to 1-2 x 5.3 GiB after the activations are gone;
* phase A and B: 2 x 26.4 = 52.8 GiB resident, ~72-76 GiB peak; phase C: 26.4 + 21.1 = 47.6 GiB
  resident, ~67-71 GiB peak. Fits a 141 GB H200 with room; fits an 80 GB H100 (79 GiB) with little
  margin: if a pair does not fit, the OOM handling drops one and times it alone after the phase (its
  ratio then compares separate runs, and the report says so). The report prints each phase's measured
  resident and peak bytes.

Expected runtime: about 3-5 minutes on one H100/H200 (imports ~15 s, matmul peak ~5 s; per phase: build
~5-10 s, warm-up and FLOP counting ~5-10 s, 8 repeats x 2 variants x 10 steps at ~0.2-0.4 s/step; 3
phases; diagnostics ~10 s); never more than ~7.5 minutes (the budget, 420 s, and one block past it at
most).

Verify without a GPU (tiny config, float32 weights, bf16 CPU autocast, CPU, ~15-40 s on a busy 2-core
machine; also builds the full-size model in float32 on the meta device and prints its parameter count,
FLOPs and the float32 resident-bytes estimate, allocating nothing)::

    python benchmarks/gpu_phi.py --cpu-smoke --out /tmp/gpu_phi_smoke.json

What to paste into benchmarks/RESULTS.md: the markdown the script prints at the end (also stored under
"markdown" in the JSON): a "## GPU: ..." section with the GPU name, the per-variant table, the ratio
table, the phase (memory) table and the internals table; add its "summary" rows to RESULTS.md's summary
table if wanted.
"""
from __future__ import annotations

import time

T_START = time.perf_counter()   # the time budget counts from here (imports included)

import argparse  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

# Two float32 models and their optimizer states share the GPU while activations and autocast's bf16 weight
# casts come and go: expandable segments keep fragmentation from turning into a spurious OOM. Set before
# torch initialises CUDA.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from common import fmt, fmt_stats, persistent_bytes, render, stats  # noqa: E402  (sets sys.path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from sweeper.autolr import AutoLRConfig  # noqa: E402
from sweeper.data.qa import IGNORE, collate_qa  # noqa: E402
from sweeper.lm import sequence_logprobs  # noqa: E402
from sweeper.loop import LoopConfig, StepBatches, Unlearner, _dot_tensor, make_optimizer  # noqa: E402
from sweeper.models import compute_precision  # noqa: E402

TARGET_RATIO = 1.05       # NGDiff / GDiff step time
TARGET_AUTOLR = 0.07      # AutoLR (K = 10) overhead vs static NGDiff
GIB = 2 ** 30

#: The product's mixed precision for a grid's ``dtype: bfloat16``: float32 weights and state, bf16 compute.
WEIGHT_DTYPE = torch.float32
COMPUTE_DTYPE = "bfloat16"
PRECISION = "bf16 autocast compute, float32 weights and Adam state (the product's mixed precision)"
#: Bytes per parameter kept resident between steps: float32 params, flat grads, g_R, Adam m and v (the
#: Unlearner); params, .grad, Adam m and v (the plain reference); the bf16 weight casts live during a step.
RESIDENT_BYTES_PER_PARAM = {"unlearner": 5 * 4, "plain": 4 * 4, "autocast_cast_cache": 2}

#: Phi-1.5 (microsoft/phi-1_5 config.json): the hyper-parameters that set its shape and compute.
PHI15 = dict(vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
             num_attention_heads=32, num_key_value_heads=32, partial_rotary_factor=0.5,
             max_position_embeddings=2048, tie_word_embeddings=False, hidden_act="gelu_new",
             layer_norm_eps=1e-5, rope_theta=10000.0, qk_layernorm=False, resid_pdrop=0.0,
             embd_pdrop=0.0, attention_dropout=0.0, initializer_range=0.02)
#: The CPU smoke test's tiny twin of it.
TINY = dict(PHI15, vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)

#: bf16 dense (no sparsity) tensor-core peaks, TFLOP/s, by device-name substring (first match wins).
SPEC_PEAKS = [("H100 PCIe", 756.0, "H100 PCIe spec"), ("H100 NVL", 835.0, "H100 NVL spec"),
              ("H200", 989.0, "H200 spec (= H100 SXM)"), ("GH200", 989.0, "GH200 spec"),
              ("H100", 989.0, "H100 SXM spec"), ("H800", 989.0, "H800 SXM spec"),
              ("B200", 2250.0, "B200 spec"), ("A100", 312.0, "A100 spec"), ("A800", 312.0, "A800 spec"),
              ("L40S", 362.0, "L40S spec")]

VARIANTS = ("ngdiff", "gdiff", "ngdiff+autolr", "gdiff-plain")
#: At most two variants resident at once: each phase interleaves one pair (its partner is static NGDiff).
PHASES = (("A", ("ngdiff", "gdiff")), ("B", ("ngdiff", "ngdiff+autolr")), ("C", ("ngdiff", "gdiff-plain")))


def fmt_flops(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f} s] {msg}", file=sys.stderr, flush=True)


def is_oom(e: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(e, oom_types):
        return True
    s = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in s or "CUBLAS_STATUS_ALLOC_FAILED" in s)


def short_error(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}"


# ---------------------------------------------------------------- model and data


def phi_config(smoke: bool) -> transformers.PhiConfig:
    return transformers.PhiConfig(**(TINY if smoke else PHI15))


def build_phi(config, device, dtype, seed: int = 0) -> torch.nn.Module:
    """Random-weight Phi from its config, created directly on ``device`` (meta: no memory at all)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if torch.device(device).type != "meta":
        model.to(device)   # a no-op when the device context was honoured (it is in transformers 5.x)
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def n_matmul_params(model) -> int:
    """Parameters that take part in matmuls (all but the input embedding table): N in 6 N tokens."""
    emb = model.get_input_embeddings().weight.numel()
    return n_params(model) - emb


class RandomQA:
    """TOFU-like rows of random token ids: a prompt (labels -100) then an answer, varying lengths."""

    def __init__(self, n_rows: int, seq_len: int, vocab: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.items, self.n_answer = [], []
        for i in range(n_rows):
            length = int(torch.randint(seq_len // 2, seq_len + 1, (1,), generator=g))
            prompt = int(torch.randint(max(1, length // 4), length // 2 + 1, (1,), generator=g))
            ids = torch.randint(3, vocab, (length,), generator=g)
            ids[-1] = 2   # "eos"
            labels = ids.clone()
            labels[:prompt] = IGNORE
            self.items.append({"input_ids": ids, "labels": labels, "index": i})
            self.n_answer.append(length - prompt)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class FixedWidthCollate:
    """The project's ``collate_qa``, then right-padded to a fixed width, so every step has the same shape
    (same FLOPs, no allocator churn from changing shapes) as a padded TOFU batch has."""

    def __init__(self, pad_id: int, width: int):
        self.pad_id, self.width = pad_id, width

    def __call__(self, items: list[dict]) -> dict:
        b = collate_qa(items, self.pad_id)
        extra = self.width - b["input_ids"].shape[1]
        if extra > 0:
            b["input_ids"] = F.pad(b["input_ids"], (0, extra), value=self.pad_id)
            b["labels"] = F.pad(b["labels"], (0, extra), value=IGNORE)
            b["attention_mask"] = F.pad(b["attention_mask"], (0, extra), value=0)
        return b


class Data:
    def __init__(self, n_forget: int, n_retain: int, seq_len: int, vocab: int, seed: int = 0):
        self.forget_ds = RandomQA(n_forget, seq_len, vocab, seed * 2 + 1)
        self.retain_ds = RandomQA(n_retain, seq_len, vocab, seed * 2 + 2)
        self.collate = FixedWidthCollate(pad_id=0, width=seq_len)
        self.seq_len = seq_len


class PlainGDiff:
    """Reference GDiff step without the Unlearner's machinery: c L_R - (1 - c) L_F on the same batches as
    the Unlearner's step t, by plain gradient accumulation (forward+backward of c L_R, then of
    -(1 - c) L_F, into .grad), optimizer step. No flat buffer, no g_R copy, no norms or dot products, one
    sync. The same gradient as bench_step's one-backward "GDiff (b)", but holding one batch's activations
    at a time (one backward over both graphs would hold both batches' activations at once). Stepped under the
    same bf16 autocast as the Unlearner (``Variant.step``); its weights, .grad and Adam state are float32."""

    def __init__(self, model, data: Data, c: float, batch_size: int, lr: float, device, seed: int = 0):
        self.model, self.data, self.c, self.device = model, data, c, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer("adam", self.params, lr, 0.0)
        self.batches = StepBatches({"forget": len(data.forget_ds), "retain": len(data.retain_ds)}, batch_size, seed)

    def _batch(self, ds, idx):
        return {k: v.to(self.device) for k, v in self.data.collate([ds[i] for i in idx]).items()}

    def step(self, t: int) -> dict:
        self.model.train()
        rb = self._batch(self.data.retain_ds, self.batches.indices("retain", t))
        fb = self._batch(self.data.forget_ds, self.batches.indices("forget", t))
        self.optimizer.zero_grad(set_to_none=True)
        logp_r, n_r = sequence_logprobs(self.model, rb)
        loss_r = -logp_r.sum() / n_r.sum()
        (self.c * loss_r).backward()
        logp_f, n_f = sequence_logprobs(self.model, fb)
        loss_f = -logp_f.sum() / n_f.sum()
        (-(1 - self.c) * loss_f).backward()
        self.optimizer.step()
        lr_, lf_ = torch.stack([loss_r.detach(), loss_f.detach()]).tolist()   # the one sync
        return {"step": t, "loss_retain": lr_, "loss_forget": lf_}


# ---------------------------------------------------------------- device helpers


class Dev:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.max_alloc = 0      # phase peaks, kept across the per-block resets of the peak counters
        self.max_reserved = 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def reset_peak(self) -> None:
        if self.cuda:
            self.max_alloc = max(self.max_alloc, torch.cuda.max_memory_allocated(self.device))
            self.max_reserved = max(self.max_reserved, torch.cuda.max_memory_reserved(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)

    def start_phase(self) -> None:
        self.reset_peak()
        self.max_alloc = self.max_reserved = 0

    def phase_peaks(self) -> tuple[int, int]:
        """(max allocated, max reserved) bytes since start_phase."""
        if not self.cuda:
            return 0, 0
        return (max(self.max_alloc, torch.cuda.max_memory_allocated(self.device)),
                max(self.max_reserved, torch.cuda.max_memory_reserved(self.device)))

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def measure_matmul_peak(dev: Dev, n: int, dtype, iters: int, rounds: int = 3) -> dict:
    """Achieved FLOP/s of an n x n x n torch.mm (best of ``rounds`` rounds of ``iters`` calls)."""
    a = torch.randn(n, n, device=dev.device, dtype=dtype)
    b = torch.randn(n, n, device=dev.device, dtype=dtype)
    for _ in range(3):
        c = torch.mm(a, b)
    dev.sync()
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            c = torch.mm(a, b)
        dev.sync()
        best = min(best, time.perf_counter() - t0)
    del a, b, c
    dev.free()
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "iters": iters,
            "flops_per_s": 2.0 * n ** 3 * iters / best, "ms_per_mm": best / iters * 1e3}


def spec_peak(name: str) -> tuple[float | None, str]:
    """The bf16 dense spec peak (FLOP/s) for a device name, or None (unknown chip, or a MIG slice)."""
    if "MIG" in name:
        return None, "MIG slice: spec peak unknown"
    for key, tflops, why in SPEC_PEAKS:
        if key.lower() in name.lower():
            return tflops * 1e12, why
    return None, "unknown chip: no spec peak"


# ---------------------------------------------------------------- precision


def step_precision(dev: Dev):
    """The context a step runs in: ``compute_precision("bfloat16", device)``, exactly as the product's
    trials run (torch.autocast with its cast cache off, so every forward pass -- AutoLR's probes at
    theta +- xi Delta included -- casts the weights as they are now)."""
    return compute_precision(COMPUTE_DTYPE, dev.device)


# ---------------------------------------------------------------- variants


class Variant:
    def __init__(self, name: str, phase: str = ""):
        self.name = name
        self.phase = phase
        self.obj = None           # Unlearner or PlainGDiff
        self.alive = False
        self.error: str | None = None
        self.oom_with_others = False
        self.solo = False
        self.blocks: dict[int, float] = {}     # repeat -> seconds for the block of K steps
        self.step_s: dict[int, list[float]] = {}   # step t -> seconds (every time it ran in a timed block)
        self.peak_own = 0
        self.flops_normal: float | None = None
        self.flops_probe: float | None = None
        self.warm_step_s: float | None = None
        self.last_row: dict = {}
        self.autolr_statuses: list[str] = []

    @property
    def key(self) -> str:
        return f"{self.phase}:{self.name}"

    @property
    def label(self) -> str:
        return f"{self.name} [{self.phase}]" + (" (solo)" if self.solo else "")

    def step(self, dev: Dev, t: int) -> dict:
        """Step t of this variant under the product's mixed precision (a fresh autocast context)."""
        with step_precision(dev):
            return self.obj.step(t)

    def persistent(self) -> int:
        o = self.obj
        if isinstance(o, Unlearner):
            return persistent_bytes(o.model, o.optimizer, extra=[o.g_retain])["total"]
        return persistent_bytes(o.model, o.optimizer)["total"]

    def kill(self, dev: Dev, error: str | None = None) -> None:
        if error:
            self.error = error
        self.alive = False
        if self.obj is not None:
            model = self.obj.model
            for p in model.parameters():
                p.grad = None
            self.obj = None
            del model
        dev.free()


def make_variant(name: str, phase: str, base, data: Data, args, device) -> Variant:
    v = Variant(name, phase)
    model = copy.deepcopy(base)   # float32, like base
    if name == "gdiff-plain":
        v.obj = PlainGDiff(model, data, c=0.5, batch_size=args.batch, lr=args.lr, device=device)
    else:
        method = "gdiff" if name == "gdiff" else "ngdiff"
        cfg = LoopConfig(method=method, method_params={"c": 0.5} if method == "gdiff" else {}, optimizer="adam",
                         lr=args.lr, steps=10 ** 6, batch_size=args.batch, seed=0,
                         autolr=AutoLRConfig(every=args.k) if name.endswith("+autolr") else None)
        v.obj = Unlearner(model, data.forget_ds, data.retain_ds, data.collate, cfg, device=device)
    v.alive = True
    return v


def guarded(v: Variant, dev: Dev, what: str, fn, others_alive: bool = False):
    """Run fn(); on OOM or any other error, report it, drop the variant (free its memory), return None."""
    err, oom = None, False
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- an OOM or a divergence must not end the benchmark
        oom = is_oom(e)
        err = f"{'OOM' if oom else 'error'} during {what}: {short_error(e)}"
        if not oom:
            traceback.print_exc(file=sys.stderr)
    # outside the except block: the traceback (and the activations it references) is gone
    log(f"{v.label}: {err} -- dropped, continuing with the other variants")
    v.oom_with_others = oom and others_alive
    v.kill(dev, err)
    return None


def count_flops(v: Variant, dev: Dev, t: int) -> float:
    with FlopCounterMode(display=False) as fc:
        row = v.step(dev, t)   # under the same bf16 autocast as the timed steps
    v.last_row = row
    return float(fc.get_total_flops())


def timed_block(v: Variant, dev: Dev, steps: range) -> float:
    """Run the block's steps, synchronising around each; records per-step times and the own peak memory."""
    dev.sync()
    base = dev.allocated()
    own = v.persistent() if dev.cuda else 0
    dev.reset_peak()
    total = 0.0
    for t in steps:
        dev.sync()
        t0 = time.perf_counter()
        row = v.step(dev, t)
        dev.sync()
        dt = time.perf_counter() - t0
        total += dt
        v.step_s.setdefault(t, []).append(dt)
        v.last_row = row
        if row.get("autolr_status"):
            v.autolr_statuses.append(row["autolr_status"])
    if dev.cuda:
        v.peak_own = max(v.peak_own, dev.peak() - (base - own))
    return total


# ---------------------------------------------------------------- the run


def run_phase(vs: dict[str, Variant], dev: Dev, args, deadline: float, notes: list[str], label: str) -> int:
    """Warm-up, FLOP counting and interleaved timed repeats of the alive variants; returns repeats done."""
    K = args.k

    def alive():
        return [v for v in vs.values() if v.alive]

    # warm-up: step K-1 (a normal step) and step K (AutoLR's probe step): first-call costs (cuBLAS handles,
    # allocator growth, the probe's eval-mode path) stay out of the timed blocks
    for t in (K - 1, K):
        for v in alive():
            def warm(v=v, t=t):
                dev.sync()
                t0 = time.perf_counter()
                v.step(dev, t)
                dev.sync()
                return time.perf_counter() - t0
            dt = guarded(v, dev, f"warm-up step {t}", warm, others_alive=len(alive()) > 1)
            if dt is not None:
                v.warm_step_s = dt
    log(f"{label}: warm-up done: " + ", ".join(f"{v.name} {v.warm_step_s * 1e3:.0f} ms" for v in alive()))

    # FLOPs of one normal step (and of one probe step for AutoLR), counted on real steps
    for v in alive():
        if time.perf_counter() > deadline - 60:
            notes.append(f"{label}: FLOP counting skipped for {v.name} (time budget)")
            continue
        f = guarded(v, dev, "FLOP counting", lambda v=v: count_flops(v, dev, 2 * K + 1),
                    others_alive=len(alive()) > 1)
        if f is not None:
            v.flops_normal = f
        if v.alive and v.name.endswith("+autolr"):
            f = guarded(v, dev, "FLOP counting (probe step)", lambda v=v: count_flops(v, dev, 2 * K),
                        others_alive=len(alive()) > 1)
            if f is not None:
                v.flops_probe = f
    log(f"{label}: FLOPs counted")

    done = 0
    for r in range(args.repeats):
        names = [v.name for v in alive()]
        if not names:
            break
        est = sum((vs[n].blocks and statistics.median(vs[n].blocks.values())) or (vs[n].warm_step_s or 1.0) * K
                  for n in names)
        if time.perf_counter() + est * 1.2 > deadline:
            notes.append(f"{label}: stopped after {done} of {args.repeats} repeats: the next would pass the time "
                         f"budget (--budget-s {args.budget_s:.0f})")
            log(notes[-1])
            break
        # rotate who goes first every repeat (a pair alternates: ab, ba, ab, ...)
        order = names[r % len(names):] + names[:r % len(names)]
        steps = range(K * (r + 1) + 1, K * (r + 2) + 1)   # the same K steps (one probe at the end) for all
        for n in order:
            v = vs[n]
            if not v.alive:
                continue
            gc.collect()
            sec = guarded(v, dev, f"timed block {r}", lambda v=v: timed_block(v, dev, steps),
                          others_alive=len(alive()) > 1)
            if sec is not None:
                v.blocks[r] = sec
        done += 1
        log(f"{label}: repeat {r + 1}/{args.repeats}: " +
            ", ".join(f"{v.name} {v.blocks[r] / K * 1e3:.1f} ms/step" for v in alive() if r in v.blocks))
    return done


def internals(u: Unlearner, dev: Dev, reps: int = 3) -> dict:
    """Loop internals on a stepped Unlearner (.grad holds the last step's combined gradient, g_R its copy)."""
    def t_ms(fn) -> float:
        out = []
        for _ in range(reps):
            dev.sync()
            t0 = time.perf_counter()
            fn()
            dev.sync()
            out.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(out)

    res = {}
    res["grad_products (3 chunked float64 dots, 3 syncs)"] = t_ms(u._grad_products)

    def fused():
        r, f = u.g_retain, u.flat
        torch.stack([torch.dot(r, r).float(), torch.dot(f, f).float(), torch.dot(r, f).float()]).tolist()
    try:
        res["reference: 3 x torch.dot (one kernel each, 1 sync)"] = t_ms(fused)
    except Exception as e:  # noqa: BLE001
        res["reference: 3 x torch.dot"] = f"n/a ({short_error(e)})"
    res["save g_R (copy of the flat buffer)"] = t_ms(u._save_retain)
    res["zero the flat buffer"] = t_ms(u._zero_grads)
    res["combine g = w_R g_R - w_F g_F"] = t_ms(lambda: u._combine(1.0, 1.0))
    res["optimizer.step (Adam)"] = t_ms(u.optimizer.step)
    # how many ops the three dot products dispatch (float32 buffers: each chunk mul, sum, double, add)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        u._grad_products()
    res["ops dispatched by grad_products"] = Count.n
    return res


def meta_check(seq_len: int = 128, batch: int = 32) -> dict:
    """Build the FULL Phi-1.5 config in float32 on the meta device (no memory), count its parameters, the
    float32 bytes each variant keeps resident, its FLOPs for one fwd+bwd of a [batch, seq_len] batch (no
    attention mask: the mask code needs real data; no autocast on meta tensors, and FLOPs do not depend on
    the dtype), and the ops the loop's dot product dispatches on a float32 buffer of that size."""
    model = build_phi(phi_config(smoke=False), torch.device("meta"), WEIGHT_DTYPE)
    out = {"params": n_params(model), "matmul_params": n_matmul_params(model),
           "attn_implementation": model.config._attn_implementation,
           "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as fc:
        logits = model(input_ids=ids).logits
        F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none").sum().backward()
    out["flops_fwd_bwd_one_batch"] = float(fc.get_total_flops())
    out["six_n_tokens_one_batch"] = 6.0 * out["matmul_params"] * batch * seq_len
    n = out["params"]
    out["resident_bytes"] = {k: b * n for k, b in RESIDENT_BYTES_PER_PARAM.items()}
    out["resident_bytes_per_phase"] = {
        ph: sum(out["resident_bytes"]["plain" if v == "gdiff-plain" else "unlearner"] for v in pair)
        for ph, pair in PHASES}
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    buf = torch.empty(out["params"], dtype=WEIGHT_DTYPE, device="meta")   # the flat buffer is float32 now
    with Count():
        _dot_tensor(buf, buf)
    out["ops_per_dot"] = Count.n
    del model
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_results.json"),
                    help="JSON result file (also holds the markdown under 'markdown')")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny config on the CPU (float32 weights, bf16 CPU autocast): verifies the script "
                    "without a GPU (not a measurement)")
    ap.add_argument("--budget-s", type=float, default=None, help="global time budget in seconds (default 420; "
                    "smoke 240)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per phase (default 8; smoke 2)")
    ap.add_argument("--k", type=int, default=10, help="AutoLR's K and the block length in steps (default 10)")
    ap.add_argument("--batch", type=int, default=None, help="rows per split and step (default 32; smoke 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="padded sequence length (default 128; smoke 32)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--no-plain", action="store_true", help="skip the plain GDiff reference (phase C)")
    ap.add_argument("--matmul-n", type=int, default=None, help="size of the peak-measuring matmul (default 8192)")
    args = ap.parse_args()
    smoke = args.cpu_smoke
    args.budget_s = args.budget_s or (240.0 if smoke else 420.0)
    args.repeats = args.repeats or (2 if smoke else 8)
    args.batch = args.batch or (4 if smoke else 32)
    args.seq_len = args.seq_len or (32 if smoke else 128)
    deadline = T_START + args.budget_s
    notes: list[str] = []

    if not smoke and not torch.cuda.is_available():
        print("gpu_phi.py: no CUDA GPU is visible (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}). This benchmark needs one; run it on the "
              "GPU machine, or pass --cpu-smoke to check the script itself on the CPU.", file=sys.stderr)
        sys.exit(2)

    device = torch.device("cpu" if smoke else "cuda")
    dev = Dev(device)
    mm_dtype = getattr(torch, COMPUTE_DTYPE)   # the peak that matters: the compute dtype's matmul
    if dev.cuda:
        gpu_name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        hw = {"gpu": gpu_name, "gpu_memory_gib": props.total_memory / GIB, "capability": f"{props.major}.{props.minor}",
              "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    else:
        gpu_name = "none (CPU smoke test)"
        hw = {"gpu": gpu_name, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    hw.update(torch=torch.__version__, transformers=transformers.__version__, python=sys.version.split()[0])
    log(f"device {device} ({gpu_name}), precision: {PRECISION}")

    meta = None
    if smoke:
        meta = meta_check()
        log(f"full-size Phi-1.5 config on the meta device: {meta['params']:,} parameters "
            f"({meta['params'] / 1e9:.3f} B), {meta['flops_fwd_bwd_one_batch'] / 1e12:.2f} TFLOP per fwd+bwd of "
            f"32 x 128 (6 N tokens: {meta['six_n_tokens_one_batch'] / 1e12:.2f}); the loop's chunked dot "
            f"dispatches {meta['ops_per_dot']} ops per dot at that size (CPU chunking); float32 resident: "
            f"{meta['resident_bytes']['unlearner'] / GIB:.1f} GiB per Unlearner variant, "
            f"{meta['resident_bytes']['plain'] / GIB:.1f} GiB plain, +"
            f"{meta['resident_bytes']['autocast_cast_cache'] / GIB:.1f} GiB bf16 weight casts during a step; per "
            "phase " + ", ".join(f"{ph} {b / GIB:.1f} GiB" for ph, b in meta["resident_bytes_per_phase"].items()))

    # peaks: spec (by name) and measured (always)
    spec, spec_why = spec_peak(gpu_name) if dev.cuda else (None, "CPU: no spec peak")
    mm_n = args.matmul_n or (8192 if dev.cuda else 512)
    mm = measure_matmul_peak(dev, mm_n, mm_dtype, iters=50 if dev.cuda else 5)
    log(f"measured {mm['dtype']} {mm_n}^3 torch.mm: {mm['flops_per_s'] / 1e12:.1f} TFLOP/s; spec: "
        f"{'n/a' if spec is None else f'{spec / 1e12:.0f} TFLOP/s'} ({spec_why})")

    data = Data(n_forget=40 if smoke else 400, n_retain=360 if smoke else 3600, seq_len=args.seq_len,
                vocab=phi_config(smoke).vocab_size)
    phases = [(ph, pair) for ph, pair in PHASES if not (args.no_plain and "gdiff-plain" in pair)]
    vs: dict[str, Variant] = {}   # "phase:variant" -> Variant
    config = phi_config(smoke)
    info: dict = {}
    inside = None
    phase_info: list[dict] = []

    def build_base():
        """The float32 model, rebuilt from the same seed for every phase (the same initial weights)."""
        return build_phi(config, device, WEIGHT_DTYPE, seed=0)

    def share(i: int) -> float:
        """Phase i's deadline: an equal share of the time left among the phases still to run."""
        now = time.perf_counter()
        return now + max(0.0, deadline - now) / (len(phases) - i)

    for i, (ph, pair) in enumerate(phases):
        pvs = {n: Variant(n, ph) for n in pair}   # this phase's two variants, by name
        vs.update({v.key: v for v in pvs.values()})
        label = f"phase {ph} ({' vs '.join(pair)})"
        pi = {"phase": ph, "variants": list(pair), "repeats": 0, "resident": None, "peak_alloc": None,
              "peak_reserved": None, "seconds": None, "solo": []}
        phase_info.append(pi)
        t_phase = time.perf_counter()
        if t_phase > deadline - 45:
            notes.append(f"{label}: not run (time budget)")
            for v in pvs.values():
                v.error = "not run (time budget)"
            continue
        ph_deadline = share(i)
        dev.free()
        dev.start_phase()
        try:
            base = build_base()
        except Exception as e:  # noqa: BLE001
            base = None
            err = f"{'OOM' if is_oom(e) else 'error'} building the model: {short_error(e)}"
        if base is None:
            dev.free()
            log(f"{label}: {err}")
            for v in pvs.values():
                v.error = err
            continue
        if not info:
            info = {"params": n_params(base), "matmul_params": n_matmul_params(base),
                    "attn_implementation": base.config._attn_implementation,
                    "dtype": str(next(base.parameters()).dtype).removeprefix("torch."), "compute": COMPUTE_DTYPE,
                    "precision": PRECISION}
            log(f"model: {info['params']:,} parameters, {info['dtype']} weights, {COMPUTE_DTYPE} autocast "
                f"compute, attention {info['attn_implementation']}")
        for n in pair:
            def build(n=n):
                v = make_variant(n, ph, base, data, args, device)
                pvs[n] = vs[v.key] = v
                return v
            guarded(pvs[n], dev, "construction", build, others_alive=any(v.alive for v in pvs.values()))
        del base
        dev.free()
        pi["resident"] = dev.allocated() or None
        log(f"{label}: built" + (f", {pi['resident'] / GIB:.1f} GiB resident" if pi["resident"] else ""))
        pi["repeats"] = run_phase(pvs, dev, args, ph_deadline, notes, label)

        # loop internals (phase A's static NGDiff Unlearner, after its last step)
        u = pvs.get("ngdiff")
        if ph == "A" and u is not None and u.alive and time.perf_counter() < deadline - 60:
            inside = guarded(u, dev, "internals", lambda: internals(u.obj, dev))
        pi["peak_alloc"], pi["peak_reserved"] = (x or None for x in dev.phase_peaks())
        for v in pvs.values():
            if v.alive:
                v.kill(dev)
        del u

        # a variant that ran out of memory only because its partner was resident: alone, if time allows
        # (one with interleaved blocks keeps them: those are the better measurement)
        for n in [n for n in pair if pvs[n].oom_with_others and not pvs[n].blocks]:
            key = f"{ph}:{n}"
            if time.perf_counter() > deadline - 90:
                notes.append(f"{n} [{ph}]: no solo retry after its OOM (time budget)")
                continue
            log(f"{n} [{ph}]: retrying alone (it ran out of memory next to {' / '.join(m for m in pair if m != n)})")
            first_error = pvs[n].error
            try:
                solo_base = build_base()
                pvs[n] = vs[key] = make_variant(n, ph, solo_base, data, args, device)
                del solo_base
                dev.free()
            except Exception as e:  # noqa: BLE001
                solo_base = None
                pvs[n].error = f"{first_error}; solo retry: {short_error(e)}"
                dev.free()
                continue
            pvs[n].solo = True
            pi["solo"].append(n)
            run_phase({n: pvs[n]}, dev, args, share(i), notes, f"{label}, solo {n}")
            if pvs[n].alive:
                notes.append(f"{n} [{ph}]: OOM next to its partner ({first_error}); timed ALONE afterwards "
                             f"(not interleaved; its ratios compare medians of separate runs)")
            pvs[n].kill(dev)
        pi["seconds"] = time.perf_counter() - t_phase
        dev.free()
        log(f"{label}: done in {pi['seconds']:.0f} s, {pi['repeats']} repeats" +
            (f", peak {pi['peak_alloc'] / GIB:.1f} GiB allocated" if pi["peak_alloc"] else ""))

    result = assemble(vs, phases, args, hw, gpu_name, spec, spec_why, mm, info, meta, inside, notes, phase_info,
                      smoke, data)
    result["seconds"] = time.perf_counter() - T_START
    md = render(result)
    result["markdown"] = md
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(md)
    log(f"wrote {args.out}")


# ---------------------------------------------------------------- report


def assemble(vs, phases, args, hw, gpu_name, spec, spec_why, mm, info, meta, inside, notes, phase_info, smoke,
             data) -> dict:
    K, B, T = args.k, args.batch, args.seq_len
    tokens_step = 2 * B * T   # padded tokens through forward + backward per step (retain + forget batches)
    sb = StepBatches({"forget": len(data.forget_ds), "retain": len(data.retain_ds)}, B, 0)
    N = info.get("matmul_params")
    six_n = 6.0 * N * tokens_step if N else None
    mm_peak = mm["flops_per_s"]

    def block_ms(v):
        return [s / K * 1e3 for s in v.blocks.values()]

    rows, raw = [], {}
    for key in [f"{ph}:{n}" for ph, pair in phases for n in pair]:
        v = vs[key]
        n, label = v.name, v.label
        if not v.blocks:
            rows.append([label, f"**failed**: {v.error}" if v.error else "not timed", "", "", "", "", "", "", "", ""])
            raw[key] = {"error": v.error}
            continue
        ms = stats(block_ms(v))
        sec = ms["median"] / 1e3
        steps_timed = sorted(t for t in v.step_s)
        ans = statistics.mean(sum(data.forget_ds.n_answer[i] for i in sb.global_indices("forget", t)) +
                              sum(data.retain_ds.n_answer[i] for i in sb.global_indices("retain", t))
                              for t in steps_timed)
        if v.flops_normal is not None:
            flops = v.flops_normal if v.flops_probe is None else ((K - 1) * v.flops_normal + v.flops_probe) / K
        else:
            flops = None
        achieved = flops / sec if flops else None
        if six_n and n.endswith("+autolr"):   # + two probe forwards (2 N tokens each) of the retain batch per K
            six_n_v = six_n + 2 * (2.0 * N * B * T) / K
        else:
            six_n_v = six_n
        mfu_spec = achieved / spec if (achieved and spec) else None
        mfu_mm = achieved / mm_peak if achieved else None
        per_step_med = statistics.median(x for t in steps_timed for x in v.step_s[t]) * 1e3
        rows.append([label, fmt_stats(ms, 1), fmt(per_step_med, 1), f"{tokens_step / sec:,.0f}", f"{ans / sec:,.0f}",
                     "n/a (CPU)" if not v.peak_own else fmt(v.peak_own / GIB, 2),
                     "n/a" if flops is None else f"{fmt_flops(flops)} / {fmt_flops(six_n_v)}" if six_n_v else "",
                     "n/a" if achieved is None else fmt_flops(achieved),
                     "n/a" if mfu_spec is None else f"{mfu_spec * 100:.1f} %",
                     "n/a" if mfu_mm is None else f"{mfu_mm * 100:.1f} %"])
        raw[key] = {"variant": n, "phase": v.phase, "block_ms_per_step": block_ms(v), "ms_per_step": ms,
                    "per_step_median_ms": per_step_med,
                    "tokens_per_s": tokens_step / sec, "answer_tokens_per_s": ans / sec,
                    "peak_own_bytes": v.peak_own or None, "flops_per_step": flops, "flops_normal_step": v.flops_normal,
                    "flops_probe_step": v.flops_probe, "six_n_tokens": six_n_v, "achieved_flops_per_s": achieved,
                    "mfu_spec": mfu_spec, "mfu_measured_matmul": mfu_mm, "solo": v.solo, "error": v.error,
                    "blocks": len(v.blocks), "autolr_statuses": v.autolr_statuses,
                    "final_lr": v.last_row.get("lr"), "last_row": {k: x for k, x in v.last_row.items()
                                                                   if isinstance(x, (int, float, str))}}

    # ratios per repeat (paired blocks of the same K steps)
    def paired(num, den, minus_one=False):
        a, b = vs.get(num), vs.get(den)
        if not a or not b or not a.blocks or not b.blocks:
            return None
        common = sorted(set(a.blocks) & set(b.blocks))
        if common and not (a.solo or b.solo):
            vals = [a.blocks[r] / b.blocks[r] - (1 if minus_one else 0) for r in common]
            return stats(vals), "paired blocks"
        ra = statistics.median(a.blocks.values()) / statistics.median(b.blocks.values()) - (1 if minus_one else 0)
        return {"min": ra, "median": ra, "max": ra, "n": 1}, "medians of separate runs (solo retry)"

    ratio_rows, summary = [], []
    where = (f"Phi-1.5 size, {gpu_name}, bf16 autocast / float32 weights"
             + (" [CPU SMOKE, not a measurement]" if smoke else ""))
    for what, num, den, target, pct in (
            ("NGDiff / GDiff (both Unlearner) [A]", "A:ngdiff", "A:gdiff", TARGET_RATIO, False),
            ("NGDiff / GDiff plain (reference) [C]", "C:ngdiff", "C:gdiff-plain", TARGET_RATIO, False),
            ("GDiff Unlearner / GDiff plain [A, C]", None, None, None, False),
            ("AutoLR (K=10) overhead: ngdiff+autolr / ngdiff - 1 [B]", "B:ngdiff+autolr", "B:ngdiff", TARGET_AUTOLR,
             True)):
        if num is None:   # derived across phases: ([C] ngdiff / plain) / ([A] ngdiff / gdiff), via ngdiff
            c_, a_ = paired("C:ngdiff", "C:gdiff-plain"), paired("A:ngdiff", "A:gdiff")
            if c_ is None or a_ is None:
                ratio_rows.append([what, "n/a (a variant failed or was skipped)", "", "", "", ""])
                continue
            x = c_[0]["median"] / a_[0]["median"]
            ratio_rows.append([what, f"**{x:.3f}**", "", "", 1,
                               "derived: median [C] ngdiff/plain over median [A] ngdiff/gdiff (not paired)"])
            raw[f"ratio: {what}"] = {"median": x, "derived": True}
            continue
        pr = paired(num, den, minus_one=pct)
        if pr is None:
            ratio_rows.append([what, "n/a (a variant failed or was skipped)", "", "", "", ""])
            continue
        s, how = pr
        cell = (f"{s['min'] * 100:.1f} % / **{s['median'] * 100:.1f} %** / {s['max'] * 100:.1f} %" if pct
                else fmt_stats(s))
        met = None if target is None else s["median"] <= target
        tgt = "" if target is None else (f"<= {target * 100:.0f} %" if pct else f"<= {target}")
        ratio_rows.append([what, cell, tgt, "" if met is None else ("met" if met else "**not met**"), s["n"], how])
        raw[f"ratio: {what}"] = s
        if target is not None:
            val = f"{s['median'] * 100:+.1f} %" if pct else f"{s['median']:.3f}"
            summary.append({"what": f"{what}, {where}", "target": tgt, "value": val + f" (wall, {how})", "met": met,
                            "why": "" if met else "see the GPU section"})

    # AutoLR: paired probe-step excess over the static NGDiff step on the same batches
    a, s_ = vs.get("B:ngdiff+autolr"), vs.get("B:ngdiff")
    if a and s_ and a.step_s and s_.step_s:
        probe_ts = [t for t in a.step_s if t % K == 0 and t in s_.step_s]
        if probe_ts:
            exc = [statistics.median(a.step_s[t]) - statistics.median(s_.step_s[t]) for t in probe_ts]
            step_med = statistics.median(x for xs in s_.step_s.values() for x in xs)
            e = stats([x * 1e3 for x in exc])
            ratio_rows.append(["AutoLR probe-step excess (ms) and / (K x static step) [B]",
                               f"{fmt_stats(e, 1)} ms = {statistics.median(exc) / (K * step_med) * 100:.1f} %",
                               f"<= {TARGET_AUTOLR * 100:.0f} %", "", e["n"], "paired steps"])

    inside_rows = []
    if inside:
        for k_, x in inside.items():
            inside_rows.append([k_, x if isinstance(x, (int, str)) else fmt(x, 2)])

    intro = [
        f"Precision: {PRECISION}: the model is built in {info.get('dtype', 'float32')}; every step runs in its own "
        f"sweeper.models.compute_precision(\"{COMPUTE_DTYPE}\", device) (torch.autocast) context, so matmuls and "
        f"attention compute in bf16 while parameters, the flat gradient buffer, g_R and Adam's moments stay float32 "
        f"(5 x 4 B per parameter resident per Unlearner variant).",
        f"Model: Phi-1.5's shape from transformers.PhiConfig (hidden {phi_config(smoke).hidden_size}, "
        f"{phi_config(smoke).num_hidden_layers} layers, vocab {phi_config(smoke).vocab_size}), random weights, "
        f"{info.get('params', 0):,} parameters, {info.get('dtype', '?')} weights, {COMPUTE_DTYPE} autocast compute, "
        f"attention {info.get('attn_implementation', '?')}; built on the device from the config (offline)."
        + (" **CPU SMOKE TEST: tiny config, CPU (float32 weights, bf16 CPU autocast) -- checks the script, "
           "measures nothing.**" if smoke else ""),
        f"Machine: {gpu_name}"
        + (f" ({hw['gpu_memory_gib']:.0f} GiB, sm {hw['capability']}, CUDA {hw['cuda']})" if "cuda" in hw else "")
        + f"; torch {hw['torch']}, transformers {hw['transformers']}, Python {hw['python']}. "
        f"Peaks: spec {'n/a' if spec is None else f'{spec / 1e12:.0f} TFLOP/s'} ({spec_why}); measured "
        f"{mm['dtype']} {mm['n']}^3 torch.mm {mm['flops_per_s'] / 1e12:.1f} TFLOP/s ({mm['ms_per_mm']:.2f} ms each).",
        f"Step: the project's sweeper.loop.Unlearner (two forward+backward passes, flat gradient buffer, g_R copy, "
        f"3 dot products, Adam lr {args.lr:g}); {B} forget + {B} retain rows of random tokens, {T // 2}..{T} tokens "
        f"right-padded to {T} (prompt labels -100, answer scored); {tokens_step:,} padded tokens per step. "
        f"gdiff-plain: 0.5 L_R - 0.5 L_F by plain gradient accumulation, no flat buffer / g_R copy / dots "
        f"(reference, not the project's loop). "
        f"Timing: {len(phases)} phases with at most two variants resident, each pairing static NGDiff with one "
        f"other ({', '.join(f'{ph}: {pair[1]}' for ph, pair in phases)}; all freed and the model rebuilt from the "
        f"same seed between phases); within a phase blocks of K = {K} steps (one AutoLR probe per block), the two "
        f"variants interleaved, the order alternating, torch.cuda.synchronize around each step; repeats per phase: "
        + ", ".join(f"{p['phase']} {p['repeats']}" for p in phase_info)
        + ". Cells: min / **median** / max of the blocks' mean ms/step; [X] = the phase a row or ratio comes from.",
    ]
    table_notes = [
        "tokens/s: padded tokens through the two training forward+backward passes (AutoLR's probe forwards not "
        "counted); answer tok/s: the scored (label) tokens only.",
        "peak GiB: torch.cuda.max_memory_allocated during the variant's blocks (reset before each), minus what its "
        "partner held resident: the variant's own peak, as if alone (float32 state + bf16 weight casts + "
        "activations).",
        "FLOPs/step: torch.utils.flop_counter.FlopCounterMode over one real step (AutoLR: (K-1) normal + 1 probe "
        "step, / K) / 6 N tokens with N = the non-embedding parameters; achieved = counted FLOPs / median step "
        "time; MFU against the spec peak and against the measured matmul peak.",
    ]
    if meta:
        table_notes.append(
            f"Full-size check on the meta device (no memory): {meta['params']:,} parameters "
            f"({meta['params'] / 1e9:.3f} B, {meta['dtype']}, {meta['attn_implementation']}); one fwd+bwd of 32 x 128 "
            f"= {meta['flops_fwd_bwd_one_batch'] / 1e12:.2f} TFLOP counted (6 N tokens "
            f"{meta['six_n_tokens_one_batch'] / 1e12:.2f}), i.e. ~{2 * meta['flops_fwd_bwd_one_batch'] / 1e12:.1f} "
            f"TFLOP per unlearning step; the loop's _dot_tensor dispatches {meta['ops_per_dot']} ops per dot "
            f"product on a float32 buffer of this size with the CPU chunk (x 3 per step). Float32 resident bytes: "
            f"{meta['resident_bytes']['unlearner'] / GIB:.1f} GiB per Unlearner variant (params, flat grads, g_R, "
            f"Adam m, v), {meta['resident_bytes']['plain'] / GIB:.1f} GiB for the plain reference, + "
            f"{meta['resident_bytes']['autocast_cast_cache'] / GIB:.1f} GiB of bf16 weight casts during a step; per "
            f"phase: " + ", ".join(f"{ph} {b / GIB:.1f} GiB" for ph, b in meta["resident_bytes_per_phase"].items())
            + " resident, before activations.")
    for v in vs.values():
        if v.error and not v.blocks:
            table_notes.append(f"{v.label}: {v.error}")
        elif v.error:
            table_notes.append(f"{v.label}: stopped early: {v.error}")
    if "B:ngdiff+autolr" in vs:
        table_notes.append("AutoLR's probe losses (theta +- xi Delta, inside the step) see the moved weights: "
                           "compute_precision runs autocast with its cast cache off, one bf16 cast per forward.")
    statuses = vs.get("B:ngdiff+autolr")
    if statuses and statuses.autolr_statuses:
        c = {s: statuses.autolr_statuses.count(s) for s in sorted(set(statuses.autolr_statuses))}
        table_notes.append(f"AutoLR probe outcomes: {c}; final lr {statuses.last_row.get('lr')}.")
    tables = [
        {"caption": "Per variant", "columns": ["variant", "ms/step", "per-step median ms", "tokens/s",
                                                "answer tok/s", "peak GiB (own)", "FLOP/step (counted / 6N tok)",
                                                "achieved FLOP/s", "MFU (spec)", "MFU (measured mm)"],
         "rows": rows},
        {"caption": "Ratios (per repeat: paired blocks of the same steps)",
         "columns": ["ratio", "min / **median** / max", "target", "result", "n", "how"], "rows": ratio_rows},
    ]
    gib = (lambda b: "n/a (CPU)" if not b else fmt(b / GIB, 1))
    tables.append({"caption": "Phases (memory: torch.cuda, all resident variants together)",
                   "columns": ["phase", "variants", "resident GiB after build", "peak allocated GiB",
                               "peak reserved GiB", "repeats", "seconds", "solo retries"],
                   "rows": [[p["phase"], " vs ".join(p["variants"]), gib(p["resident"]), gib(p["peak_alloc"]),
                             gib(p["peak_reserved"]), p["repeats"],
                             "not run" if p["seconds"] is None else f"{p['seconds']:.0f}",
                             ", ".join(p["solo"]) or "-"] for p in phase_info]})
    if inside_rows:
        tables.append({"caption": "Loop internals on phase A's static NGDiff Unlearner (float32 buffers; ms, median "
                                  "of 3; diagnostic)",
                       "columns": ["part", "ms (or count)"], "rows": inside_rows})
    title = (f"GPU: NGDiff / GDiff / AutoLR step on a Phi-1.5-size model, {gpu_name} (bf16 autocast, float32 "
             f"weights)")
    if smoke:
        title = f"GPU benchmark script, CPU SMOKE TEST (tiny Phi twin, no GPU) -- {gpu_name}"
    return {"title": title, "summary": summary, "intro": intro, "tables": tables, "notes": table_notes + notes,
            "machine": hw, "model": info, "meta_full_size": meta, "matmul_peak": mm,
            "spec_peak_flops": spec, "spec_peak_source": spec_why, "precision": PRECISION, "phases": phase_info,
            "repeats_done": {p["phase"]: p["repeats"] for p in phase_info},
            "args": vars(args), "raw": raw, "internals": inside}


if __name__ == "__main__":
    main()
