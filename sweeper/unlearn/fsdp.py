"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for models that do not fit one device.

``shard_model(model)`` shards every transformer block, then the root (embeddings, final norm, LM head
and whatever else is left), over all ranks of the default process group (gloo on CPU, nccl on GPU).
Afterwards every parameter is a ``DTensor`` holding a 1/W slice (dim 0) on each rank, and so is every
gradient after a backward pass; ``sweeper.unlearn.loop.Unlearner`` notices this and switches to its sharded
gradient path (local-shard dot products, all-reduced once per step).

How blocks are found, generically:

1. the classes a transformers model names in ``_no_split_modules`` (``GPT2Block``,
   ``LlamaDecoderLayer``, ``PhiDecoderLayer``, ...: the units accelerate's FSDP wrapping uses);
2. otherwise the children of the largest (by parameter count) ``nn.ModuleList`` whose children all
   share one class (the decoder layer stack of any transformer);
3. otherwise nothing: only the root is sharded (one all-gather of the whole model per forward).

Three settings the unlearning loop relies on:

* **sum reduction**: the loop's losses are per-rank sums divided by GLOBAL token counts, so the
  gradient it wants is the SUM over ranks. FSDP2 averages by default; ``shard_model`` sets a gradient
  divide factor of 1 with sum-only collectives (``ensure_sum_reduction``; older torch without the
  setter: the loop multiplies the reduced gradients by W instead);
* **the root reshards after forward** (FSDP2 keeps the root unsharded after forward by default). The
  unlearning loop and AutoLR change the sharded parameters in place between no-grad forward passes
  (AutoLR's probes, evaluation); an unsharded root would keep its stale all-gathered copy;
* ``_is_fsdp_managed_module`` on the root, so ``transformers.generate`` runs with ``synced_gpus``
  (every rank keeps calling forward until all ranks are done: generation all-gathers, so all ranks
  must generate together; evaluation therefore runs on every rank).

Mixed precision (optional, GPU): ``param_dtype=torch.bfloat16`` keeps the sharded (master) parameters
in their own dtype (float32), computes in bf16 and reduce-scatters gradients in float32.

Usage (inside a torch.distributed process group)::

    model = shard_model(model)                                    # CPU/gloo or one GPU per rank
    model = shard_model(model, param_dtype=torch.bfloat16)        # GPU mixed precision
    model = shard_model(apply_adapter(model, {"kind": "lora"}))   # LoRA: the base frozen, sharded too

A LoRA model (``sweeper.models.adapters``) is sharded the same way, its peft wrapper left outside FSDP
(``inner_model``): every block's frozen base weights and adapter weights are sharded together, only
the adapter's take gradients, and checkpoints (``gather_state``) hold only the adapter, unsharded.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_sharded(model: nn.Module) -> bool:
    """True when ``model``'s parameters are DTensors (FSDP2 / fully_shard)."""
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in model.parameters())


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model`` (see the module docstring), innermost first; may be empty."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    if names:
        blocks = [m for m in model.modules() if type(m).__name__ in names and m is not model]
        if blocks:
            return blocks[::-1]     # children before parents, should names ever nest
    best, best_size = [], 0
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1:
            size = sum(p.numel() for p in m.parameters())
            if size > best_size:
                best, best_size = list(m), size
    return best


def ensure_sum_reduction(model: nn.Module) -> float:
    """Make FSDP2 reduce-scatter gradients as SUMS over ranks; returns the factor the caller must still
    multiply the reduced gradients by (1.0, or W where this torch cannot change FSDP's averaging)."""
    from torch.distributed.fsdp import FSDPModule
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not modules:
        return 1.0
    if not all(hasattr(m, "set_gradient_divide_factor") for m in modules):
        return float(dist.get_world_size())
    for m in modules:
        m.set_gradient_divide_factor(1.0)           # not recursive: every FSDP module gets it
        if hasattr(m, "set_force_sum_reduction_for_comms"):
            m.set_force_sum_reduction_for_comms(True)   # plain SUM (no PREMUL_SUM/AVG; gloo has neither)
    return 1.0


def shard_model(model: nn.Module, *, device: torch.device | str | None = None,
                param_dtype: torch.dtype | None = None, blocks: list[nn.Module] | None = None) -> nn.Module:
    """Apply ``fully_shard`` to each block, then to the root; returns the (same, now sharded) model.

    ``device``: where the shards live (default: CUDA's current device when available, else CPU). Load
    the full model on the CPU first: each ``fully_shard`` call moves one module to the device and keeps
    only this rank's slice there. ``param_dtype``: compute dtype for mixed precision (GPU), gradients
    are reduced in float32. ``blocks``: override the automatic block discovery.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("shard_model needs a torch.distributed process group (gloo on CPU, nccl on GPU)")
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kwargs = dict(mesh=mesh)
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    root = inner_model(model)
    for block in (find_blocks(root) if blocks is None else blocks):
        fully_shard(block, **kwargs)
    fully_shard(root, reshard_after_forward=True, **kwargs)
    ensure_sum_reduction(model)
    for m in {id(model): model, id(root): root}.values():
        m._is_fsdp_managed_module = True    # transformers' generate: synced_gpus across ranks
    return model


def inner_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA), else ``model``. FSDP's root must be the module
    whose forward every call goes through: ``PeftModel.generate`` calls the inner model's ``generate``,
    which calls the inner model's forward, never the wrapper's, so a sharded wrapper's root parameters
    (embeddings, final norm) would never be gathered there."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def has_frozen(model: nn.Module) -> bool:
    """Whether some parameters do not train (an adapter's frozen base): checkpoints then hold only the others."""
    return any(not p.requires_grad for p in model.parameters())


def full_state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Full (unsharded) model and optimizer state dicts on rank 0's CPU ({} elsewhere); a collective.
    With frozen parameters (a LoRA adapter's base) only the trainable ones: the adapter, as unsharded."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    frozen = has_frozen(model)
    opts = full_state_dict_options(cpu_offload=True, ignore_frozen_params=frozen)
    state = get_model_state_dict(model, options=opts)
    if frozen:   # a tied weight (GPT-2's lm_head is its embedding) escapes ignore_frozen_params
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in trainable}
    return {"model": state,
            "optimizer": get_optimizer_state_dict(model, optimizer, options=opts)}


def restore_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of ``gather_state``: rank 0's full state dicts are broadcast and re-sharded; a collective.
    Other ranks may pass the same full dicts or empty ones."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    frozen = has_frozen(model)   # an adapter's checkpoint lacks the frozen base: it stays as loaded
    opts = full_state_dict_options(broadcast_from_rank0=True, strict=not frozen)
    set_model_state_dict(model, state["model"], options=opts)
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=opts)
