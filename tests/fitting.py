"""A short full-batch fit for tests that need a model which has memorised part of each answer (so that no
score sits at a random model's 0): 40 AdamW steps at 3e-3 on every row at once, then eval mode.

    model = short_fit(task, model, tok, splits["forget"] + splits["retain"])
"""
from __future__ import annotations

import torch


def short_fit(task, model, tok, rows: list, steps: int = 40, lr: float = 3e-3):
    ds = task.dataset(rows, tok)
    batch = task.collate(tok)([ds[i] for i in range(len(ds))])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        lp, n = task.logprobs(model, batch)
        loss = -lp.sum() / n.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
