"""LoRA adapters (the ``peft`` library) on a trial's target: only the adapter's weights train.

A grid's model entry may carry ``adapter: {kind: lora, r, alpha, dropout, target_modules}``. Stage 1
fine-tunes the full model as always (the target, shared and read-only, knows nothing of adapters); a
trial wraps its freshly loaded target with :func:`apply_adapter`, so the Unlearner's gradient buffer,
norms, AutoLR and every rule see only the adapter's parameters. Checkpoints and ``eval.keep_best``
hold only those (:func:`trainable_state_dict`, ``PeftModel.save_pretrained``). With ``strategy: fsdp``
the trial shards the wrapped model (``sweeper.unlearn.fsdp.shard_model``: frozen base and adapter
sharded together, only the adapter's shards take gradients) and its checkpoints gather only the adapter::

    model = apply_adapter(model, {"kind": "lora", "r": 8}, seed=0)
    problems = adapter_problems("grid.yaml: models[0]", entry, data_kinds=["tofu"])
"""
from __future__ import annotations

import difflib
import warnings

ADAPTER_KINDS = ("lora",)
ADAPTER_KEYS = {"kind", "r", "alpha", "dropout", "target_modules"}
ADAPTER_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}
#: The modules LoRA wraps by default, per tiny twin's architecture (attention projections).
DEFAULT_TARGETS = {"gpt2": ["c_attn"], "phi": ["q_proj", "v_proj"], "falcon": ["query_key_value"],
                   "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"]}


def adapter_settings(adapter: dict) -> dict:
    """The adapter entry with its defaults filled in (``target_modules`` None: the architecture's own)."""
    return {**ADAPTER_DEFAULTS, **adapter}


def adapter_label(adapter: dict | None) -> str:
    """"LoRA r8" for a LoRA adapter entry, "" for none."""
    if not adapter:
        return ""
    return f"{str(adapter.get('kind', 'lora')).replace('lora', 'LoRA')} r{adapter_settings(adapter)['r']}"


def _module_suffixes(model: "torch.nn.Module") -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}


def _tiny_on_meta(name: str) -> "torch.nn.Module":
    """Tiny twin ``name`` built on the meta device: its module names, no weights."""
    import torch
    import transformers

    from sweeper.models.language import _tiny_config
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(_tiny_config(name.removeprefix("tiny-"), 64, 0, 1))


def target_modules_for(model: "torch.nn.Module", adapter: dict):
    """The ``target_modules`` peft gets: the grid's list, None for "auto" (peft's mapping per model type),
    or the architecture's default. Raises ValueError (one sentence naming the key) for unknown modules."""
    wanted = adapter_settings(adapter)["target_modules"]
    if wanted == "auto":
        return None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if wanted is None:
        wanted = DEFAULT_TARGETS.get(model_type)
        if wanted is None:
            return None  # peft's own mapping for this model type
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    names = _module_suffixes(model)
    unknown = [m for m in wanted if m not in names]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
                         if n and type(mod).__name__ in ("Linear", "Conv1D")})
        hint = difflib.get_close_matches(unknown[0], linear, n=1)
        raise ValueError(f"adapter: target_modules {unknown} are not modules of this {model_type} model; "
                         f"its linear modules are {', '.join(linear)}"
                         + (f"; did you mean {hint[0]!r}?" if hint else ""))
    return wanted


def adapter_problems(where: str, entry: dict, data_kinds: list[str]) -> list[str]:
    """Problems of one model entry's ``adapter`` (empty when it has none or it is valid), one sentence each."""
    if "adapter" not in entry:
        return []
    a = entry["adapter"]
    if not isinstance(a, dict):
        return [f"{where}: adapter = {a!r} must be a mapping like {{kind: lora, r: 8}}"]
    problems = []
    for key in a:
        if key not in ADAPTER_KEYS:
            close = difflib.get_close_matches(str(key), ADAPTER_KEYS, n=1)
            problems.append(f"{where}: adapter: unknown key {key!r}; allowed: {', '.join(sorted(ADAPTER_KEYS))}"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    if a.get("kind") not in ADAPTER_KINDS:
        problems.append(f"{where}: adapter: kind = {a.get('kind')!r} is not allowed; allowed: {', '.join(ADAPTER_KINDS)}")
    s = adapter_settings(a)
    if isinstance(s["r"], bool) or not isinstance(s["r"], int) or s["r"] < 1:
        problems.append(f"{where}: adapter: r = {s['r']!r} must be a positive integer")
    if isinstance(s["alpha"], bool) or not isinstance(s["alpha"], (int, float)) or s["alpha"] <= 0:
        problems.append(f"{where}: adapter: alpha = {s['alpha']!r} must be a positive number")
    if isinstance(s["dropout"], bool) or not isinstance(s["dropout"], (int, float)) or not 0 <= s["dropout"] < 1:
        problems.append(f"{where}: adapter: dropout = {s['dropout']!r} must be a number in [0, 1)")
    tm = s["target_modules"]
    if not (tm is None or tm == "auto" or isinstance(tm, str)
            or (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm))):
        problems.append(f"{where}: adapter: target_modules = {tm!r} must be a module name, a list of them, or 'auto'")
    elif str(entry.get("name", "")).startswith("tiny-") and not problems:
        from sweeper.models.language import is_tiny
        if is_tiny(entry["name"]):
            try:
                target_modules_for(_tiny_on_meta(entry["name"]), a)
            except ValueError as e:
                problems.append(f"{where}: {e}")
    if "vision" in data_kinds:
        problems.append(f"{where}: adapter: LoRA wraps causal language models (kinds tofu, muse); "
                        f"the vision task's network cannot take an adapter")
    return problems


def apply_adapter(model: "torch.nn.Module", adapter: dict, seed: int = 0) -> "torch.nn.Module":
    """``model`` wrapped by peft with the adapter; the base weights frozen. The adapter's initial weights
    depend only on ``seed`` (every DDP rank builds the same adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model

    s = adapter_settings(adapter)
    targets = target_modules_for(model, adapter)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cfg = LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=float(s["dropout"]), target_modules=targets,
                     fan_in_fan_out=model_type == "gpt2", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft asks transformers 5 a deprecated question while wrapping; the warning is theirs, not the user's
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, cfg)
        except ValueError as e:
            raise ValueError(f"adapter: peft cannot wrap this {model_type} model: {e}") from e


def trainable_state_dict(model: "torch.nn.Module") -> dict:
    """The model's state dict, or only its trainable parameters when some are frozen (an adapter)."""
    if all(p.requires_grad for p in model.parameters()):
        return model.state_dict()
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: "torch.nn.Module", state: dict) -> None:
    """Inverse of :func:`trainable_state_dict`."""
    if all(p.requires_grad for p in model.parameters()):
        model.load_state_dict(state)
        return
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        raise ValueError(f"checkpoint holds {len(state)} tensors, not this model's {len(trainable)} trainable ones")
    model.load_state_dict(state, strict=False)
