"""GPU memory of one trial's worker, estimated from the model's shapes: what ``--dry-run`` says about packing.

Plain arithmetic, no torch or transformers at import (a dry run stays light). Shapes come from a config
dict in ``config.json`` form: the published configs of the paper's models (``PUBLISHED_CONFIGS``), a local
folder's ``config.json``, or a tiny twin's config (built lazily; it imports transformers)::

    from sweeper.cluster.memory import trial_memory, memory_lines
    est = trial_memory(spec)           # {"total": bytes, "parts": {...}, "trainable": n, "params": n} or None
    for line in memory_lines(specs, gpu_gb=80):
        print(line)

What a worker holds (``sweeper.unlearn.worker`` keeps parameters float32 and computes in the grid's
``dtype``; ``sweeper.unlearn.loop`` keeps the gradient in one flat buffer plus the copy of g_R):

* weights: every parameter in float32 (a LoRA trial's frozen base too);
* grads: the trainable parameters' flat gradient buffer, the g_R copy and, with AutoLR, its probe's
  step Delta (``sweeper.unlearn.autolr``): 2 or 3 float32 copies of the trainable parameters;
* optimizer: Adam/AdamW 2 float32 moments per trainable parameter, SGD (no momentum here) none;
* activations: the larger of a training pass and an evaluation pass (``ACT_BYTES_PER_HIDDEN``,
  ``LOGIT_BYTES``, a KV cache for generation): rough, published per-layer constants, not measured;
* target values: UNDIAL and ``retain_loss: kl`` move one batch of the target's cached logits to the
  device per step (the cache itself is on the host), RMU its hidden states; NPO's reference is one
  float per row;
* CUDA context: ``CUDA_CONTEXT_GB`` per worker process (assumed).

Under ``strategy: fsdp`` weights, grads and optimizer state are divided by the workers, and one
block's gathered parameters in the compute dtype are added (FSDP2 all-gathers a block at a time).
"""
from __future__ import annotations

import json
import math
import os

from sweeper.cluster.estimate import row_tokens
from sweeper.models.adapters import DEFAULT_TARGETS, adapter_label, adapter_settings

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OPTIMIZER_MOMENTS = {"adam": 2, "adamw": 2, "sgd": 0}
#: Activation bytes a training pass keeps per token, per layer, per hidden unit, at 2-byte precision:
#: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", Sec. 4.1)
#: count 34 s b h per layer without the attention-score term 5 a s^2 b, which fused SDPA kernels do not
#: keep. Scaled by compute bytes / 2 for float32.
ACT_BYTES_PER_HIDDEN = 34
#: Bytes per logit of a training pass: the logits in the compute dtype, their float32 copy, the float32
#: log-softmax cross_entropy keeps for backward and its gradient (sweeper.metrics.likelihood).
LOGIT_BYTES = 12
#: A CUDA context and the caching allocator's slack per worker process (assumed, typical of recent GPUs).
CUDA_CONTEXT_GB = 0.5
DEFAULT_GPU_GB = 80.0

#: config.json values of the paper's models as published on the Hugging Face hub (the shape keys only;
#: parameter counts follow from them: tests/test_memory_estimate.py builds each with transformers on the
#: meta device and compares). Phi-1.5: microsoft/phi-1_5; Falcon-RW-1B: tiiuae/falcon-rw-1b; GPT-2 XL:
#: openai-community/gpt2-xl; Llama-2-7B (and -chat): meta-llama/Llama-2-7b-hf; Mistral-7B-v0.1.
_LLAMA2_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
              "tie_word_embeddings": False}
PUBLISHED_CONFIGS = {
    "microsoft/phi-1_5": {"model_type": "phi", "vocab_size": 51200, "hidden_size": 2048, "intermediate_size": 8192,
                          "num_hidden_layers": 24, "num_attention_heads": 32, "tie_word_embeddings": False},
    "tiiuae/falcon-rw-1b": {"model_type": "falcon", "vocab_size": 50304, "hidden_size": 2048, "num_hidden_layers": 24,
                            "num_attention_heads": 32, "multi_query": False, "parallel_attn": False, "bias": True,
                            "alibi": True, "new_decoder_architecture": False},
    "openai-community/gpt2-xl": {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 1600, "n_layer": 48,
                                 "n_head": 25, "n_positions": 1024},
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "mistralai/Mistral-7B-v0.1": {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
                                  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 8, "tie_word_embeddings": False},
}


def shapes_from_config(cfg: dict) -> dict | None:
    """{vocab, hidden, layers, kv_dim, params, block_params, linears} of a config dict, or None for an
    architecture this module does not know. ``linears``: module name -> [(in, out), ...] per block, the
    shapes a LoRA target of that name wraps (GPT-2's ``c_proj`` is both attention's and the MLP's)."""
    t = cfg.get("model_type")
    if t == "gpt2":
        h, L, V = cfg.get("n_embd", 768), cfg.get("n_layer", 12), cfg.get("vocab_size", 50257)
        i = cfg.get("n_inner") or 4 * h
        lin = {"c_attn": [(h, 3 * h)], "c_proj": [(h, h), (i, h)], "c_fc": [(h, i)]}
        norms, bias, kv, embed = 2 * 2 * h, True, h, V * h + cfg.get("n_positions", 1024) * h
        final, head = 2 * h, 0                                   # tied lm_head
    elif t == "phi":
        h, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        heads = cfg["num_attention_heads"]
        kv = (cfg.get("num_key_value_heads") or heads) * (h // heads)
        i = cfg["intermediate_size"]
        lin = {"q_proj": [(h, h)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "dense": [(h, h)],
               "fc1": [(h, i)], "fc2": [(i, h)]}
        norms, bias, embed, final = 2 * h, True, V * h, 2 * h
        head = 0 if cfg.get("tie_word_embeddings", False) else V * h + V   # Phi's lm_head has a bias
    elif t == "falcon" and not cfg.get("new_decoder_architecture", False):
        h, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        hd = h // cfg["num_attention_heads"]
        kv = hd if cfg.get("multi_query", True) else h
        i = cfg.get("ffn_hidden_size") or 4 * h
        lin = {"query_key_value": [(h, h + 2 * kv)], "dense": [(h, h)],
               "dense_h_to_4h": [(h, i)], "dense_4h_to_h": [(i, h)]}
        norms = 2 * h * (1 if cfg.get("parallel_attn", True) else 2)
        bias, embed, final = cfg.get("bias", False), V * h, 2 * h
        head = 0 if cfg.get("tie_word_embeddings", True) else V * h
    elif t in ("llama", "mistral"):
        h, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        heads = cfg["num_attention_heads"]
        hd = cfg.get("head_dim") or h // heads
        kv = (cfg.get("num_key_value_heads") or heads) * hd
        i = cfg["intermediate_size"]
        lin = {"q_proj": [(h, heads * hd)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "o_proj": [(heads * hd, h)],
               "gate_proj": [(h, i)], "up_proj": [(h, i)], "down_proj": [(i, h)]}
        norms, bias, embed, final = 2 * h, False, V * h, h        # RMSNorm: weights only; no biases
        head = 0 if cfg.get("tie_word_embeddings", False) else V * h
    else:
        return None
    block = norms + sum(a * b + (b if bias else 0) for shapes in lin.values() for a, b in shapes)
    return {"model_type": t, "vocab": V, "hidden": h, "layers": L, "kv_dim": kv, "block_params": block,
            "params": embed + L * block + final + head, "linears": lin}


def model_config(model: dict) -> dict | None:
    """The config dict of a grid's model entry without downloading anything: a paper model's published
    values, a local folder's ``config.json`` (the entry's ``checkpoint`` folder first), or a tiny twin's
    config (vocabulary: the built-in tokenizer's at most 1024 entries); None otherwise."""
    name = model["name"]
    if name in PUBLISHED_CONFIGS:
        return PUBLISHED_CONFIGS[name]
    for folder in (model.get("checkpoint"), name):
        if folder and os.path.isfile(os.path.join(folder, "config.json")):
            with open(os.path.join(folder, "config.json")) as f:
                return json.load(f)
    if str(name).startswith("tiny-"):
        from sweeper.models.language import _tiny_config, is_tiny   # transformers: only for a tiny twin
        if is_tiny(name):
            return _tiny_config(name.removeprefix("tiny-"), 1024, 0, 1).to_dict()
    return None


def lora_trainable(shapes: dict, adapter: dict) -> int | None:
    """LoRA's trainable parameters: r * (in + out) for each wrapped module of each block (peft's A and B
    matrices), or None when a target module is not a block linear this module knows (lm_head, say)."""
    s = adapter_settings(adapter)
    targets = s["target_modules"]
    if targets in (None, "auto"):   # the sweeper's defaults equal peft's own mapping for these five types
        targets = DEFAULT_TARGETS.get(shapes["model_type"])
    targets = [targets] if isinstance(targets, str) else targets
    if not targets or any(t not in shapes["linears"] for t in targets):
        return None
    return shapes["layers"] * sum(s["r"] * (a + b) for t in targets for a, b in shapes["linears"][t])


def trial_memory(spec, config: dict | None = None) -> dict | None:
    """Estimated peak device bytes of one worker of ``spec`` ({"total", "parts", "params", "trainable",
    "per": "trial" | "worker"}), or None when the model's shapes are unknown offline."""
    if spec.data.get("kind") == "vision":
        return None
    shapes = shapes_from_config(config if config is not None else (model_config(spec.model) or {}))
    if shapes is None:
        return None
    m = spec.model
    workers, cbytes = int(m["workers"]), DTYPE_BYTES.get(m.get("dtype", "float32"), 4)
    n = shapes["params"]
    trainable = lora_trainable(shapes, m["adapter"]) if m.get("adapter") else n
    if trainable is None:
        return None
    shard = workers if m.get("strategy") == "fsdp" else 1
    copies = 3 if spec.lr_mode == "autolr" else 2                  # flat .grad, g_R (and AutoLR's Delta)
    parts = {"weights": 4 * n / shard + (shapes["block_params"] * cbytes if shard > 1 else 0),
             "grads": 4 * copies * trainable / shard,
             "optimizer": 4 * OPTIMIZER_MOMENTS.get(spec.optimizer, 2) * trainable / shard}
    b, t = math.ceil(spec.batch_size / workers), row_tokens(spec)  # a step's rows are split over workers
    h, L, V = shapes["hidden"], shapes["layers"], shapes["vocab"]
    train = b * t * (ACT_BYTES_PER_HIDDEN * cbytes / 2 * h * L + LOGIT_BYTES * V)
    ev_b, new = int(spec.eval.get("batch_size", 32)), int(spec.eval.get("max_new_tokens", 24))
    # Evaluation without gradients: one scoring forward's float32 logits, or generation's KV cache.
    evaluate = ev_b * max(t * V * (cbytes + 4), (t + new) * 2 * L * shapes["kv_dim"] * cbytes)
    parts["activations"] = max(train, evaluate)
    losses = (spec.forget_loss, spec.retain_loss)
    cached = (b * t * V * cbytes if ("undial" in losses or "kl" in losses) else 0) \
        + (b * t * h * cbytes if "rmu" in losses else 0)
    if cached:
        parts["target values"] = cached
    parts["CUDA context"] = CUDA_CONTEXT_GB * GB
    return {"total": sum(parts.values()), "parts": parts, "params": n, "trainable": trainable,
            "per": "trial" if workers == 1 else "worker"}


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def memory_lines(specs, gpu_gb: float = DEFAULT_GPU_GB) -> list[str]:
    """Per GPU model (and adapter): its largest trial's memory per worker, how many fit on one GPU of
    ``gpu_gb`` GB, and a one-sentence warning when ``gpus_per_worker`` gives a worker less than that."""
    groups: dict = {}
    for s in specs:
        if s.model["gpus_per_worker"]:
            key = (s.model["name"], s.model["workers"], adapter_label(s.model.get("adapter")))
            groups.setdefault(key, []).append(s)
    lines = []
    for (name, workers, lora), group in groups.items():
        config = model_config(group[0].model)
        ests = [(e, s) for s in group if (e := trial_memory(s, config)) is not None]
        label = f"{name}{' ' + lora if lora else ''}"
        if not ests:
            lines.append(f"memory: {label}: not estimated (only causal LMs whose config is known offline: the "
                         f"paper's models, tiny twins, local folders with config.json)")
            continue
        est, spec = max(ests, key=lambda es: es[0]["total"])
        need = est["total"] / GB
        detail = ", ".join(f"{k} {v / GB:.1f}" for k, v in est["parts"].items())
        m = spec.model
        who = "trial" if workers == 1 else f"worker of {workers} ({str(m.get('strategy', 'ddp')).upper()})"
        fit = math.floor(gpu_gb / need)
        unit = "trial(s)" if workers == 1 else "worker(s)"
        trainable = f", {_count(est['trainable'])} of {_count(est['params'])} trainable" if lora else \
            f", {_count(est['params'])} parameters"
        lines.append(f"memory: {label}{trainable}: ≈ {need:.1f} GB per {who} ({detail}) -> {fit} {unit} per "
                     f"{gpu_gb:g} GB GPU (estimate for its largest trial: {m.get('dtype', 'float32')} compute, "
                     f"{spec.optimizer}, {spec.lr_mode}, batch {spec.batch_size} x {row_tokens(spec)} tokens)")
        g = m["gpus_per_worker"]
        given = min(g, 1) * gpu_gb   # a worker's model lives on one GPU whatever number of GPUs it holds
        if need > given:
            advice = (f"use gpus_per_worker {1 / fit:.3g} ({fit} per GPU)" if fit >= 1 else
                      "it does not fit one GPU: shard it (strategy: fsdp, more workers) or use an adapter")
            lines.append(f"warning: {label} needs ≈ {need:.1f} GB per worker but gpus_per_worker = {g:g} gives it "
                         f"{given:.0f} GB of one {gpu_gb:g} GB GPU; {advice}")
    return lines
