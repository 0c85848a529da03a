"""Stage 1: the "No-unlearn" targets, fine-tuned once per (model, data, recipe) and cached by content hash.

A target folder ``<storage>/targets/<hash>/`` holds everything a trial needs, so trials never rebuild
data or tokenizers and every trial of a target starts from the same bytes::

    model/          save_pretrained (safetensors)        tokenizer/   save_pretrained
    data/           forget.json, retain.json (JSON lines, the exact rows the trials use)
    ref_logprobs.pt sequence log-probs of every forget row under the target (NPO's reference, cached)
    metrics.json    fine-tune epochs, seconds, exact match and ROUGE-L on forget and retain
    _SUCCESS        written last; a folder without it is incomplete and is rebuilt

Fine-tuning (on forget U retain) stops when the exact-match rate of greedy answers reaches the gate:
ROUGE alone would pass too early, because names copied from the question inflate it.

Usage::

    info = ensure_target(spec.model, spec.data, spec.target, Storage("runs"))
    model, tokenizer, data, ref = load_target(Storage("runs"), info["hash"])
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time

import torch
import transformers

from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.synthetic import write_tofu_layout
from sweeper.data.tofu import load_tofu
from sweeper.data.tokenizer import train_tokenizer
from sweeper.evaluate import evaluate_qa
from sweeper.grid import target_hash
from sweeper.lm import sequence_logprobs
from sweeper.loop import make_optimizer
from sweeper.models import build_model, is_tiny
from sweeper.storage import Storage

GATE_SAMPLE = 64  # questions drawn (half forget, half retain) for the memorisation gate


def load_rows(data: dict, workdir: str) -> tuple[list[dict], list[dict]]:
    """The forget and retain rows of a data spec (the built-in generator writes TOFU's layout first)."""
    source = data["source"]
    if source == "builtin":
        source = os.path.join(workdir, "tofu")
        write_tofu_layout(source, n_authors=data["n_authors"], qa_per_author=data["qa_per_author"], seed=data["seed"])
    tofu = load_tofu(source, forget_split=data["forget_split"])
    return tofu.forget, tofu.retain


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _tokenizer_for(model: dict, rows: list[dict]):
    if is_tiny(model["name"]):
        return train_tokenizer([f"{r['question']} {r['answer']}" for r in rows])
    tok = transformers.AutoTokenizer.from_pretrained(model["name"], trust_remote_code=model["trust_remote_code"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _gate_rows(forget: list[dict], retain: list[dict]) -> list[dict]:
    half = GATE_SAMPLE // 2
    return forget[:half] + retain[:: max(1, len(retain) // half)][:half]


def fine_tune(model, tokenizer, rows: list[dict], gate_rows: list[dict], recipe: dict, log=print) -> dict:
    """Train on ``rows`` until the exact-match rate on ``gate_rows`` reaches the gate (or max_epochs)."""
    ds = QADataset(rows, tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(recipe["optimizer"], params, recipe["lr"], 0.0)
    g = torch.Generator().manual_seed(recipe["seed"])
    device = next(model.parameters()).device
    start, exact, epoch = time.perf_counter(), 0.0, 0
    for epoch in range(1, recipe["max_epochs"] + 1):
        model.train()
        order = torch.randperm(len(ds), generator=g).tolist()
        for b in range(0, len(order), recipe["batch_size"]):
            batch = collate_qa([ds[i] for i in order[b:b + recipe["batch_size"]]], tokenizer.pad_token_id)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            logp, n = sequence_logprobs(model, batch)
            loss = -logp.sum() / n.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch % recipe["check_every"] == 0 or epoch == recipe["max_epochs"]:
            exact = evaluate_qa(model, tokenizer, gate_rows, max_new_tokens=48)["exact"]
            log(f"  target fine-tune: epoch {epoch}, loss {float(loss):.3f}, exact match {exact:.2f}")
            if exact >= recipe["exact_match_gate"]:
                break
    return {"epochs": epoch, "fine_tune_s": time.perf_counter() - start, "gate_exact": exact,
            "gate_passed": exact >= recipe["exact_match_gate"]}


@torch.no_grad()
def reference_logprobs(model, tokenizer, rows: list[dict], batch_size: int = 64) -> torch.Tensor:
    """Sequence log-probs of every row's answer under ``model``: NPO's pi_ref, computed once."""
    ds = QADataset(rows, tokenizer)
    model.eval()
    out = []
    for b in range(0, len(ds), batch_size):
        batch = collate_qa([ds[i] for i in range(b, min(b + batch_size, len(ds)))], tokenizer.pad_token_id)
        out.append(sequence_logprobs(model, batch)[0].float())
    return torch.cat(out)


def ensure_target(model_spec: dict, data: dict, recipe: dict, storage: Storage, log=print) -> dict:
    """Build the target unless ``<storage>/targets/<hash>/_SUCCESS`` exists; return its metrics.json."""
    key = target_hash(model_spec, data, recipe)
    rel = f"targets/{key}"
    if storage.exists(f"{rel}/_SUCCESS"):
        log(f"target {key} ({model_spec['name']}): cached, reused")
        return json.loads(storage.read_bytes(f"{rel}/metrics.json"))
    log(f"target {key} ({model_spec['name']}): fine-tuning the No-unlearn model")
    with tempfile.TemporaryDirectory() as tmp:
        forget, retain = load_rows(data, tmp)
        tokenizer = _tokenizer_for(model_spec, forget + retain)
        model = build_model(model_spec["name"], vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id,
                            eos_id=tokenizer.eos_token_id, seed=recipe["seed"], dtype=model_spec["dtype"],
                            trust_remote_code=model_spec["trust_remote_code"])
        if torch.cuda.is_available():
            model = model.cuda()
        metrics = fine_tune(model, tokenizer, forget + retain, _gate_rows(forget, retain), recipe, log)
        if not metrics["gate_passed"]:
            log(f"WARNING: target {key} reached only {metrics['gate_exact']:.2f} exact match "
                f"(gate {recipe['exact_match_gate']}) after {metrics['epochs']} epochs; raise target.max_epochs or lr")
        out = os.path.join(tmp, "target")
        os.makedirs(os.path.join(out, "data"))
        model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
        tokenizer.save_pretrained(os.path.join(out, "tokenizer"))
        _write_jsonl(os.path.join(out, "data", "forget.json"), forget)
        _write_jsonl(os.path.join(out, "data", "retain.json"), retain)
        torch.save(reference_logprobs(model, tokenizer, forget).cpu(), os.path.join(out, "ref_logprobs.pt"))
        metrics.update(hash=key, model=model_spec["name"], n_forget=len(forget), n_retain=len(retain),
                       vocab_size=len(tokenizer),
                       n_parameters=sum(p.numel() for p in model.parameters()))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        storage.upload_dir(out, rel)
    storage.write_bytes(f"{rel}/_SUCCESS", b"")
    return metrics


def load_target(storage: Storage, key: str, device: str = "cpu"):
    """(model, tokenizer, forget rows, retain rows, reference log-probs) of a cached target."""
    local = storage.download_dir(f"targets/{key}", tempfile.mkdtemp(prefix=f"target-{key}-"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(local, "tokenizer"))
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(local, "model"), use_safetensors=True)
    model.to(device)
    forget = _read_jsonl(os.path.join(local, "data", "forget.json"))
    retain = _read_jsonl(os.path.join(local, "data", "retain.json"))
    ref = torch.load(os.path.join(local, "ref_logprobs.pt"))
    return model, tokenizer, forget, retain, ref


def random_guess_loss(vocab_size: int) -> float:
    """ln|V|: the token NLL of a uniform guess, the grey line of the paper's Figure 1."""
    return math.log(vocab_size)
