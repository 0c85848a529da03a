"""The base optimizers a grid can name (``unlearn.optimizer``, ``target.optimizer``), in one place.

Grid validation reads the names without importing torch; the loop and the target fine-tuning build them::

    opt = make_optimizer("adam", params, lr=1e-3, weight_decay=0.0)
"""
from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(name: str, params: list, lr: float, weight_decay: float):
    import torch  # here, so validating a grid's optimizer names never imports torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
