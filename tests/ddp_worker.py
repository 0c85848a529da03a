"""Helpers for tests/test_distributed.py: one tiny unlearning setup, run by 1 or by W processes.

Lives in its own module so torch.multiprocessing's spawn can import ``worker`` in the child processes
(pytest puts this folder on sys.path, and spawn hands the parent's sys.path to its children).
"""
from __future__ import annotations

import math
import os
from functools import partial

import torch

from sweeper.unlearn.autolr import AutoLRConfig
from sweeper.data.qa import QADataset, collate_qa
from sweeper.data.synthetic import make_authors, qa_rows
from sweeper.data.tokenizer import train_tokenizer
from sweeper.unlearn.loop import LoopConfig, Unlearner
from sweeper.models.language import build_model

STEPS = 5
BATCH = 5            # odd global batch: rank 0 gets 3 rows, rank 1 gets 2
N_FORGET = 7         # 7 and 11 rows: the 5 steps wrap into a second epoch of each split
N_RETAIN = 11

#: name -> the loop configuration of one case.
CASES = {
    "ngdiff_autolr_adam": LoopConfig(method="ngdiff", optimizer="adam", lr=2e-3, steps=STEPS, batch_size=BATCH,
                                     autolr=AutoLRConfig(every=2), seed=3),
    "gdiff_npo_sgd": LoopConfig(method="gdiff", method_params={"c": 0.3}, forget_loss="npo",
                                forget_loss_params={"beta": 0.1}, optimizer="sgd", lr=0.02, steps=STEPS,
                                batch_size=BATCH, seed=1),
}


def setup():
    """Tokenizer, forget/retain datasets, collate and NPO reference log-probs, the same in every process."""
    rows = qa_rows(make_authors(3, seed=0), qa_per_author=6)   # 18 rows of different lengths
    forget_rows, retain_rows = rows[:N_FORGET], rows[N_FORGET:N_FORGET + N_RETAIN]
    tok = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows], vocab_size=300)
    forget, retain = QADataset(forget_rows, tok), QADataset(retain_rows, tok)
    collate = partial(collate_qa, pad_id=tok.pad_token_id)
    # pi_ref: a differently initialised model, so log(pi / pi_ref) != 0 from the first step.
    from sweeper.unlearn.targets import reference_logprobs
    from sweeper.tasks import get_task
    ref = reference_logprobs(get_task("tofu"), new_model(tok, seed=1), tok, forget_rows)
    return tok, forget, retain, collate, ref


def new_model(tok, seed: int = 0):
    return build_model("tiny-gpt2", vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                       seed=seed)


def run_case(name: str, data, comm=None) -> dict:
    """Run case ``name`` for STEPS steps; its curve rows (wall_s dropped) and final parameters."""
    tok, forget, retain, collate, ref = data
    model = new_model(tok, seed=0)
    cfg = CASES[name]
    unlearner = Unlearner(model, forget, retain, collate, cfg, comm=comm,
                          ref_logprobs=ref if cfg.forget_loss == "npo" else None)
    rows = []
    for t in range(1, cfg.steps + 1):
        row = unlearner.step(t)
        row.pop("wall_s")
        rows.append(row)
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"rows": rows, "params": params}


def local_token_counts(data, world_size: int, step: int = 1) -> list[tuple[int, int]]:
    """(retain tokens, forget tokens) each rank holds at ``step``: the premise that they differ."""
    from sweeper.unlearn.loop import StepBatches
    _, forget, retain, collate, _ = data
    out = []
    for r in range(world_size):
        b = StepBatches({"forget": len(forget), "retain": len(retain)}, BATCH, 0, r, world_size)
        n = []
        for split, ds in (("retain", retain), ("forget", forget)):
            batch = collate([ds[i] for i in b.indices(split, step)])
            n.append(int((batch["labels"][:, 1:] != -100).sum()))
        out.append(tuple(n))
    return out


def init_gloo(rank: int, world_size: int, port: int) -> None:
    """One thread, and a gloo process group on 127.0.0.1 that gives up after 120 s (a hang guard)."""
    from datetime import timedelta

    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank: gloo process group on 127.0.0.1, every case, results to ``out_dir/rank{r}.pt``."""
    import torch.distributed as dist

    from sweeper.unlearn.distributed import TorchDistComm
    init_gloo(rank, world_size, port)
    try:
        data = setup()
        comm = TorchDistComm()
        assert (comm.rank, comm.world_size) == (rank, world_size)
        results = {name: run_case(name, data, comm) for name in CASES}
        results["stop"] = stop_verdicts(comm, out_dir)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()



def stop_verdicts(comm, out_dir: str) -> list:
    """``stop_requested`` on every rank before and after rank 0's storage holds a stop marker (a front
    search's verdict): every rank must see the same answer at the same step."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from sweeper.store.records import STOP_MARKER
    from sweeper.store.storage import Storage
    from sweeper.unlearn.worker import stop_requested
    storage, spec = Storage(out_dir), SimpleNamespace(run="stoprun", trial_id="t0")
    before = stop_requested(storage, spec, comm)
    if comm.rank == 0:
        storage.write_bytes(f"stoprun/trials/t0/{STOP_MARKER}", b"dominated by t1 at step 10")
    dist.barrier()
    return [before, stop_requested(storage, spec, comm)]
