"""What every text task (TOFU, MUSE) shares: tokenizers, causal LMs, published checkpoints, token log-probs.

A target's model is one of:

* a tiny twin (``tiny-gpt2`` ...): tokenizer trained on the data, model built from a config whose
  positions cover the data's ``max_length``, then fine-tuned;
* a hub id or folder named by the model's ``name``: loaded with ``from_pretrained``, then fine-tuned;
* a *published* checkpoint (the model's ``checkpoint`` or ``retrained_reference``): loaded as it is and
  never fine-tuned; its tokenizer comes from the model's ``tokenizer`` key when the checkpoint ships
  none (TOFU's Phi-1.5 target). The target folder keeps the tokenizer and a ``source.json`` naming the
  checkpoint, not a copy of the weights; trials load the weights from the source.

The tokenizer saved with a target carries the prompt template and the token limit its rows were fitted
to (``sweeper.data.templates.attach``).
"""
from __future__ import annotations

import json
import os

import torch
import transformers

from sweeper.data.qa import collate_qa
from sweeper.data.templates import attach, resolve
from sweeper.models.lm import sequence_logprobs
from sweeper.models.language import build_model, context_length, is_tiny
from sweeper.tasks.base import Task

#: Positions of a tiny twin at the least (the MUSE prompts need room beyond a training chunk).
TINY_MIN_POSITIONS = 256


class LanguageModelTask(Task):
    #: Causal LMs give token log-probs, logits and hidden states, and the target's values of both.
    offers = Task.offers | {"tokens", "logits", "hidden", "target_logits", "target_hidden"}

    def make_tokenizer(self, model: dict, splits: dict[str, list], source: str | None = None):
        """A tokenizer trained on the data (a tiny twin being built), else from the model's ``tokenizer``
        key, the published ``source`` or the model's name."""
        if is_tiny(model["name"]) and not source:
            from sweeper.data.tokenizer import train_tokenizer
            return train_tokenizer(self.tokenizer_texts(splits))
        path = model.get("tokenizer") or source or model["name"]
        tok = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=model["trust_remote_code"])
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def tokenizer_texts(self, splits: dict[str, list]) -> list[str]:
        raise NotImplementedError

    def build_model(self, model: dict, tokenizer, seed: int, positions: int | None = None) -> torch.nn.Module:
        # float32 master weights: the grid's dtype is the compute dtype (sweeper.models.language.compute_precision)
        return build_model(model["name"], vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id,
                           eos_id=tokenizer.eos_token_id, seed=seed, dtype="float32",
                           trust_remote_code=model["trust_remote_code"], positions=positions)

    def target_model(self, model: dict, data: dict, splits: dict[str, list], seed: int, source: str | None):
        """(model, tokenizer, fitted splits, length report) of a target, before any training.

        The rows are measured and fitted to the model's context and the data's ``max_length`` first
        (``fit_lengths``), so an impossible combination is refused before weights are loaded or trained.
        """
        tokenizer = self.make_tokenizer(model, splits, source)
        attach(tokenizer, resolve(model.get("template", "auto"), tokenizer))
        max_length = int(data["max_length"])
        if is_tiny(model["name"]) and not source:
            context = max(TINY_MIN_POSITIONS, max_length)  # the twin is built to see what the data holds
        else:
            config = transformers.AutoConfig.from_pretrained(source or model["name"],
                                                             trust_remote_code=model["trust_remote_code"])
            context = context_length(config)
        limit = min(max_length, context) if context else max_length
        splits, report = self.fit_lengths(splits, tokenizer, data, model.get("checkpoint") or model["name"], context)
        # QA rows were fitted to the limit, which the tokenizer now carries; text tasks chunk long texts on
        # purpose, so their tokenizer keeps its own limit (else every long article would warn).
        attach(tokenizer, tokenizer.init_kwargs["prompt_template"], limit if report else None)
        if source:
            net = transformers.AutoModelForCausalLM.from_pretrained(
                source, dtype=torch.float32, use_safetensors=True, trust_remote_code=model["trust_remote_code"])
        else:
            net = self.build_model(model, tokenizer, seed, positions=context if is_tiny(model["name"]) else None)
        return net, tokenizer, splits, report

    def fit_lengths(self, splits: dict[str, list], tokenizer, data: dict, model_name: str,
                    context: int | None) -> tuple[dict[str, list], dict]:
        """Rows fitted to the token limit and a per-split length report (see ``sweeper.data.lengths``)."""
        return splits, {}

    def save_model(self, model, tokenizer, out_dir: str) -> None:
        model.save_pretrained(os.path.join(out_dir, "model"), safe_serialization=True)
        tokenizer.save_pretrained(os.path.join(out_dir, "tokenizer"))

    def save_published(self, model: dict, tokenizer, out_dir: str, source: str) -> None:
        """The tokenizer and ``source.json`` naming the published weights (no copy of them)."""
        tokenizer.save_pretrained(os.path.join(out_dir, "tokenizer"))
        with open(os.path.join(out_dir, "source.json"), "w") as f:
            json.dump({"model": source, "trust_remote_code": model["trust_remote_code"]}, f)

    def load_model(self, local_dir: str, device):
        tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(local_dir, "tokenizer"))
        path, trust = os.path.join(local_dir, "model"), False
        if os.path.exists(os.path.join(local_dir, "source.json")):
            with open(os.path.join(local_dir, "source.json")) as f:
                src = json.load(f)
            path, trust = src["model"], src.get("trust_remote_code", False)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32,
                                                                  trust_remote_code=trust)
        return model.to(device), tokenizer

    def logprobs(self, model, batch: dict):
        return sequence_logprobs(model, batch)

    def collate(self, tokenizer):
        pad = tokenizer.pad_token_id
        return lambda items: collate_qa(items, pad)
