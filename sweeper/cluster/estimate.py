"""Device time of a trial from its FLOPs: what ``python -m sweeper.launch --dry-run`` prints and what
benchmark 6 (``benchmarks/bench_scaling.py``) tabulates for the paper grid.

Every unlearning step does a forward and a backward pass over a retain batch and over a forget batch
(GA and NPO too); AutoLR adds two eval-mode forwards of the retain batch every K steps. A language
model's training FLOPs per row of T tokens are (6 N + 12 L d T) T (Kaplan et al.: 6 N per token for the
weight matmuls, 12 L d T for attention), a forward a third of it::

    from sweeper.cluster.estimate import trial_flops, gpu_hours
    gpu_hours(trial_flops(spec)["total"])        # at ASSUMED_MFU of GPU_PEAK_BF16

Evaluation is not counted. Models outside ``KNOWN_LMS`` (and not ResNet-50) give None: their shapes are
only known where the hub is reachable.
"""
from __future__ import annotations

import functools

#: bf16 dense tensor-core FLOP/s of the GPUs the paper grid is sized for (H100 SXM / H200).
GPU_PEAK_BF16 = 989e12
#: Model FLOPs utilisation assumed for GPU estimates (a typical value for 1-7B training on one node).
ASSUMED_MFU = 0.35
#: Tokens per TOFU row as the models see it, padded to the longest row of a batch of 32. ASSUMED, not
#: measured: TOFU's QA pairs are ~60-100 tokens in GPT-2/Llama BPEs with the "Question: ... Answer:"
#: template; the upper end because batches are padded.
TOFU_TOKENS_PER_ROW = 100
#: Published sizes of the paper's language models: (parameters, layers, d_model); the parameter counts
#: were checked by building each published config with transformers on the meta device.
KNOWN_LMS = {
    "microsoft/phi-1_5": (1_418_270_720, 24, 2048),
    "tiiuae/falcon-rw-1b": (1_311_625_216, 24, 2048),
    "openai-community/gpt2-xl": (1_557_611_200, 48, 1600),
    "meta-llama/Llama-2-7b-hf": (6_738_415_616, 32, 4096),
    "meta-llama/Llama-2-7b-chat-hf": (6_738_415_616, 32, 4096),   # the same architecture, chat-tuned
    "mistralai/Mistral-7B-v0.1": (7_241_732_096, 32, 4096),
}


@functools.lru_cache(maxsize=None)
def resnet50_flops_per_image() -> tuple[int, float]:
    """(parameters, forward+backward FLOPs of one 32x32 image) of sweeper's ResNet-50, counted once."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sweeper.models.vision import build_vision_model
    net = build_vision_model("resnet50", num_classes=10, in_channels=3)
    with FlopCounterMode(display=False) as fc:
        net(torch.rand(1, 3, 32, 32)).sum().backward()
    return sum(p.numel() for p in net.parameters()), fc.get_total_flops()


def row_tokens(spec) -> int:
    """Tokens per training row: TOFU rows by assumption; MUSE rows are chunks of ``max_length`` tokens
    (news articles are long, so nearly every chunk is full); an image counts as one row."""
    kind = spec.data["kind"]
    return int(spec.data["max_length"]) if kind == "muse" else 1 if kind == "vision" else TOFU_TOKENS_PER_ROW


def flops_per_row(spec) -> tuple[float, float] | None:
    """(training, forward-only) FLOPs per row of the trial's model and data, or None if unknown."""
    if spec.data["kind"] == "vision":
        if spec.model["name"] != "resnet50":
            return None
        train = resnet50_flops_per_image()[1]
        return train, train / 3
    if spec.model["name"] not in KNOWN_LMS:
        return None
    n, layers, d = KNOWN_LMS[spec.model["name"]]
    t = row_tokens(spec)
    train = (6 * n + 12 * layers * d * t) * t
    return train, train / 3


def trial_flops(spec) -> dict | None:
    """{"steps", "probes", "total", "per_step"} training FLOPs of one trial, or None if unknown."""
    per_row = flops_per_row(spec)
    if per_row is None:
        return None
    train_row, fwd_row = per_row
    steps = spec.steps * 2 * spec.batch_size * train_row
    probes = spec.steps // int(spec.autolr.get("every", 10)) if spec.lr_mode == "autolr" else 0
    probe_flops = probes * 2 * spec.batch_size * fwd_row
    return {"steps": steps, "probes": probe_flops, "total": steps + probe_flops,
            "per_step": 2 * spec.batch_size * train_row}


def gpu_hours(flops: float, mfu: float = ASSUMED_MFU) -> float:
    """GPU-hours for ``flops`` at ``mfu`` of ``GPU_PEAK_BF16`` (independent of how many GPUs share it)."""
    return flops / (GPU_PEAK_BF16 * mfu) / 3600
