"""How a trial is named on plots and in tables: the paper's model and method names, a sharded trial's
workers and strategy, and each trial's column label and sort order.

    label_trials(data.summaries)[["label", "column", "order"]]
    method_label("gdiff", 0.5) == "GDiff-0.5";  model_label("microsoft/phi-1_5") == "Phi-1.5"
"""
from __future__ import annotations

import json
import re

import pandas as pd

from analysis.load import BASELINE

#: Column order of the paper (No-unlearn, GDiff-c by c descending, NPO, LossNorm, NGDiff), then others.
METHOD_NAMES = {
    BASELINE: "No-unlearn", "retrained_reference": "Retain (reference)", "gdiff": "GDiff", "npo": "NPO", "lossnorm": "LossNorm", "ngdiff": "NGDiff",
    "ga": "GA", "gd": "GD", "rlw": "RLW", "pcgrad": "PCGrad", "imtlg": "IMTL-G", "gradnorm": "GradNorm",
}
METHOD_RANK = {m: i for i, m in enumerate(METHOD_NAMES)}
#: Normalised model-name prefix -> the paper's name (hub ids and short names both map).
PAPER_MODELS = [("phi15", "Phi-1.5"), ("falconrw1b", "Falcon-1B"), ("falcon1b", "Falcon-1B"),
                ("gpt2xl", "GPT2-XL"), ("llama27b", "Llama2-7B"), ("mistral7b", "Mistral-7B"),
                ("resnet50", "ResNet-50")]

def model_label(model) -> str:
    """The paper's name of a model ("microsoft/phi-1_5" -> "Phi-1.5"); unknown models are kept as is."""
    key = re.sub(r"[^a-z0-9]", "", str(model).rsplit("/", 1)[-1].lower())
    return next((name for prefix, name in PAPER_MODELS if key.startswith(prefix)), str(model))


def dataset_family(dataset) -> str | None:
    """"TOFU" or "MUSE-NEWS" when the dataset name says so, else None (no paper numbers to compare)."""
    name = str(dataset).lower()
    return "TOFU" if "tofu" in name else "MUSE-NEWS" if "muse" in name else None


def method_label(method, c=None, forget_loss=None) -> str:
    """The paper's column name: "No-unlearn", "GDiff-0.5", "NPO", "NGDiff", ..."""
    name = METHOD_NAMES.get(method, str(method))
    if method == "gdiff" and c is not None and not pd.isna(c):
        name = f"GDiff-{c:g}"
    if forget_loss == "npo" and method not in ("npo", BASELINE):
        # NPO is ascent on the NPO objective; with another combination rule it is a variant of that rule.
        name = "NPO" if method == "ga" else f"{name}+NPO"
    return name


def sharding_label(workers, params_json=None) -> str:
    """" ×2 DDP" for a trial sharded over two DDP workers ("FSDP" for FSDP2), "" for one worker."""
    if workers is None or pd.isna(workers) or int(workers) <= 1:
        return ""
    strategy = "ddp"
    if isinstance(params_json, str):
        try:
            strategy = json.loads(params_json).get("model", {}).get("strategy") or strategy
        except ValueError:
            pass
    return f" ×{int(workers)} {strategy.upper()}"


def adapter_label(params_json=None) -> str:
    """"+LoRA r8" for a trial whose model carried a LoRA adapter (from its params_json), "" otherwise."""
    if not isinstance(params_json, str):
        return ""
    try:
        adapter = (json.loads(params_json).get("model") or {}).get("adapter")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(adapter, dict):
        return ""
    return f"+{'LoRA' if adapter.get('kind', 'lora') == 'lora' else adapter.get('kind')} r{adapter.get('r', 8)}"


def label_trials(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus ``label`` (base label), ``column`` (label with AutoLR / lr when needed) and ``order``.

    A column names the learning rate only when the same method and lr mode ran at several rates, or
    when its trial comes from a front-search study that searched the learning rate.
    """
    df = df.copy()
    get = lambda col: df[col] if col in df else pd.Series([None] * len(df), index=df.index)  # noqa: E731
    # A sharded trial is told apart from its one-worker twin by its workers and strategy ("NGDiff ×2 DDP").
    sharding = [sharding_label(w, p) for w, p in zip(get("workers"), get("params_json"))]
    # "+LoRA r8": a LoRA trial beside its full-weight twin; never the No-unlearn row, whose target is the
    # full model (its params hold no adapter since 2026-12-05; rows written before took the first entry's).
    lora = [adapter_label(p) if m != BASELINE else "" for p, m in zip(get("params_json"), get("method"))]
    labels = [method_label(m, c, f) + a + sh
              for m, c, f, a, sh in zip(get("method"), get("c"), get("forget_loss"), lora, sharding)]
    auto = (get("lr_mode") == "autolr") & (get("method") != BASELINE)
    df["label"] = pd.Series(labels, index=df.index, dtype=object)
    df["column"] = pd.Series([f"{lab} (AutoLR)" if a else lab for lab, a in zip(labels, auto)],
                             index=df.index, dtype=object)
    lrs = get("lr")
    several = df.assign(_lr=lrs).groupby("column", dropna=False)["_lr"].transform("nunique") > 1
    if "study" in df:  # a front search that searched the lr: every column of its study names its lr
        searched = df.assign(_lr=lrs).groupby("study", dropna=True)["_lr"].transform("nunique") > 1
        several |= searched.reindex(df.index, fill_value=False).astype(bool)
    df["column"] = pd.Series([f"{col} η={lr:g}" if many else col for col, lr, many in zip(df["column"], lrs, several)],
                             index=df.index, dtype=object)
    rank = [METHOD_RANK.get(m, len(METHOD_RANK)) + (0.5 if f == "npo" and m not in ("npo", "ga") else 0)
            for m, f in zip(get("method"), get("forget_loss"))]
    cs = pd.to_numeric(get("c"), errors="coerce").fillna(-1)
    lr_num = pd.to_numeric(lrs, errors="coerce").fillna(0)
    # Sort key: paper order (unknown methods alphabetically after), GDiff's c descending, static before
    # AutoLR, then lr; a sharded trial after its one-worker twins.
    workers = pd.to_numeric(get("workers"), errors="coerce").fillna(1)
    df["order"] = pd.Series([(r, lab if r >= len(METHOD_RANK) else "", int(w), -c, int(a), lr)
                             for r, lab, w, c, a, lr in zip(rank, labels, workers, cs, auto, lr_num)],
                            index=df.index, dtype=object)
    return df
