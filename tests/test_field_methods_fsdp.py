"""The field's objectives on a model sharded by FSDP2 over two spawned processes (gloo on 127.0.0.1).

The objectives that need the most of the forward pass run sharded and in one process, from the
same tiny GPT-2 and batches, 3 steps (ddp_worker's data: an odd global batch, rank 0 holds 3 rows and rank 1 holds 2):
RMU (a block's hidden states through a hook on an FSDP-wrapped block; the target's cached at the start),
UNDIAL with a KL retain side (the target's logits cached: every rank runs as many forward passes), IdkDPO
(a second, alternate-answer forward pass and cached log-probs). Rows must agree, so token and sequence
counts are global and the division exact.
"""
from __future__ import annotations

import pytest
import torch

import ddp_worker
from sweeper.data.qa import QADataset
from sweeper.data.refusals import idk_rows
from sweeper.unlearn.distributed import Comm
from sweeper.unlearn.loop import LoopConfig, Unlearner

WORLD, STEPS = 2, 3
CASES = {
    "rmu": dict(method="gdiff", method_params={"c": 0.5}, forget_loss="rmu", retain_loss="rmu"),
    # gdiff, not ngdiff: at step 1 the KL gradient is 0 up to rounding, which NGDiff would scale to norm 1
    "undial_kl": dict(method="gdiff", method_params={"c": 0.5}, forget_loss="undial", retain_loss="kl"),
    "idkdpo": dict(method="gdiff", method_params={"c": 0.5}, forget_loss="idkdpo"),
}
KEYS = ("loss_retain", "loss_forget", "forget_objective", "norm_forget", "w_forget")


def _run(name: str, data, model, comm) -> list[dict]:
    tok, forget, retain, collate, ref = data
    alt = QADataset(idk_rows([{"question": "q", "answer": "a"}] * len(forget)), tok)
    cfg = LoopConfig(**CASES[name], optimizer="sgd", lr=0.05, steps=STEPS, batch_size=ddp_worker.BATCH, seed=1)
    u = Unlearner(model, forget, retain, collate, cfg, comm=comm, ref_logprobs=ref, alt_forget_ds=alt)
    rows = [u.step(t) for t in range(1, STEPS + 1)]
    return [{k: row[k] for k in ("step", *KEYS)} for row in rows]


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from sweeper.unlearn.distributed import TorchDistComm
    from sweeper.unlearn.fsdp import shard_model
    ddp_worker.init_gloo(rank, world_size, port)
    try:
        data = ddp_worker.setup()
        out = {name: _run(name, data, shard_model(ddp_worker.new_model(data[0], seed=0), device="cpu"),
                          TorchDistComm()) for name in CASES}
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(gloo_ranks):
    dist_results = gloo_ranks["test_field_methods_fsdp"]   # worker above on two ranks (tests/conftest.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = ddp_worker.setup()
        single = {name: _run(name, data, ddp_worker.new_model(data[0], seed=0), Comm()) for name in CASES}
    finally:
        torch.set_num_threads(threads)
    return dist_results, single


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_objectives_reproduce_one_process(runs, case):
    dist_results, single = runs
    assert dist_results[0][case] == dist_results[1][case]   # every scalar is global
    for got, want in zip(dist_results[0][case], single[case]):
        for k in KEYS:
            assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), (case, want["step"], k)
    assert single[case][-1]["forget_objective"] != single[case][0]["forget_objective"]
    if case != "idkdpo":   # the model is the target at step 1 (idkdpo's pi_ref is another model here)
        assert abs(single[case][0]["loss_retain"]) < 1e-5
