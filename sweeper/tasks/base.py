"""A task is everything that differs between benchmarks (TOFU QA, MUSE news text, vision): its data,
its model family, how a batch becomes per-example log-probabilities, and how a model is evaluated.
The loop, AutoLR, the methods, targets and the Ray glue are shared and never look inside a task.

A grid's data entry names its task with ``kind`` (``tofu`` by default)::

    data: [{name: authors, kind: tofu, source: builtin, forget_split: forget10}]

Adding a benchmark is one module with a subclass of ``Task`` registered with ``@register_task``.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

import torch

_TASKS: dict[str, type["Task"]] = {}
#: Summary columns kept whatever ``eval.metrics`` says: the fronts and curves are drawn from them.
ALWAYS_KEPT = ("rouge_forget", "rouge_retain", "final_loss_forget", "final_loss_retain")


def register_task(cls: type["Task"]) -> type["Task"]:
    _TASKS[cls.kind] = cls
    return cls


def get_task(kind: str) -> "Task":
    from sweeper import tasks  # noqa: F401  (built-in tasks register on import)
    if kind not in _TASKS:
        close = difflib.get_close_matches(kind, _TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(sorted(_TASKS))}{hint}")
    return _TASKS[kind]()


def known_tasks() -> list[str]:
    from sweeper import tasks  # noqa: F401
    return sorted(_TASKS)


class Task:
    """The interface; each method's docstring says what targets.py / trial.py expect of it."""

    kind: str = ""
    #: Summary columns this task's ``evaluate`` fills; a grid's ``eval.metrics`` selects among them.
    metric_columns: tuple[str, ...] = ()
    #: What a forward pass of this task's models can give an objective (sweeper.methods.objective_registry.NEEDS):
    #: every task gives per-example log-probs and the cached reference; causal LMs and QA rows give more.
    offers: frozenset = frozenset({"sequence", "reference"})
    #: Allowed keys of a grid's data entry and their defaults (``name`` and ``kind`` are always allowed).
    data_defaults: dict[str, Any] = {}

    def problems(self, data: dict, where: str) -> list[str]:
        """One-sentence problems of a data entry (no loading, no network)."""
        return []

    def model_problem(self, name: str) -> str | None:
        """One sentence saying why this task cannot build model ``name``, or None (no loading)."""
        from sweeper.models.language import model_problem
        return model_problem(name)

    def prepare(self, data: dict, workdir: str) -> dict[str, list]:
        """Named splits of JSON-serialisable rows; must include ``forget`` and ``retain``. Saved with the
        target (``data/<split>.json``) so every trial sees the same bytes."""
        raise NotImplementedError

    def train_rows(self, splits: dict[str, list], variant: str) -> list:
        """Rows the target is fine-tuned on: ``full`` (forget + retain) or ``retain_only`` (the
        retrained reference that Forget Quality and PrivLeak compare against)."""
        return splits["retain"] if variant == "retain_only" else splits["forget"] + splits["retain"]

    def make_tokenizer(self, model: dict, splits: dict[str, list]):
        """A tokenizer (trained on the data for tiny twins, from the hub otherwise), or None."""
        return None

    def build_model(self, model: dict, tokenizer, seed: int) -> torch.nn.Module:
        raise NotImplementedError

    def target_model(self, model: dict, data: dict, splits: dict[str, list], seed: int, source: str | None):
        """(model, tokenizer, splits, length report) of a target before training: built here, or loaded
        from a published ``source`` that is never fine-tuned (text tasks only). Refuses, in one sentence,
        data that cannot fit the model, before any weights are trained."""
        if source:
            raise ValueError(f"kind {self.kind!r} cannot load a published checkpoint ({source!r})")
        tokenizer = self.make_tokenizer(model, splits)
        return self.build_model(model, tokenizer, seed), tokenizer, splits, {}

    def save_published(self, model: dict, tokenizer, out_dir: str, source: str) -> None:
        """Save what a target loaded from a published ``source`` needs besides the source itself."""
        raise NotImplementedError

    def save_model(self, model: torch.nn.Module, tokenizer, out_dir: str) -> None:
        raise NotImplementedError

    def load_model(self, local_dir: str, device) -> tuple[torch.nn.Module, Any]:
        """(model, tokenizer) saved by ``save_model``."""
        raise NotImplementedError

    def dataset(self, rows: list, tokenizer) -> torch.utils.data.Dataset:
        """Items for ``collate``; each item carries ``index`` (its row number, for NPO's reference)."""
        raise NotImplementedError

    def collate(self, tokenizer) -> Callable[[list], dict]:
        raise NotImplementedError

    def logprobs(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example summed log-probability of the supervised part and its size ([B], [B]);
        differentiable. Every loss of the loop and of fine-tuning comes from this."""
        raise NotImplementedError

    def memorisation(self, model, tokenizer, splits: dict[str, list], variant: str = "full") -> float:
        """The fine-tune gate's measure in [0, 1] (exact-match rate for QA, accuracy for vision), on rows the
        ``variant`` trains on: the retrained reference (``retain_only``) never sees the forget rows, so
        gating it on them would train it to ``max_epochs`` every time."""
        raise NotImplementedError

    def curve_metrics(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        """Cheap metrics logged on evaluation steps: ``rouge_forget`` and ``rouge_retain`` (or their
        task's analogue under the same names, e.g. accuracy for vision)."""
        raise NotImplementedError

    def curve_evaluation(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> tuple[dict, list[dict]]:
        """``curve_metrics`` and the per-sample rows behind them (``samples.parquet`` with the step), [] by
        default; a text task adds each question, its reference and the model's greedy answer."""
        return self.curve_metrics(model, tokenizer, splits, eval_cfg), []

    def evaluate(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict,
                 reference: dict | None = None) -> tuple[dict, list[dict]]:
        """(summary columns of sweeper.store.results.SUMMARY_SCHEMA, per-sample rows of SAMPLE_SCHEMA).
        ``reference`` is the retain-only target's own ``evaluate`` output (its ``reference`` dict), when
        the task's metrics compare against it."""
        raise NotImplementedError

    def selected_metrics(self, eval_cfg: dict) -> set[str]:
        """The metric columns a grid asked for (all of the task's by default); the columns every plot
        needs (ROUGE or its analogue and the losses) are always kept."""
        chosen = eval_cfg.get("metrics") or self.metric_columns
        return set(chosen) | set(ALWAYS_KEPT)

    def select(self, summary: dict, samples: list[dict], eval_cfg: dict) -> tuple[dict, list[dict]]:
        """``evaluate``'s output restricted to the selected metrics (unselected columns become null)."""
        keep = self.selected_metrics(eval_cfg)
        return {k: (v if k in keep or k not in self.metric_columns else None) for k, v in summary.items()}, samples

    def reference_data(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        """What a retain-only target stores for later comparisons (e.g. per-sample forget truth ratios)."""
        return {}
