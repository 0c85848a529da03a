"""QA rows and raw texts as training tensors: loss on the answer tokens only.

    from functools import partial
    from torch.utils.data import DataLoader
    from sweeper.data.qa import QADataset, TextDataset, collate_qa
    ds = QADataset(rows, tok)                       # rows: [{"question", "answer"}, ...]
    dl = DataLoader(ds, batch_size=8, collate_fn=partial(collate_qa, pad_id=tok.pad_token_id))
    batch = next(iter(dl))   # input_ids, labels, attention_mask, index: [B, T], [B, T], [B, T], [B]

A row becomes its prompt template's prompt, the answer and eos (``sweeper.data.templates``: the template
travels with the tokenizer; ``Question: {question}\nAnswer: {answer}<eos>`` by default). ``labels`` equal
``input_ids`` on the answer and eos and are -100 on the prompt and on padding, unshifted (the model code
shifts). ``index`` is the row's position in ``rows``, the key into cached per-example reference
log-probabilities (NPO). A row longer than the limit is an error, never cut: stage 1 fits the rows
(``sweeper.data.lengths``) before anything trains on them.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from sweeper.data.templates import RowTooLong, get_template, template_of, token_limit

#: The prompt template of the paper's fine-tuned models (the ``question_answer`` template).
PROMPT_TEMPLATE = "Question: {question}\nAnswer: {answer}"
IGNORE = -100


def format_prompt(question: str) -> str:
    """The paper's prompt: ``Question: {question}\nAnswer:`` (no trailing space)."""
    return get_template("question_answer").prompt_format.format(q=question)


def encode_qa(tokenizer, question: str, answer: str, max_length: int | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one QA pair in the tokenizer's template, the prompt's labels -100.

    ``max_length`` (default: the tokenizer's ``model_max_length``, which stage 1 sets to the target's
    limit) is a hard limit: a longer row raises :class:`RowTooLong` rather than losing its answer's end.
    """
    ids, n_prompt = template_of(tokenizer).encode(tokenizer, question, answer)
    limit = max_length or token_limit(tokenizer)
    if limit is not None and len(ids) > limit:
        raise RowTooLong(f"question {question[:60]!r} and its answer take {len(ids)} tokens, more than the "
                         f"limit of {limit}; stage 1 fits rows to the limit (data max_length, truncation)")
    return ids, [IGNORE] * n_prompt + ids[n_prompt:]


class QADataset(Dataset):
    """Tokenized QA rows; item ``i`` is ``{"input_ids", "labels", "index": i}`` (1-D tensors + int)."""

    def __init__(self, rows: list[dict], tokenizer, max_length: int | None = None,
                 question_key: str = "question", answer_key: str = "answer"):
        self.rows = rows
        self.items = []
        for i, row in enumerate(rows):
            q, a = row.get(question_key), row.get(answer_key)
            if not isinstance(q, str) or not isinstance(a, str):
                raise ValueError(f"QA row {i} needs string keys '{question_key}' and '{answer_key}'; "
                                 f"it has {sorted(row)}.")
            ids, labels = encode_qa(tokenizer, q, a, max_length)
            self.items.append((torch.tensor(ids), torch.tensor(labels)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ids, labels = self.items[i]
        return {"input_ids": ids, "labels": labels, "index": i}


class TextDataset(Dataset):
    """Raw texts (MUSE articles) with loss on every token, each text + eos cut into ``max_length`` chunks.

    Chunks never span two texts; a final chunk of one token (nothing to predict) is dropped.
    ``doc_of_chunk[i]`` is the text that chunk ``i`` came from.
    """

    def __init__(self, texts: list[str], tokenizer, max_length: int = 512, add_eos: bool = True):
        if max_length < 2:
            raise ValueError(f"max_length={max_length} is too small; allowed: >= 2.")
        self.items, self.doc_of_chunk = [], []
        for d, text in enumerate(texts):
            # verbose=False: long articles exceed model_max_length before chunking, on purpose
            ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
            if add_eos and tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            for start in range(0, len(ids), max_length):
                chunk = ids[start:start + max_length]
                if len(chunk) >= 2:
                    self.items.append(torch.tensor(chunk))
                    self.doc_of_chunk.append(d)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.items[i], "labels": self.items[i].clone(), "index": i}


def collate_qa(batch: list[dict], pad_id: int) -> dict:
    """Right-pad a list of items to the batch's longest: input_ids (pad_id), labels (-100),
    attention_mask (1 on tokens, 0 on padding) and index ([B])."""
    if pad_id is None:
        raise ValueError("pad_id is None; pass the tokenizer's pad_token_id (or its eos_token_id).")
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, :n], labels[r, :n], mask[r, :n] = b["input_ids"], b["labels"], 1
    index = torch.tensor([int(b["index"]) for b in batch], dtype=torch.long)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "index": index}
