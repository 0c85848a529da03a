"""Shared helpers of the benchmarks: data, tokenizer and models (tiny twins and a ~5M GPT-2), Unlearner
construction, interleaved timing, torch-profiler peak memory, statistics and the JSON result format.

Every benchmark script (``bench_*.py``) runs on its own (``python benchmarks/bench_step.py``) and prints
its tables; ``--json PATH`` also writes them for ``run_all.py``, which renders ``RESULTS.md``.

Timing on a shared 2-core machine: absolute times drift with the other processes' load, so every
benchmark measures *ratios* of variants run side by side in one process, interleaved in short blocks
(order rotated each repeat), and reports min / median / max over the repeats, for wall-clock time
(``time.perf_counter``) and for this process's CPU time (``time.process_time``; with one torch thread it
counts the work done and not the time spent waiting for a core, so it is the less noisy of the two).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from sweeper.autolr import AutoLRConfig  # noqa: E402
from sweeper.data.qa import QADataset, collate_qa  # noqa: E402
from sweeper.data.synthetic import make_authors, qa_rows  # noqa: E402
from sweeper.data.tokenizer import train_tokenizer  # noqa: E402
from sweeper.loop import LoopConfig, StepBatches, Unlearner, make_optimizer  # noqa: E402
from sweeper.lm import sequence_logprobs  # noqa: E402
from sweeper.models import build_model  # noqa: E402

#: torch intra-op threads; 1 matches a trial worker with cpus_per_worker: 1 (the demo grid) and keeps the
#: measurement from fighting the other processes of a 2-core machine for a second core.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)


# ---------------------------------------------------------------- data and models


class Data:
    """Synthetic fictitious-author QA, a trained byte-level BPE, and the forget/retain datasets."""

    def __init__(self, n_authors: int = 20, qa_per_author: int = 10, forget_frac: float = 0.1, seed: int = 0):
        rows = qa_rows(make_authors(n_authors, seed=seed), qa_per_author)
        n_forget = max(1, round(len(rows) * forget_frac))
        self.rows, self.forget, self.retain = rows, rows[-n_forget:], rows[:-n_forget]
        self.tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows])
        self.forget_ds = QADataset(self.forget, self.tokenizer)
        self.retain_ds = QADataset(self.retain, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id

    def collate(self, items: list[dict]) -> dict:
        return collate_qa(items, self.pad_id)


def tiny_model(data: Data, arch: str = "gpt2", seed: int = 0) -> torch.nn.Module:
    """The project's tiny twin (``sweeper.models.build_model``)."""
    tok = data.tokenizer
    return build_model(f"tiny-{arch}", vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                       seed=seed)


def gpt2_5m(data: Data, seed: int = 0) -> torch.nn.Module:
    """A larger GPT-2 built from ``transformers.GPT2Config`` directly (d=256, 6 layers: ~5M parameters)."""
    tok = data.tokenizer
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_embd=256, n_layer=6, n_head=8, n_inner=1024,
                                  n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  bos_token_id=tok.eos_token_id)
    return transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


MODELS: dict[str, Callable[[Data], torch.nn.Module]] = {"tiny-gpt2": tiny_model, "gpt2-5m": gpt2_5m}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fine_tune(model, data: Data, rows: list[dict], epochs: int, lr: float = 3e-3, batch_size: int = 16,
              seed: int = 0) -> dict:
    """Plain answer-NLL training on ``rows`` for ``epochs`` epochs (so greedy answers end at EOS)."""
    ds = QADataset(rows, data.tokenizer)
    opt = make_optimizer("adamw", [p for p in model.parameters() if p.requires_grad], lr, 0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    start, loss = time.perf_counter(), float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(ds), generator=g).tolist()
        for b in range(0, len(order), batch_size):
            batch = data.collate([ds[i] for i in order[b:b + batch_size]])
            logp, n = sequence_logprobs(model, batch)
            loss_t = -logp.sum() / n.sum()
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            loss = float(loss_t.detach())
    model.eval()
    return {"epochs": epochs, "seconds": time.perf_counter() - start, "final_loss": loss}


def make_unlearner(model, data: Data, method: str = "ngdiff", *, method_params: dict | None = None,
                   forget_loss: str = "nll", forget_loss_params: dict | None = None, autolr_every: int | None = None,
                   batch_size: int = 8, lr: float = 1e-3, optimizer: str = "adam", ref=None, seed: int = 0) -> Unlearner:
    cfg = LoopConfig(method=method, method_params=method_params or {}, forget_loss=forget_loss,
                     forget_loss_params=forget_loss_params or {}, optimizer=optimizer, lr=lr, steps=10 ** 6,
                     batch_size=batch_size, seed=seed,
                     autolr=AutoLRConfig(every=autolr_every) if autolr_every else None)
    return Unlearner(model, data.forget_ds, data.retain_ds, data.collate, cfg, ref_logprobs=ref)


class PlainGDiff:
    """Reference GDiff step written from scratch: loss = c L_R - (1 - c) L_F on the same two batches as the
    Unlearner's step t (same StepBatches), ONE backward pass, optimizer step. No flat buffer, no norms."""

    def __init__(self, model, data: Data, c: float = 0.5, batch_size: int = 8, lr: float = 1e-3,
                 optimizer: str = "adam", seed: int = 0):
        self.model, self.data, self.c = model, data, c
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(optimizer, self.params, lr, 0.0)
        self.batches = StepBatches({"forget": len(data.forget_ds), "retain": len(data.retain_ds)}, batch_size, seed)

    def step(self, t: int) -> dict:
        self.model.train()
        rb = self.data.collate([self.data.retain_ds[i] for i in self.batches.indices("retain", t)])
        fb = self.data.collate([self.data.forget_ds[i] for i in self.batches.indices("forget", t)])
        logp_r, n_r = sequence_logprobs(self.model, rb)
        logp_f, n_f = sequence_logprobs(self.model, fb)
        loss_r, loss_f = -logp_r.sum() / n_r.sum(), -logp_f.sum() / n_f.sum()
        loss = self.c * loss_r - (1 - self.c) * loss_f
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"step": t, "loss_retain": float(loss_r.detach()), "loss_forget": float(loss_f.detach())}


def clone(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


# ---------------------------------------------------------------- timing


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def interleaved(variants: dict[str, Callable[[int], None]], repeats: int, block: Callable[[int], range],
                warmup: Callable[[], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Run every variant on the same block of steps, one after the other, order rotated each repeat.

    ``variants[name](t)`` runs step t; ``block(r)`` gives repeat r's steps (the same for every variant).
    Returns {name: {"wall": [...], "cpu": [...]}} with one total per repeat.
    """
    if warmup:
        warmup()
    names = list(variants)
    out = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for name in order:
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            for t in block(r):
                variants[name](t)
            out[name]["wall"].append(time.perf_counter() - w0)
            out[name]["cpu"].append(time.process_time() - c0)
    return out


def ratios(times: dict, num: str, den: str, kind: str) -> list[float]:
    return [a / b for a, b in zip(times[num][kind], times[den][kind])]


# ---------------------------------------------------------------- memory


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not torch.is_tensor(t):
            continue
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def persistent_bytes(model, optimizer, extra=()) -> dict:
    """What lives between steps: parameters, gradients (.grad or a flat buffer), optimizer state, extras."""
    params = [p for p in model.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"params": tensor_bytes(params), "grads": tensor_bytes(grads), "optimizer_state": tensor_bytes(state),
            "extra": tensor_bytes(extra),
            "total": tensor_bytes(params + grads + state + list(extra))}


def profiled_peak(fn: Callable[[], None]) -> int:
    """Peak bytes allocated by the CPU allocator during ``fn()`` above what was allocated before it.

    Uses torch.profiler with ``profile_memory=True``: every c10 CPU allocation/free is recorded as a
    ``[memory]`` event carrying the running "Total Allocated" since the profiler started; the peak of
    that series is the transient peak of ``fn`` (activations, autograd buffers, temporaries, gradients
    allocated during the call). Tensors that existed before the call are not in it: add them from
    ``persistent_bytes``.
    """
    from torch.profiler import ProfilerActivity, profile
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        with open(f.name) as fh:
            events = json.load(fh)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max([0] + totals)


# ---------------------------------------------------------------- output


def machine() -> dict:
    return {"nproc": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "python": sys.version.split()[0]}


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def fmt_stats(s: dict, digits: int = 3, suffix: str = "") -> str:
    return f"{fmt(s['min'], digits)}{suffix} / **{fmt(s['median'], digits)}{suffix}** / {fmt(s['max'], digits)}{suffix}"


def main(run: Callable[[argparse.Namespace], dict], description: str,
         add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """CLI of a benchmark script: ``--quick`` (fewer repeats), ``--json PATH``; prints the markdown."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not a measurement)")
    ap.add_argument("--json", help="also write the result (title, tables, notes) to this JSON file")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    start = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - start
    print(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def render(result: dict) -> str:
    """A result dict {title, tables: [{columns, rows}], notes: [...]} as markdown."""
    lines = [f"## {result['title']}", ""]
    for p in result.get("intro", []):
        lines += [p, ""]
    for table in result["tables"]:
        if table.get("caption"):
            lines += [table["caption"], ""]
        lines.append("| " + " | ".join(table["columns"]) + " |")
        lines.append("| " + " | ".join("---" for _ in table["columns"]) + " |")
        for row in table["rows"]:
            lines.append("| " + " | ".join(str(c) for c in row) + " |")
        lines.append("")
    for n in result.get("notes", []):
        lines.append(f"- {n}")
    if result.get("notes"):
        lines.append("")
    if "seconds" in result:
        lines += [f"_Benchmark time: {result['seconds']:.0f} s._", ""]
    return "\n".join(lines)
