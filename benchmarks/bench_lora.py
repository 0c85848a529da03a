"""LoRA against full-parameter unlearning on the largest CPU twin (gpt2-20m of bench_scaling: d 512,
6 layers): peak memory (persistent tensors + a step's transient peak, harness.peak_memory) and the median
step time, NGDiff + Adam, batch 8 + 8, the same data and initial weights::

    .venv/bin/python benchmarks/bench_lora.py [--steps 6] [--r 8] [--write]

``--write`` puts the line into its own section of benchmarks/RESULTS.md (kept by run_all.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from sections import markers, write_section  # noqa: E402
import torch  # noqa: E402

from sweeper.models.adapters import apply_adapter  # noqa: E402
from sweeper.unlearn.loop import LoopConfig, Unlearner  # noqa: E402


def measure(data, model, steps: int) -> dict:
    u = Unlearner(model, data.forget_ds, data.retain_ds, data.collate,
                  LoopConfig(method="ngdiff", optimizer="adam", lr=1e-3, steps=steps + 2, batch_size=8))
    u.step(1)   # optimizer state exists from here on
    times = []
    for t in range(2, steps + 2):
        start = time.process_time()
        u.step(t)
        times.append(time.process_time() - start)
    peak = harness.peak_memory(harness.Device("cpu"), u, u.step, [steps + 2], extra=[u.g_retain])
    return {"trainable": sum(p.numel() for p in u.params), "peak_mb": peak["total"] / 2**20,
            "step_ms": 1000 * statistics.median(times)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="write the result into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = harness.Data()
    build = harness.gpt2(512, 6, 8)
    full = measure(data, build(data, seed=0), args.steps)
    lora = measure(data, apply_adapter(build(data, seed=0), {"kind": "lora", "r": args.r}), args.steps)
    line = (f"gpt2-20m ({full['trainable'] / 1e6:.1f}M params), CPU 1 thread, NGDiff + Adam, batch 8 + 8: "
            f"full {full['peak_mb']:.0f} MB peak, {full['step_ms']:.0f} ms/step; LoRA r{args.r} on c_attn "
            f"({lora['trainable'] / 1e3:.0f}k trainable) {lora['peak_mb']:.0f} MB, {lora['step_ms']:.0f} ms/step; "
            f"ratios {lora['peak_mb'] / full['peak_mb']:.2f}x memory (goal <= 0.5x), "
            f"{lora['step_ms'] / full['step_ms']:.2f}x time")
    print(line)
    if args.write:
        begin, end = markers("bench_lora.py")
        cmd = "python benchmarks/bench_lora.py" + (f" --steps {args.steps}" if args.steps != 6 else "") \
            + (f" --r {args.r}" if args.r != 8 else "") + " --write"
        write_section(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"),
                      f"{begin}\n## LoRA vs full-parameter unlearning on the largest CPU twin (issue 21)\n\n"
                      f"`{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): {line}. Peak = "
                      f"persistent tensors (weights, gradients, Adam state, g_R) + one step's transient peak "
                      f"(harness.peak_memory); step time = median process CPU time of {args.steps} steps.\n{end}\n",
                      begin, end)


if __name__ == "__main__":
    main()
