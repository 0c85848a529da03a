"""Trials per GPU at Phi-1.5 and Llama-2-7B sizes, full-parameter vs LoRA r8, from the dry run (issue 21).

    .venv/bin/python benchmarks/bench_memory.py            # print the dry runs' memory lines
    .venv/bin/python benchmarks/bench_memory.py --write    # and rewrite its section of RESULTS.md

Runs ``python -m sweeper.launch --grid benchmarks/memory_grids/<grid>.yaml --dry-run --num-gpus 8`` for
each grid (a fresh process each, offline: ``HF_HUB_OFFLINE=1``, nothing is downloaded or loaded) and keeps
the lines ``sweeper.cluster.memory`` prints: an ESTIMATE from the models' published shapes, not a
measurement on a GPU. ``run_all.py`` does not run it (it takes seconds and measures nothing).
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from sections import markers, write_section  # noqa: E402
BEGIN, END = markers("bench_memory.py")
GRIDS = ("phi15", "llama7b")


def dry_run(grid: str, gpu_gb: float) -> tuple[str, list[str]]:
    """(the command, its memory, warning and GPU packing lines)."""
    cmd = ["python", "-m", "sweeper.launch", "--grid", f"benchmarks/memory_grids/{grid}.yaml", "--dry-run",
           "--num-gpus", "8"] + (["--gpu-memory-gb", f"{gpu_gb:g}"] if gpu_gb != 80 else [])
    out = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    keep = ("memory:", "warning:", "GPU packing:")
    return " ".join(cmd), [line for line in out.splitlines() if line.startswith(keep)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0)
    args = p.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = [BEGIN, "## Trials per GPU at Phi-1.5 and Llama-2-7B sizes, full vs LoRA r8 (issue 21)", "",
            f"`python benchmarks/bench_memory.py --write` ({stamp}). **An estimate, not measured on a GPU** (none "
            "here): `sweeper/cluster/memory.py` from the published config shapes (Phi-1.5 1.42B, Llama-2-7B "
            "6.74B parameters), float32 master weights (the worker keeps them so; the grid's `dtype` is the "
            "compute precision), the trainable parameters' flat gradient, g_R copy and AutoLR's step, Adam's "
            "two moments, and activations from Korthikanti et al.'s 34 bytes per token, layer and hidden unit "
            "plus the logits. Paper settings (Appendix F): NGDiff, Adam, batch 32 rows of ~100 TOFU tokens, "
            "static and AutoLR (the line is the larger, AutoLR), bfloat16 compute. Grids in "
            "`benchmarks/memory_grids/`; every command runs offline.", ""]
    for grid in GRIDS:
        cmd, lines = dry_run(grid, args.gpu_memory_gb)
        text += ["```", f"$ {cmd}", *lines, "```", ""]
        print("\n".join([cmd, *lines]))
    text += ["Reading: full-parameter Phi-1.5 needs about half an 80 GB GPU's memory (one trial per GPU; the "
             "grid's 0.25 is warned about), LoRA r8 about 13.5 GB (5 trials per GPU, so `gpus_per_worker: 0.2`). "
             "Full Llama-2-7B fits only sharded (4 FSDP workers, one per GPU); a one-worker LoRA r8 trial needs "
             "about 43 GB, 27 of them the frozen base's float32 weights, so one per 80 GB GPU (three per 141 GB "
             "H200: `--gpu-memory-gb 141`). Keeping a LoRA trial's frozen base in bfloat16 would halve that "
             "term; the worker does not do so today.", END]
    if args.write:
        write_section(os.path.join(HERE, "RESULTS.md"), "\n".join(text) + "\n", BEGIN, END)


if __name__ == "__main__":
    main()
