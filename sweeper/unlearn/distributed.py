"""The few collectives the loop needs, as one small object: a no-op in one process, torch.distributed
inside a Ray Train worker (gloo on CPU, nccl on GPU). The loop never imports Ray.

Every scalar a method uses is made global with these: losses are sums over all workers divided by the
global token (or sequence) count, and the flat gradient buffer is all-reduced once per backward pass,
so the norms and dot products are those of the full-batch gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class Comm:
    """Single-process communication: every collective is the identity."""

    world_size = 1
    rank = 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass


class TorchDistComm(Comm):
    """Collectives over the default torch.distributed process group (set up by Ray Train)."""

    def __init__(self):
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        dist.barrier()


def current_comm() -> Comm:
    """torch.distributed when a process group with more than one rank is up, else the no-op."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistComm()
    return Comm()
