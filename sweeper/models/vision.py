"""Image classifiers for the vision task (the paper's Appendix D), plain torch, no torchvision.

Two names a grid can use:

* ``resnet-tiny``: a CIFAR-style ResNet with three basic residual blocks (16, 32, 64 channels; about
  75k parameters): a few seconds per epoch on a CPU for the 8x8 digits, works on 32x32x3 too;
* ``resnet50``: ResNet-50's bottleneck layout (3, 4, 6, 3 blocks, widths 64..2048, about 23.5M
  parameters) with the CIFAR stem (3x3 convolution, stride 1, no max-pool), as the paper trains it from
  scratch on CIFAR-10/100.

Both use GroupNorm instead of BatchNorm, deliberately: the unlearning loop runs forget and retain
batches through the model in train mode, and with BatchNorm (a) the forget batch, all of one class,
would set degenerate batch statistics and overwrite the running ones, (b) train and eval forward passes
would differ, which AutoLR's probes assume they don't (the loop only checks for dropout), and (c) Ray
Train workers would need SyncBatchNorm. GroupNorm has none of these problems; everything else matches.

Inputs are images in [0, 1] of shape [B, C, H, W]; the model standardises them itself with the
per-channel mean and std in its config, so a saved model is self-contained.

Usage::

    model = build_vision_model("resnet-tiny", num_classes=10, in_channels=1, seed=0)
    logits = model(torch.rand(4, 1, 8, 8))
"""
from __future__ import annotations

import torch
from torch import nn

VISION_MODELS = ("resnet-tiny", "resnet50")


def _norm(channels: int) -> nn.GroupNorm:
    groups = 32 if channels % 32 == 0 and channels >= 64 else (8 if channels % 8 == 0 else 1)
    return nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.norm1 = _norm(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.norm1 = _norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.norm2 = _norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.norm3 = _norm(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        out = torch.relu(self.norm2(self.conv2(out)))
        return torch.relu(self.norm3(self.conv3(out)) + self.shortcut(x))


#: arch name -> (block, blocks per stage, stage widths, stem width)
_ARCHS = {
    "resnet-tiny": (BasicBlock, (1, 1, 1), (16, 32, 64), 16),
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
}


class ResNet(nn.Module):
    def __init__(self, arch: str, num_classes: int, in_channels: int, mean: list[float] | None = None,
                 std: list[float] | None = None):
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown vision model {arch!r}; allowed: {', '.join(VISION_MODELS)}")
        block, depths, widths, stem = _ARCHS[arch]
        self.config = {"arch": arch, "num_classes": int(num_classes), "in_channels": int(in_channels),
                       "mean": [float(m) for m in (mean or [0.0] * in_channels)],
                       "std": [float(s) for s in (std or [1.0] * in_channels)]}
        self.register_buffer("mean", torch.tensor(self.config["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.config["std"]).view(1, -1, 1, 1), persistent=False)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), _norm(stem), nn.ReLU())
        layers, cin = [], stem
        for i, (depth, width) in enumerate(zip(depths, widths)):
            for j in range(depth):
                layers.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def vision_model_problem(name: str) -> str | None:
    if name in VISION_MODELS:
        return None
    return f"model {name!r} is not a vision model; allowed: {', '.join(VISION_MODELS)}"


def build_vision_model(name: str, *, num_classes: int, in_channels: int, mean=None, std=None,
                       seed: int = 0) -> ResNet:
    """A freshly initialised classifier (seeded), trained from scratch as in the paper."""
    if (why := vision_model_problem(name)):
        raise ValueError(why)
    torch.manual_seed(seed)
    return ResNet(name, num_classes, in_channels, mean, std)
