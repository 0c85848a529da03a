"""The unlearning loop: plain torch, one process or one Ray Train worker, any rule, any forget objective.

One step (the paper's Algorithm 1, for every method of Section 3.2):

1. forward + backward of L_R on the retain batch -> g_R (all-reduced once, copied aside);
2. forward + backward of the forget objective on the forget batch -> g_F (all-reduced once);
3. the five scalars L_R, L_F, ||g_R||^2, ||g_F||^2, g_R.g_F -> the rule's weights (w_R, w_F);
4. g = w_R g_R - w_F g_F is written into the parameters' .grad, and the base optimizer steps
   (through AutoLR every K steps).

Gradients live in one flat buffer that the parameters' ``.grad`` tensors are views of, so the all-reduce
is one call, the norms and the dot product are single BLAS calls, and the only memory beyond plain
training is the copy of g_R: one parameter-sized buffer.

Sharded mode (chosen automatically when the parameters are DTensors, i.e. the model went through
``sweeper.unlearn.fsdp.shard_model``): FSDP2 reduce-scatters each backward's gradient (as a SUM over ranks, see
``sweeper.unlearn.fsdp.ensure_sum_reduction``) into per-parameter local shards, so there is no flat buffer and
no all-reduce of gradients. g_R is kept as a list of local-shard copies; ||g_R||^2, ||g_F||^2 and
g_R.g_F are sums of local-shard dot products, packed in one tensor and all-reduced once per step;
g = w_R g_R - w_F g_F is written into the local shards with foreach ops.

What each side computes is its objective's choice (``sweeper.methods.passes.ObjectiveSide``): the
forget objective (``forget_loss``: nll, npo, simnpo, rmu, undial, ...) and the retain loss
(``retain_loss``: nll, kl, rmu) declare what they need from the forward pass, and only that is
computed; the target's values some of them need are cached from the model before its first update.

Usage (no Ray)::

    unlearner = Unlearner(model, forget_ds, retain_ds, collate, LoopConfig(method="ngdiff", steps=20))
    for step in range(1, 21):
        row = unlearner.step(step)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sweeper.unlearn.autolr import AutoLR, AutoLRConfig
from sweeper.unlearn.distributed import Comm
from sweeper.unlearn.fsdp import ensure_sum_reduction, gather_state, is_sharded, restore_state
from sweeper.models.adapters import load_trainable_state, trainable_state_dict
from sweeper.models.lm import sequence_logprobs
from sweeper.methods import StepScalars, make_rule
from sweeper.methods.passes import ObjectiveSide, chunks_needed, rows_to_cache
from sweeper.unlearn.optimizers import make_optimizer

@dataclass(frozen=True)
class LoopConfig:
    method: str = "ngdiff"
    method_params: dict = field(default_factory=dict)
    forget_loss: str = "nll"
    forget_loss_params: dict = field(default_factory=dict)
    retain_loss: str = "nll"
    retain_loss_params: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    steps: int = 20
    batch_size: int = 8                 # global batch per split and step, shared by all workers
    autolr: AutoLRConfig | None = None  # None: static learning rate
    seed: int = 0


class Diverged(RuntimeError):
    """A loss, norm or dot product turned NaN or infinite."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} is not finite at step {step}")
        self.step = step


class StepBatches:
    """Deterministic global batches: step t of epoch e takes the next rows of a permutation seeded by
    (seed, split, e); worker r keeps rows r, r + W, ... So a resumed trial sees the same batches, and
    W workers together see exactly the batch that one worker would."""

    def __init__(self, sizes: dict[str, int], batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.sizes, self.batch_size, self.seed = sizes, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._perms: dict[tuple[str, int], list[int]] = {}

    def _perm(self, split: str, epoch: int) -> list[int]:
        key = (split, epoch)
        if key not in self._perms:
            # Python's hash() of a str differs between processes; this seed must not.
            split_id = sorted(self.sizes).index(split)
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + split_id * 10_007 + epoch) & 0x7FFFFFFF)
            self._perms = {k: v for k, v in self._perms.items() if k[1] >= epoch - 1}
            self._perms[key] = torch.randperm(self.sizes[split], generator=g).tolist()
        return self._perms[key]

    def global_indices(self, split: str, step: int) -> list[int]:
        n = self.sizes[split]
        start = (step - 1) * self.batch_size
        return [self._perm(split, i // n)[i % n] for i in range(start, start + self.batch_size)]

    def indices(self, split: str, step: int) -> list[int]:
        return self.global_indices(split, step)[self.rank::self.world_size]


#: Elements per partial product: bounds the temporary to 16 MB (float32) on the CPU. On a GPU every
#: chunk costs ~4 kernel launches, so 4M-element chunks would mean ~1400 launches per dot product on a
#: 1.4B model; 64M-element chunks (256 MB temporary) keep it to ~90.
_DOT_CHUNK = {"cpu": 1 << 22, "cuda": 1 << 26}


def _dot_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a . b (flattened) as a float64 0-d tensor: float32 products summed chunk by chunk with torch's
    cascaded sum, the partial sums added in float64. A BLAS float32 dot accumulates sequentially and is
    off by ~1e-5 relative at millions of elements, enough to make 1 worker and N workers disagree;
    this stays near 1e-8. bf16/fp16 buffers are upcast one chunk at a time."""
    a, b = a.reshape(-1), b.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    chunk = _DOT_CHUNK.get(a.device.type, _DOT_CHUNK["cpu"])
    for i in range(0, a.numel(), chunk):
        x, y = a[i:i + chunk], b[i:i + chunk]
        if x.dtype not in (torch.float32, torch.float64):
            x, y = x.float(), y.float()
        total += (x * y).sum().double()
    return total


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """a . b as a Python float (see ``_dot_tensor``)."""
    return float(_dot_tensor(a, b))


def has_active_dropout(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


class Unlearner:
    """Holds the model, optimizer, rule, objective and AutoLR of one trial; ``step(t)`` runs step t."""

    def __init__(self, model: torch.nn.Module, forget_ds, retain_ds, collate: Callable[[list], dict],
                 cfg: LoopConfig, comm: Comm | None = None, ref_logprobs: torch.Tensor | None = None,
                 device: str | torch.device = "cpu", logprobs: Callable = sequence_logprobs, alt_forget_ds=None):
        self.model, self.cfg, self.comm, self.logprobs = model, cfg, comm or Comm(), logprobs
        self.forget_ds, self.retain_ds, self.collate, self.device = forget_ds, retain_ds, collate, device
        self.alt_forget_ds = alt_forget_ds   # the forget rows with refusals as answers (idknll, idkdpo)
        self.rule = make_rule(cfg.method, cfg.method_params, seed=cfg.seed)
        self.forget = ObjectiveSide("forget", cfg.forget_loss, cfg.forget_loss_params, logprobs=logprobs, seed=cfg.seed)
        self.retain = ObjectiveSide("retain", cfg.retain_loss, cfg.retain_loss_params, logprobs=logprobs, seed=cfg.seed)
        self.objective = self.forget.obj
        for side in (self.forget, self.retain):
            side.check_model(model)
        if self.objective.needs_reference and ref_logprobs is None:
            raise ValueError(f"forget_loss {cfg.forget_loss!r} needs the target's cached reference log-probs")
        if "alternate" in self.objective.needs and alt_forget_ds is None:
            raise ValueError(f"forget_loss {cfg.forget_loss!r} needs alternate (refusal) answers for the forget rows")
        self.ref_logprobs = ref_logprobs
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.sharded = is_sharded(model)
        if self.sharded:   # FSDP2: gradients are DTensor shards, reduced by FSDP (see the module docstring)
            from torch.distributed.tensor import DTensor
            if not all(isinstance(p, DTensor) for p in self.params):
                raise ValueError("a sharded model must have every trainable parameter sharded (fully_shard the root)")
            self.grad_scale = ensure_sum_reduction(model)
            self.flat, self.g_retain = None, None   # g_retain: a list of local-shard copies, made at step 1
        else:
            self.flat = self._attach_flat_grads()
            self.g_retain = torch.empty_like(self.flat)
        self.optimizer = make_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay)
        self.autolr = AutoLR(cfg.autolr) if cfg.autolr else None
        self.reuse_train_loss = not has_active_dropout(model)
        self.batches = StepBatches({"forget": len(forget_ds), "retain": len(retain_ds)}, cfg.batch_size,
                                   cfg.seed, self.comm.rank, self.comm.world_size)
        self.cache_bytes = self._fill_caches()
        self.started = time.perf_counter()

    def _fill_caches(self) -> int:
        """The target's values the objectives need, from the model before its first update (so build the
        Unlearner before loading a resumed state). Sharded: every worker runs as many forward passes."""
        total = 0
        for split, side, ds in (("forget", self.forget, self.forget_ds), ("retain", self.retain, self.retain_ds)):
            if not side.caches:
                continue
            rows = rows_to_cache(self.batches, split, len(ds), self.cfg.steps)
            chunk = max(1, self.cfg.batch_size // self.comm.world_size)
            n_chunks = chunks_needed(len(rows), chunk)
            if self.sharded:   # the largest count over workers (a sum of one-hot slots)
                slots = torch.zeros(self.comm.world_size, device=self.params[0].device)
                slots[self.comm.rank] = n_chunks
                n_chunks = int(self.comm.all_reduce_sum(slots).max())

            def batch_of(part, alternate, ds=ds):
                alt = self._batch(self.alt_forget_ds, part) if alternate else None
                return self._batch(ds, part), alt
            self.model.eval()
            total += side.fill_cache(self.model, batch_of, rows, chunk, n_chunks)
            self.model.train()
        return total

    def _attach_flat_grads(self) -> torch.Tensor:
        """One flat buffer; every parameter's .grad is a view into it (backward accumulates in place)."""
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"all trainable parameters must share one dtype, found {sorted(map(str, dtypes))}")
        flat = torch.zeros(sum(p.numel() for p in self.params), dtype=self.params[0].dtype,
                           device=self.params[0].device)
        offset = 0
        for p in self.params:
            p.grad = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return flat

    # --- gradient storage: one flat buffer (plain, DDP) or FSDP2's local shards (sharded mode) ---------

    @torch.no_grad()
    def _local_grads(self) -> list[torch.Tensor]:
        """Sharded mode: this rank's shard of every parameter's .grad (allocated as zeros if missing)."""
        out = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            out.append(p.grad.to_local())
        return out

    @torch.no_grad()
    def _zero_grads(self) -> None:
        if self.sharded:
            torch._foreach_zero_(self._local_grads())   # FSDP2 accumulates into existing .grad
        else:
            self.flat.zero_()

    @torch.no_grad()
    def _reduce_grads(self) -> None:
        """Make the gradient just back-propagated the SUM over ranks (sharded: FSDP already did)."""
        if not self.sharded:
            self.comm.all_reduce_sum(self.flat)
        elif self.grad_scale != 1.0:
            torch._foreach_mul_(self._local_grads(), self.grad_scale)

    @torch.no_grad()
    def _save_retain(self) -> None:
        if not self.sharded:
            self.g_retain.copy_(self.flat)
        elif self.g_retain is None:
            self.g_retain = [g.clone() for g in self._local_grads()]
        else:
            torch._foreach_copy_(self.g_retain, self._local_grads())

    @torch.no_grad()
    def _grad_products(self) -> tuple[float, float, float]:
        """(||g_R||^2, ||g_F||^2, g_R.g_F) over all parameters; .grad holds g_F."""
        if not self.sharded:
            return _dot(self.g_retain, self.g_retain), _dot(self.flat, self.flat), _dot(self.g_retain, self.flat)
        # local-shard sums, packed in one tensor and all-reduced once
        sums = torch.zeros(3, dtype=torch.float64, device=self.g_retain[0].device if self.g_retain else "cpu")
        for r, f in zip(self.g_retain, self._local_grads()):
            sums += torch.stack([_dot_tensor(r, r), _dot_tensor(f, f), _dot_tensor(r, f)]).double()
        rr, ff, rf = self.comm.all_reduce_sum(sums).tolist()
        return rr, ff, rf

    @torch.no_grad()
    def _combine(self, w_retain: float, w_forget: float) -> None:
        """g = w_R g_R - w_F g_F, written into the parameters' .grad (where g_F is)."""
        if not self.sharded:
            self.flat.mul_(-w_forget).add_(self.g_retain, alpha=w_retain)
            return
        grads = self._local_grads()
        torch._foreach_mul_(grads, -w_forget)
        torch._foreach_add_(grads, self.g_retain, alpha=w_retain)

    def _batch(self, dataset, indices: list[int]) -> dict:
        batch = self.collate([dataset[i] for i in indices])
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _retain_loss(self, batch: dict, n_global: torch.Tensor) -> float:
        """L_R at the current parameters, eval mode, averaged over workers (AutoLR's probe)."""
        self.model.eval()
        with torch.no_grad():
            values = self.retain.values(self.retain.forward(self.model, batch))
            local = (values.sum() / n_global).reshape(1).float()
        self.model.train()
        return float(self.comm.all_reduce_sum(local))

    def step(self, t: int) -> dict:
        """Run step t (1-based) and return its curve row (without evaluation columns)."""
        self.model.train()
        rb = self._batch(self.retain_ds, self.batches.indices("retain", t))
        f_rows = self.batches.indices("forget", t)
        fb = self._batch(self.forget_ds, f_rows)
        alt = self._batch(self.alt_forget_ds, f_rows) if "alternate" in self.forget.needs else None
        self._zero_grads()
        f_r = self.retain.forward(self.model, rb)
        # Losses are per-worker sums over the GLOBAL count, so the all-reduced sum is the exact global
        # mean even when workers hold different numbers of tokens.
        n_r = self.retain.denominator(self.comm.all_reduce_sum(self.retain.counts(f_r)))
        loss_r_local = self.retain.values(f_r).sum() / n_r
        loss_r_local.backward()
        del f_r
        self._reduce_grads()
        self._save_retain()

        self._zero_grads()
        f_f = self.forget.forward(self.model, fb, alt, self.ref_logprobs)
        counts = self.comm.all_reduce_sum(self.forget.counts(f_f))
        obj_local = self.forget.values(f_f).sum() / self.forget.denominator(counts)
        obj_local.backward()
        self._reduce_grads()

        losses = torch.stack([loss_r_local.detach(), obj_local.detach(), -f_f.seq_logprob.detach().sum() / counts[0]])
        del f_f
        loss_r, objective, loss_f = self.comm.all_reduce_sum(losses.float()).tolist()
        sq_r, sq_f, dot = self._grad_products()
        s = StepScalars(step=t, loss_retain=loss_r, loss_forget=objective,
                        sq_norm_retain=sq_r, sq_norm_forget=sq_f, dot=dot)
        for name in ("loss_retain", "loss_forget", "sq_norm_retain", "sq_norm_forget", "dot"):
            if not math.isfinite(getattr(s, name)):
                raise Diverged(t, name)

        w = self.rule.weights(s)
        self._combine(w.w_retain, w.w_forget)   # g = w_R g_R - w_F g_F
        lr = self.optimizer.param_groups[0]["lr"]
        row = dict(step=t, loss_retain=loss_r, loss_forget=loss_f, forget_objective=objective,
                   norm_retain=math.sqrt(s.sq_norm_retain), norm_forget=math.sqrt(s.sq_norm_forget),
                   dot=s.dot, w_retain=w.w_retain, w_forget=w.w_forget, c_t=w.c)
        if self.autolr and self.autolr.due(t):
            res = self.autolr.step(self.params, self.optimizer, lambda: self._retain_loss(rb, n_r),
                                   loss_at_theta=loss_r if self.reuse_train_loss else None)
            row.update(lr=res.lr_after, autolr_status=res.status, autolr_slope=res.slope,
                       autolr_curvature=res.curvature, autolr_eta_star=res.eta_star)
        else:
            self.optimizer.step()
            row.update(lr=lr)
        row["wall_s"] = time.perf_counter() - self.started
        return row

    def state_dict(self) -> dict:
        """Everything a resumed trial needs besides the step counter: model, optimizer and rule state.

        Sharded mode: a COLLECTIVE (every rank must call it); the full, unsharded model and optimizer
        state dicts end up on rank 0's CPU (other ranks get empty ones), so the checkpoint is the same
        file as without sharding apart from the optimizer's keys (parameter names instead of indices).
        """
        if self.sharded:
            return {**gather_state(self.model, self.optimizer), "rule": self.rule.state_dict()}
        return {"model": trainable_state_dict(self.model), "optimizer": self.optimizer.state_dict(),
                "rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Sharded mode: a collective; rank 0's full state dicts are broadcast and re-sharded."""
        if self.sharded:
            restore_state(self.model, self.optimizer, state)
        else:
            load_trainable_state(self.model, state["model"])   # an adapter's trial: its weights only
            self.optimizer.load_state_dict(state["optimizer"])
        self.rule.load_state_dict(state["rule"])
