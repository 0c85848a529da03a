"""Stage 1: the "No-unlearn" targets, fine-tuned once per (model, data, recipe) and cached by content hash.

A target folder ``<storage>/targets/<hash>/`` holds everything a trial needs, so trials never rebuild
data or tokenizers and every trial of a target starts from the same bytes::

    model/          save_pretrained (safetensors)        tokenizer/   save_pretrained (with the prompt
    source.json     instead of model/: the published                  template and token limit)
                    checkpoint the target was loaded from
    data/           <split>.json: forget, retain and the task's evaluation splits (JSON lines), fitted
                    to the token limit (sweeper.data.lengths)
    ref_logprobs.pt sequence log-probs of every forget row under the target (NPO's reference, cached)
    metrics.json    fine-tune epochs and seconds, gate score, row lengths (cut / dropped), template
    _SUCCESS        written last; a folder without it is incomplete and is rebuilt

A published checkpoint (a model's ``checkpoint``, or its ``retrained_reference`` for the retain-only
variant) is loaded as it is, with zero fine-tune steps.

Fine-tuning (on forget U retain, or retain alone for the retrained reference) stops when the task's
memorisation measure reaches the gate: for QA the exact-match rate of greedy answers, since ROUGE alone
would pass too early (names copied from the question inflate it). The task (``sweeper/tasks``) decides
data, model family, losses and evaluation; this module only trains, saves and caches.

Usage::

    info = ensure_target(spec.model, spec.data, spec.target, Storage("runs"))
    model, tokenizer, splits, ref, reference = load_target(Storage("runs"), info["hash"], kind="tofu")
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time

import torch

from sweeper.data.lengths import summarize
from sweeper.grid.spec import published_source, target_hash
from sweeper.unlearn.optimizers import make_optimizer
from sweeper.models.language import compute_precision
from sweeper.store.cache import TargetCache
from sweeper.store.storage import Storage
from sweeper.tasks import get_task


#: Seconds after which fine-tuning prints a progress line even between gate checks.
PROGRESS_EVERY_S = 30.0


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def fine_tune(task, model, tokenizer, rows: list, splits: dict, recipe: dict, log=print, label: str = "",
              variant: str = "full") -> dict:
    """Train on ``rows`` until the task's memorisation measure (on what ``variant`` trains on) reaches the gate
    (or max_epochs).

    Progress: one line per gate check (every ``check_every`` epochs) and one after any epoch that ends
    more than ``PROGRESS_EVERY_S`` seconds after the last line, so a long fine-tune is never silent."""
    ds, collate = task.dataset(rows, tokenizer), task.collate(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(recipe["optimizer"], params, recipe["lr"], 0.0)
    g = torch.Generator().manual_seed(recipe["seed"])
    device = next(model.parameters()).device
    start, score, epoch, loss = time.perf_counter(), 0.0, 0, torch.tensor(float("nan"))
    last_line = start
    for epoch in range(1, recipe["max_epochs"] + 1):
        model.train()
        order = torch.randperm(len(ds), generator=g).tolist()
        for b in range(0, len(order), recipe["batch_size"]):
            batch = _to_device(collate([ds[i] for i in order[b:b + recipe["batch_size"]]]), device)
            logp, n = task.logprobs(model, batch)
            loss = -logp.sum() / n.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        check = epoch % recipe["check_every"] == 0 or epoch == recipe["max_epochs"]
        if check:
            score = task.memorisation(model, tokenizer, splits, variant)
        now = time.perf_counter()
        if check or now - last_line > PROGRESS_EVERY_S:
            gate = f"gate {score:.2f}/{recipe['exact_match_gate']}" if check else "gate not checked"
            log(f"  {label}epoch {epoch}/{recipe['max_epochs']}: loss {loss.item():.3f}, {gate}, {now - start:.0f} s")
            last_line = now
        if check and score >= recipe["exact_match_gate"]:
            break
    return {"epochs": epoch, "fine_tune_s": time.perf_counter() - start, "gate_exact": score,
            "gate_passed": score >= recipe["exact_match_gate"]}


@torch.no_grad()
def reference_logprobs(task, model, tokenizer, rows: list, batch_size: int = 64) -> torch.Tensor:
    """Summed log-probs of every row under ``model``: NPO's pi_ref, computed once per target."""
    ds, collate = task.dataset(rows, tokenizer), task.collate(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    out = [task.logprobs(model, _to_device(collate([ds[i] for i in range(b, min(b + batch_size, len(ds)))]),
                                          device))[0].float().cpu()
           for b in range(0, len(ds), batch_size)]
    return torch.cat(out)


def ensure_target(model_spec: dict, data: dict, recipe: dict, storage: Storage, log=print,
                  variant: str = "full", eval_cfg: dict | None = None) -> dict:
    """Build the target unless ``<storage>/targets/<hash>/_SUCCESS`` exists; return its metrics.json.

    ``variant="retain_only"`` builds the retrained reference (fine-tuned on retain alone) that
    Forget Quality and PrivLeak compare against; it also stores the task's ``reference_data``.
    A model with a published ``checkpoint`` (or ``retrained_reference``, for that variant) is loaded
    as it is: zero fine-tune steps, its own metrics recorded.
    """
    key = target_hash(model_spec, data, recipe, variant)
    rel = f"targets/{key}"
    label = f"target {key} ({model_spec['name']}, {data['name']}, {variant})"
    if storage.exists(f"{rel}/_SUCCESS"):
        log(f"{label}: cached, reused")
        return json.loads(storage.read_bytes(f"{rel}/metrics.json"))
    source = published_source(model_spec, data, variant)
    log(f"{label}: " + (f"loading the published checkpoint {source}" if source else "fine-tuning"))
    task = get_task(data["kind"])
    with tempfile.TemporaryDirectory() as tmp:
        splits = task.prepare(data, tmp)
        model, tokenizer, splits, lengths = task.target_model(model_spec, data, splits, recipe["seed"], source)
        if lengths:
            log(f"{label}: {summarize(lengths)}")
        if torch.cuda.is_available():
            model = model.cuda()
        precision = compute_precision(model_spec["dtype"], next(model.parameters()).device)
        if source:
            metrics = {"epochs": 0, "fine_tune_s": 0.0, "published": source}
        else:
            with precision:
                metrics = fine_tune(task, model, tokenizer, task.train_rows(splits, variant), splits, recipe, log,
                                    label=f"[{key[:8]} {model_spec['name']}] ", variant=variant)
            if not metrics["gate_passed"]:
                log(f"WARNING: {label} reached only {metrics['gate_exact']:.2f} (gate {recipe['exact_match_gate']}) "
                    f"after {metrics['epochs']} epochs; raise target.max_epochs or lr")
        out = os.path.join(tmp, "target")
        os.makedirs(os.path.join(out, "data"))
        if source:
            task.save_published(model_spec, tokenizer, out, source)
        else:
            task.save_model(model, tokenizer, out)
        for name, rows in splits.items():
            _write_jsonl(os.path.join(out, "data", f"{name}.json"), rows)
        with precision:  # NPO's reference log-probs in the same precision as the trials' forward passes
            torch.save(reference_logprobs(task, model, tokenizer, splits["forget"]), os.path.join(out, "ref_logprobs.pt"))
            if variant == "retain_only" and eval_cfg is not None:
                with open(os.path.join(out, "reference.json"), "w") as f:
                    json.dump(task.reference_data(model, tokenizer, splits, eval_cfg), f)
        metrics.update(hash=key, variant=variant, model=model_spec["name"], n_forget=len(splits["forget"]),
                       n_retain=len(splits["retain"]), vocab_size=len(tokenizer) if tokenizer is not None else None,
                       n_parameters=sum(p.numel() for p in model.parameters()), lengths=lengths,
                       template=getattr(tokenizer, "init_kwargs", {}).get("prompt_template"))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        storage.upload_dir(out, rel)
        TargetCache.from_env().adopt(storage, rel, out)  # this node's trials (and its row below) read it here
    storage.write_bytes(f"{rel}/_SUCCESS", b"")
    return metrics


def load_target(storage: Storage, key: str, kind: str = "tofu", device: str = "cpu"):
    """(model, tokenizer, splits, reference log-probs, reference data) of a cached target.

    On remote storage the target's files come from this node's cache (``sweeper.store.cache``): the
    first trial of a node downloads them, every later one reads the same local copy."""
    task = get_task(kind)
    with TargetCache.from_env().use(storage, f"targets/{key}") as local:
        model, tokenizer = task.load_model(local, device)
        data_dir = os.path.join(local, "data")
        splits = {name[:-5]: _read_jsonl(os.path.join(data_dir, name)) for name in sorted(os.listdir(data_dir))}
        ref = torch.load(os.path.join(local, "ref_logprobs.pt"))
        reference = None
        if os.path.exists(os.path.join(local, "reference.json")):
            with open(os.path.join(local, "reference.json")) as f:
                reference = json.load(f)
    return model, tokenizer, splits, ref, reference


def random_guess_loss(vocab_size: int) -> float:
    """ln|V|: the token NLL of a uniform guess, the grey line of the paper's Figure 1."""
    return math.log(vocab_size)
