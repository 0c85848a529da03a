"""Data: TOFU and MUSE-NEWS (real or offline twins), a small tokenizer, and QA/text training tensors.

    from sweeper.data import write_tofu_layout, load_tofu, train_tokenizer, QADataset, collate_qa
    load_tofu(write_tofu_layout("runs/data/tofu", n_authors=20, seed=0), "forget10")
    load_muse(write_muse_layout("runs/data/muse", n_articles=40, seed=0))

The torch/transformers parts (``qa``, ``tokenizer``) are imported on first use, so validating a grid
(split names, layouts) does not pay for importing them.
"""
from __future__ import annotations

import importlib

from sweeper.data.muse import MuseData, load_muse
from sweeper.data.synthetic import (Author, make_authors, perturbed_rows, qa_rows, write_muse_layout,
                                    write_tofu_layout)
from sweeper.data.tofu import FORGET_TO_RETAIN, TofuData, load_tofu

_LAZY = {"QADataset": "qa", "TextDataset": "qa", "collate_qa": "qa", "encode_qa": "qa",
         "format_prompt": "qa", "PROMPT_TEMPLATE": "qa",
         "train_tokenizer": "tokenizer"}

__all__ = ["Author", "FORGET_TO_RETAIN", "MuseData", "TofuData", "load_muse", "load_tofu",
           "make_authors", "perturbed_rows", "qa_rows", "write_muse_layout", "write_tofu_layout",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"sweeper.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sweeper.data' has no attribute {name!r}")
