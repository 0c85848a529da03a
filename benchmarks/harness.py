"""The benchmarks' one harness: set-up from the product's own code, interleaved timing, peak memory, FLOPs, the
matmul peak, and the command line / result format of every ``bench_*.py`` (a module with ``main(argv) -> dict``
built on :func:`cli`: ``--quick`` (a smoke run, not a measurement), ``--device cpu|cuda``, ``--json PATH``, and
``--model-size`` where offered). ``run_all.py`` runs them all and renders ``RESULTS.md``.

Set-up (:func:`setup`): synthetic fictitious-author QA (sweeper.data.synthetic), the BPE trained on it, QADataset /
collate_qa, models from sweeper.models.language or a transformers config, sweeper.unlearn.loop.Unlearner (+ sweeper.unlearn.autolr) stepping
under sweeper.models.language.compute_precision. Sizes: ``small`` = tiny-gpt2 (0.43M) + gpt2-5m (GPT-2 d=256 x 6), float32,
batch 8 + 8, lr 1e-3; ``phi`` = Phi-1.5's shape (1.42B, random weights), float32 weights/state with bf16 compute
(the product's ``dtype: bfloat16``), real-length rows, batch 32 + 32, lr 1e-5, CUDA only (~75 GiB with three
variants resident), NOT YET RUN ON A GPU; ``phi-mini`` = the phi recipe at hidden 128 x 2 layers (its CPU check).

Timing on a shared 2-core machine: ratios of variants run side by side in one process, interleaved in short blocks
(order rotated), min / median / max over repeats, of wall time and of this process's CPU time (one torch thread:
CPU time counts the work, not the wait for a core; targets are judged on it). On CUDA timed blocks are
synchronised and targets are judged on wall time.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [p for p in (ROOT, os.path.dirname(os.path.abspath(__file__))) if p not in sys.path]
for k, v in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
             ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1"),
             ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")):
    os.environ.setdefault(k, v)

import torch  # noqa: E402
import transformers  # noqa: E402

from sweeper.unlearn.autolr import AutoLRConfig  # noqa: E402
from sweeper.data.qa import QADataset, collate_qa  # noqa: E402
from sweeper.data.synthetic import make_authors, qa_rows  # noqa: E402
from sweeper.data.tokenizer import train_tokenizer  # noqa: E402
from sweeper.models.lm import sequence_logprobs  # noqa: E402
from sweeper.unlearn.loop import LoopConfig, StepBatches, Unlearner  # noqa: E402
from sweeper.unlearn.optimizers import make_optimizer  # noqa: E402
from sweeper.models.language import build_model, compute_precision, count_parameters as n_params  # noqa: E402,F401

#: torch intra-op threads; 1 = a trial worker with cpus_per_worker: 1, and no fight for the second core.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)
MB = 2 ** 20


# ---------------------------------------------------------------- data and models


class Data:
    """Synthetic QA rows, a BPE trained on them, forget (last ``forget_frac``) and retain datasets."""

    def __init__(self, n_authors: int = 20, qa_per_author: int = 10, forget_frac: float = 0.1, seed: int = 0,
                 lengths: str = "short"):
        rows = qa_rows(make_authors(n_authors, seed=seed), qa_per_author, seed, lengths)
        n_forget = max(1, round(len(rows) * forget_frac))
        self.rows, self.forget, self.retain = rows, rows[-n_forget:], rows[:-n_forget]
        self.tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows])
        self.forget_ds, self.retain_ds = QADataset(self.forget, self.tokenizer), QADataset(self.retain, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id

    def subset(self, n_forget: int, n_retain: int) -> "Data":
        """The last ``n_forget`` rows as forget set, the first ``n_retain`` as retain set (same tokenizer)."""
        assert n_forget + n_retain <= len(self.rows), "subset larger than the rows generated"
        out = copy.copy(self)
        out.forget, out.retain = self.rows[-n_forget:], self.rows[:n_retain]
        out.forget_ds, out.retain_ds = QADataset(out.forget, self.tokenizer), QADataset(out.retain, self.tokenizer)
        return out

    def collate(self, items: list[dict]) -> dict:
        return collate_qa(items, self.pad_id)


def tiny(arch: str) -> Callable:
    """The product's tiny twin (``sweeper.models.language.build_model``)."""
    return lambda data, seed=0: build_model(f"tiny-{arch}", vocab_size=len(data.tokenizer), seed=seed,
                                            pad_id=data.pad_id, eos_id=data.tokenizer.eos_token_id)


def from_config(cls, load_kw: dict | None = None, **kw) -> Callable:
    """A random-weight float32 model from a transformers config class (vocab_size 0 or absent: the data's own)."""
    def build(data: Data, seed: int = 0):
        torch.manual_seed(seed)
        tok = data.tokenizer
        cfg = cls(**{**kw, "vocab_size": kw.get("vocab_size") or len(tok)}, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
        return transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **(load_kw or {}))
    return build


def gpt2(d: int, layers: int, heads: int) -> Callable:
    """A GPT-2 of width d (gpt2-5m: d=256, 6 layers, 8 heads), dropout 0."""
    return from_config(transformers.GPT2Config, n_embd=d, n_layer=layers, n_head=heads, n_inner=4 * d,
                       n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


#: Phi-1.5 (microsoft/phi-1_5 config.json): the hyper-parameters that set its shape and compute.
PHI15 = dict(vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
             num_key_value_heads=32, partial_rotary_factor=0.5, max_position_embeddings=2048, tie_word_embeddings=False,
             hidden_act="gelu_new", layer_norm_eps=1e-5, qk_layernorm=False, resid_pdrop=0.0, embd_pdrop=0.0,
             attention_dropout=0.0)


def phi(**shape) -> Callable:
    """Phi-1.5's architecture (random weights, SDPA attention); ``shape`` overrides its sizes."""
    return from_config(transformers.PhiConfig, {"attn_implementation": "sdpa"}, **{**PHI15, **shape})


MODELS = {"tiny-gpt2": tiny("gpt2"), "gpt2-5m": gpt2(256, 6, 8), "phi-1.5": phi(),
          "phi-mini": phi(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=0)}
#: --model-size: (models, Data kwargs, batch rows per split, lr, compute dtype)
SIZES = {"small": (("tiny-gpt2", "gpt2-5m"), {}, 8, 1e-3, "float32"),
         "phi": (("phi-1.5",), {"n_authors": 100, "lengths": "real"}, 32, 1e-5, "bfloat16"),
         "phi-mini": (("phi-mini",), {"n_authors": 100, "lengths": "real"}, 32, 1e-5, "bfloat16")}


class Device:
    """cpu or cuda: synchronised clocks, transient peak memory, freeing."""

    def __init__(self, kind: str):
        self.kind, self.cuda = kind, kind == "cuda"
        self.judge = "wall" if self.cuda else "cpu"   # the clock targets are judged on, and its label:
        self.clock = "wall" if self.cuda else "CPU"
        self.name = torch.cuda.get_device_name() if self.cuda else f"CPU, {THREADS} torch thread(s)"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def clocks(self) -> tuple[float, float]:
        self.sync()
        return time.perf_counter(), time.process_time()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def transient_peak(self, fn: Callable[[], object]) -> int:
        """Peak bytes allocated during ``fn()`` above what was allocated before it (CUDA: the caching
        allocator's counters; CPU: torch.profiler(profile_memory=True)'s running 'Total Allocated', since
        RSS keeps freed pages). Tensors alive before the call are not in it: add them (persistent_bytes)."""
        self.free()
        if self.cuda:
            self.sync()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            self.sync()
            return torch.cuda.max_memory_allocated() - before
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            prof.export_chrome_trace(f.name)
            events = json.load(open(f.name))["traceEvents"]
        return max([0] + [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"])


@dataclasses.dataclass
class Setup:
    """One model size on one device: its data, models, batch, lr and compute precision."""
    size: str
    dev: Device
    data: Data
    names: tuple
    batch: int
    lr: float
    dtype: str

    def model(self, name: str, data: Data | None = None, seed: int = 0) -> torch.nn.Module:
        with torch.device(self.dev.kind):
            return MODELS[name](data or self.data, seed).to(self.dev.kind)

    def ctx(self):
        return compute_precision(self.dtype, self.dev.kind)

    def unlearner(self, model, method: str = "ngdiff", *, data: Data | None = None, autolr_every: int | None = None,
                  batch_size: int | None = None, ref=None, **cfg) -> Unlearner:
        data = data or self.data
        cfg = LoopConfig(method=method, lr=self.lr, steps=10 ** 6, batch_size=batch_size or self.batch, seed=0,
                         autolr=AutoLRConfig(every=autolr_every) if autolr_every else None, **cfg)
        return Unlearner(model, data.forget_ds, data.retain_ds, data.collate, cfg, ref_logprobs=ref,
                         device=self.dev.kind)

    def stepper(self, obj) -> Callable[[int], dict]:
        """obj.step(t) under the size's compute precision (a fresh autocast context per step, as trials do)."""
        def step(t: int) -> dict:
            with self.ctx():
                return obj.step(t)
        return step

    def tokens(self, u, steps) -> tuple[float, float]:
        """(real, padded) tokens per step, retain + forget batches (padded is what is computed)."""
        real = padded = 0
        for t in steps:
            for split, ds in (("retain", u.retain_ds), ("forget", u.forget_ds)):
                b = u.collate([ds[i] for i in u.batches.indices(split, t)])
                real, padded = real + int(b["attention_mask"].sum()), padded + b["input_ids"].numel()
        return real / len(steps), padded / len(steps)


def setup(args, **data_kw) -> Setup:
    """The size's set-up; --quick keeps its first model only (a smoke run of the code paths)."""
    size = getattr(args, "model_size", "small")
    names, kw, batch, lr, dtype = SIZES[size]
    return Setup(size, args.dev, Data(**{**kw, **data_kw}), names[:1] if args.quick else names, batch, lr, dtype)


def fine_tune(model, data: Data, rows: list[dict], epochs: int, lr: float = 3e-3, batch_size: int = 16) -> dict:
    """Plain answer-NLL training on ``rows`` (so greedy answers end at EOS, as after stage 1)."""
    ds, dev = QADataset(rows, data.tokenizer), next(model.parameters()).device
    opt = make_optimizer("adamw", [p for p in model.parameters() if p.requires_grad], lr, 0.0)
    g, loss = torch.Generator().manual_seed(0), float("nan")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(ds), generator=g).tolist()
        for b in range(0, len(order), batch_size):
            batch = {k: v.to(dev) for k, v in data.collate([ds[i] for i in order[b:b + batch_size]]).items()}
            logp, n = sequence_logprobs(model, batch)
            loss_t = -logp.sum() / n.sum()
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            loss = float(loss_t.detach())
    model.eval()
    return {"epochs": epochs, "final_loss": loss}


class PlainGDiff:
    """Reference GDiff written from scratch: loss = c L_R - (1 - c) L_F on the same two batches as the
    Unlearner's step t (same StepBatches), ONE backward pass, optimizer step; no flat buffer, no norms."""

    def __init__(self, model, S: Setup, c: float = 0.5):
        self.model, self.S, self.c, self.data = model, S, c, S.data
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer("adam", self.params, S.lr, 0.0)
        self.batches = StepBatches({"forget": len(S.data.forget_ds), "retain": len(S.data.retain_ds)}, S.batch, 0)

    def step(self, t: int) -> dict:
        self.model.train()
        lo = []
        for split, ds in (("retain", self.data.retain_ds), ("forget", self.data.forget_ds)):
            b = self.data.collate([ds[i] for i in self.batches.indices(split, t)])
            logp, n = sequence_logprobs(self.model, {k: v.to(self.S.dev.kind) for k, v in b.items()})
            lo.append(-logp.sum() / n.sum())
        self.optimizer.zero_grad(set_to_none=True)
        (self.c * lo[0] - (1 - self.c) * lo[1]).backward()
        self.optimizer.step()
        return {"step": t}


def clone(model):
    return copy.deepcopy(model)


# ---------------------------------------------------------------- timing and memory


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def interleaved(variants: dict[str, Callable[[int], object]], repeats: int, block: Callable[[int], range],
                warmup: Callable[[], None] | None = None, dev: Device | None = None) -> dict:
    """Every variant on repeat r's steps ``block(r)``, one after the other, order rotated each repeat.
    Returns {name: {"wall": [...], "cpu": [...]}}, one total per repeat."""
    dev = dev or Device("cpu")
    if warmup:
        warmup()
    names = list(variants)
    out = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in (order[::-1] if r % 2 else order):
            gc.collect()
            w0, c0 = dev.clocks()
            for t in block(r):
                variants[name](t)
            w1, c1 = dev.clocks()
            out[name]["wall"].append(w1 - w0)
            out[name]["cpu"].append(c1 - c0)
    return out


def ratios(times: dict, num: str, den: str, kind: str) -> list[float]:
    return [a / b for a, b in zip(times[num][kind], times[den][kind])]


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    seen = {}
    for t in tensors:
        if torch.is_tensor(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def persistent_bytes(model, optimizer, extra=()) -> dict:
    """What lives between steps: parameters, gradients (.grad or a flat buffer), optimizer state, extras."""
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"params": tensor_bytes(params), "grads": tensor_bytes(grads), "optimizer_state": tensor_bytes(state),
            "extra": tensor_bytes(extra), "total": tensor_bytes(params + grads + state + list(extra))}


def peak_memory(dev: Device, obj, step: Callable[[int], object], ts, extra=()) -> dict:
    """Max over steps ``ts`` of what lives between steps (persistent_bytes of obj's model, optimizer and ``extra``)
    + the step's transient peak. A PlainGDiff frees its .grad (zero_grad(set_to_none)) before backward: so here."""
    best = None
    for t in ts:
        if isinstance(obj, PlainGDiff):
            obj.optimizer.zero_grad(set_to_none=True)
        pers = persistent_bytes(obj.model, obj.optimizer, extra)
        total = pers["total"] + (peak := dev.transient_peak(lambda: step(t)))
        if best is None or total > best["total"]:
            best = {**pers, "persistent": pers["total"], "transient": peak, "total": total}
    return best


# ---------------------------------------------------------------- FLOPs and the matmul peak


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out, q, k, v)


# FlopCounterMode has formulas for the CUDA attention kernels only; the CPU flash kernel gets torch's own sdpa
# count (non-causal T x T), so attention is counted on both devices.
SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_bwd}


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of ``fn()`` by op (mm, addmm, bmm, convolution, 'attention fwd' / 'attention bwd')."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as fc:
        fn()
    out = {}
    for op, v in fc.get_flop_counts()["Global"].items():
        name = str(op).split(".")[-1]
        name = ("attention bwd" if name.endswith("backward") else "attention fwd") if "attention" in name else name
        out[name] = out.get(name, 0) + int(v)
    return out


def mm_rate(m: int, k: int, n: int, dev: Device, dtype=torch.float32, repeats: int = 3, budget_s: float = 0.1) -> dict:
    """GFLOP/s of torch.mm(a[m,k], b[k,n]): calls repeated for ~budget_s per repeat (CPU time on the CPU, wall
    time synchronised on CUDA); stats over repeats."""
    a, b = torch.randn(m, k, device=dev.kind, dtype=dtype), torch.randn(k, n, device=dev.kind, dtype=dtype)
    c = torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        calls, (w0, c0) = 0, dev.clocks()
        while True:
            torch.mm(a, b, out=c)
            calls += 1
            w1, c1 = dev.clocks() if dev.cuda else (0.0, time.process_time())
            dt = (w1 - w0) if dev.cuda else (c1 - c0)
            if dt >= budget_s:
                break
        rates.append(2 * m * k * n * calls / dt / 1e9)
    return stats(rates)


def matmul_peak(dev: Device, dtype=torch.float32, quick: bool = False) -> tuple[str, float, dict]:
    """(where, GFLOP/s, {size: stats}): the best median square torch.mm rate (CPU 256..2048, CUDA 2048..8192)."""
    sizes = (2048, 4096, 8192) if dev.cuda else (256, 512, 1024, 2048)
    squares = {s: mm_rate(s, s, s, dev, dtype, 3, 0.05 if quick else 0.1) for s in sizes}
    best = max(squares, key=lambda s: squares[s]["median"])
    return f"square {best}", squares[best]["median"], squares


# ---------------------------------------------------------------- output and command line


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def fmt_stats(s: dict, digits: int = 3, suffix: str = "", scale: float = 1.0) -> str:
    return " / ".join(("**{}**" if k == "median" else "{}").format(f"{s[k] * scale:.{digits}f}{suffix}")
                      for k in ("min", "median", "max"))


def render(result: dict) -> str:
    """A result {title, intro, tables: [{caption, columns, rows}], notes, seconds} as markdown."""
    lines = [f"## {result['title']}", ""]
    for p in result.get("intro", []):
        lines += [p, ""]
    for table in result["tables"]:
        if table.get("caption"):
            lines += [table["caption"], ""]
        lines += ["| " + " | ".join(table["columns"]) + " |", "| " + " | ".join("---" for _ in table["columns"]) + " |"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
        lines.append("")
    lines += [f"- {n}" for n in result.get("notes", [])] + ([""] if result.get("notes") else [])
    if "seconds" in result:
        lines += [f"_Benchmark time: {result['seconds']:.0f} s ({result.get('device', 'cpu')})._", ""]
    return "\n".join(lines)


def cli(argv, run: Callable[[argparse.Namespace], dict], doc: str, add_args=None, sizes: bool = False,
        cpu_only: str | None = None) -> dict:
    """Parse the common options, refuse what cannot run here in one sentence, run, print, write --json."""
    prog = os.path.basename(sys.modules[run.__module__].__file__)
    ap = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run, not a measurement")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", help="also write the result to this JSON file")
    if sizes:
        ap.add_argument("--model-size", choices=tuple(SIZES), default="small",
                        help="small: tiny-gpt2 + gpt2-5m; phi: Phi-1.5 size, bf16 compute (CUDA); phi-mini: its CPU check")
    if add_args:
        add_args(ap)
    args = ap.parse_args(argv)
    if args.device == "cuda" and cpu_only:
        raise SystemExit(f"{prog}: --device cuda is not offered: {cpu_only}.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{prog}: --device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here "
                         f"(torch {torch.__version__}).")
    if getattr(args, "model_size", "") == "phi" and args.device != "cuda":
        raise SystemExit(f"{prog}: --model-size phi (1.42B parameters, ~75 GiB) needs --device cuda; "
                         "--model-size phi-mini runs the same code path on a CPU.")
    args.dev = Device(args.device)
    start = time.perf_counter()
    try:
        result = run(args)
    except torch.OutOfMemoryError as e:
        raise SystemExit(f"{prog}: out of {args.device} memory ({str(e).splitlines()[0][:200]}).") from None
    result.update(seconds=time.perf_counter() - start, device=args.dev.name)
    print(render(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result
