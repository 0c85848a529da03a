"""One side of a step (forget or retain): its objective, the forward pass it needs, its cached target values.

The loop (``sweeper.unlearn.loop``) asks each side for its values and counts; this module runs only the
forward passes the objective declared (``needs``) and attaches what was cached::

    side = ObjectiveSide("forget", "undial", {"beta": 10.0}, logprobs=task.logprobs, seed=0)
    side.fill_cache(model, batch_of, rows=[0, 1, 2], chunk=8)     # at the trial's start: the target's values
    f = side.forward(model, batch)                               # during a step
    counts = side.counts(f)                                      # [tokens, sequences, alternate tokens]
    value = side.values(f).sum() / side.denominator(all_reduced_counts)

The target's values (logits, hidden states at the answer positions, the refusal's log-prob) are computed
from the model itself before the first update, for the rows this worker will visit, and kept on the CPU:
no second model is held. ``rows_to_cache`` says which rows those are.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .forward import Forward, blocks, resolve_layer, run_forward
from .objectives import get_objective

_UNIT_INDEX = {"tokens": 0, "sequences": 1, "alternate_tokens": 2}


class ObjectiveSide:
    """A side's objective with its parameters; ``cache`` holds the target's values by row index."""

    def __init__(self, side: str, name: str, params: dict, *, logprobs: Callable, seed: int = 0):
        self.side, self.obj, self.params = side, get_objective(name, side), dict(params)
        self.logprobs, self.seed = logprobs, seed
        self.layer = self.params.get("layer", "auto")
        self.cache: dict[str, dict[int, torch.Tensor]] = {"logits": {}, "hidden": {}, "alternate": {}}

    def check_model(self, model) -> None:
        """Refuse, before any step, a ``layer`` the model does not have (one sentence naming the key)."""
        if self.needs & {"hidden", "target_hidden"}:
            try:
                resolve_layer(self.layer, len(blocks(model)))
            except ValueError as e:
                raise ValueError(f"{self.side}_loss {self.obj.name!r}: {e}") from None

    @property
    def needs(self) -> frozenset:
        return self.obj.needs

    @property
    def caches(self) -> list[str]:
        """Which target values this side caches at the start."""
        return [k for k, need in (("logits", "target_logits"), ("hidden", "target_hidden"),
                                  ("alternate", "target_alternate")) if need in self.needs]

    def _model_needs(self) -> set:
        """The target_* needs are served by the cache, but the model's own pass must give the same field."""
        needs = set(self.needs) - {"reference", "alternate", "target_alternate"}
        return {n.removeprefix("target_") for n in needs}

    def forward(self, model, batch: dict, alt_batch: dict | None = None,
                ref_logprobs: torch.Tensor | None = None) -> Forward:
        """The pass ``needs`` asks for on ``batch`` (differentiable), with cached values attached."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.obj.grad_answer):
            f = run_forward(model, batch, self._model_needs(), logprobs=self.logprobs, layer=self.layer)
        f.seed = self.seed
        rows = batch["index"].tolist() if self.needs & {"target_logits", "target_hidden", "target_alternate"} else []
        if "reference" in self.needs:
            f.ref_logprob = ref_logprobs[batch["index"].cpu()].to(f.seq_logprob.device)
        if "target_logits" in self.needs:
            f.target_logits = self._packed("logits", rows, f)
        if "target_hidden" in self.needs:
            f.target_hidden = self._packed("hidden", rows, f)
        if "alternate" in self.needs:
            f.alt = run_forward(model, alt_batch, {"sequence"}, logprobs=self.logprobs)
            if "target_alternate" in self.needs:
                f.alt.ref_logprob = torch.stack([self._cached("alternate", i) for i in rows]).to(f.seq_logprob.device)
        return f

    def _packed(self, kind: str, rows: list[int], f: Forward) -> torch.Tensor:
        """The cached values of ``rows`` at their answer positions, [N, X] in the order of ``f.packed``."""
        return torch.cat([self._cached(kind, i) for i in rows]).to(f.seq_logprob.device, non_blocking=True)

    def _cached(self, kind: str, row: int) -> torch.Tensor:
        try:
            return self.cache[kind][row]
        except KeyError:
            raise RuntimeError(f"{self.side} row {row} has no cached target {kind}; the cache covers only the "
                               f"rows of the trial's steps (rows_to_cache)") from None

    def values(self, f: Forward) -> torch.Tensor:
        """Per-sequence values of the objective (forget: ascended; retain: descended)."""
        return self.obj.fn(f, **self.params)

    def counts(self, f: Forward) -> torch.Tensor:
        """[answer tokens, sequences, alternate answer tokens] of this worker's batch, float32."""
        alt = f.alt.n_tokens.sum().float() if f.alt is not None else torch.zeros((), device=f.n_tokens.device)
        return torch.stack([f.n_tokens.sum().float(), torch.tensor(float(f.seq_logprob.shape[0]),
                                                                     device=f.seq_logprob.device), alt])

    def denominator(self, counts: torch.Tensor) -> torch.Tensor:
        """The global count of the objective's unit, from all-reduced ``counts``."""
        return counts[_UNIT_INDEX[self.obj.unit]]

    @torch.no_grad()
    def fill_cache(self, model, batch_of: Callable[[list[int], bool], tuple[dict, dict | None]],
                   rows: list[int], chunk: int, n_chunks: int | None = None) -> int:
        """Cache the target's values for ``rows`` (call before the first update, in eval mode).

        ``batch_of(rows, alternate)`` gives (batch, alternate batch). ``n_chunks`` (sharded models: the
        largest count over workers) pads with repeated passes so every worker runs as many forwards.
        Returns the bytes held."""
        if not self.caches or not rows:
            return 0
        chunks = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
        chunks += [chunks[-1]] * max(0, (n_chunks or 0) - len(chunks))
        needs = {"logits"} if "logits" in self.caches else set()
        needs |= {"hidden"} if "hidden" in self.caches else set()
        for part in chunks:
            batch, alt_batch = batch_of(part, "alternate" in self.caches)
            if needs:
                f = run_forward(model, batch, needs, logprobs=self.logprobs, layer=self.layer)
                for b, row in enumerate(part):
                    if "logits" in needs:
                        self.cache["logits"][row] = f.logits[b][f.mask[b]].cpu()
                    if "hidden" in needs:
                        self.cache["hidden"][row] = f.hidden[b][f.mask[b]].cpu()
            if alt_batch is not None:
                seq, _ = self.logprobs(model, alt_batch)
                for b, row in enumerate(part):
                    self.cache["alternate"][row] = seq[b].float().cpu()
        return sum(t.numel() * t.element_size() for d in self.cache.values() for t in d.values())


def rows_to_cache(batches, split: str, n_rows: int, steps: int) -> list[int]:
    """The rows this worker's batches visit over ``steps`` steps; all rows when the steps cover the
    split at least once (a long trial sees them all anyway, and this bounds the work)."""
    if steps * batches.batch_size >= n_rows:
        return list(range(n_rows))
    return sorted({i for t in range(1, steps + 1) for i in batches.indices(split, t)})


def chunks_needed(n_rows: int, chunk: int) -> int:
    return math.ceil(n_rows / chunk) if n_rows else 0
