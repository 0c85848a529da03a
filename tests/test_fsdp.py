"""Two gloo workers with an FSDP2-sharded model reproduce one unsharded worker.

Mirrors tests/test_distributed.py: two spawned processes (gloo on 127.0.0.1) each build the same tiny
GPT-2, shard it with ``sweeper.unlearn.fsdp.shard_model`` (each GPT2Block, then the root: every parameter and
gradient becomes a DTensor holding half of the rows) and run ``Unlearner`` for 5 steps of each
``ddp_worker.CASES`` case: NGDiff + AutoLR (every 2 steps) + Adam, and GDiff c=0.3 (NPO forget
objective) + SGD. The loop runs its sharded-gradient path: FSDP reduce-scatters each backward's
gradient as a SUM over ranks, the norms and the dot product are local-shard sums all-reduced once, and
AutoLR moves the local shards. The ranks hold different numbers of rows and tokens (odd global batch).
The logged rows and the gathered final parameters (``full_tensor()``) must equal a 1-process unsharded
run of the same cases.

The 1-process reference computes ||g_R||^2, ||g_F||^2 and g_R.g_F with float64 accumulation
(``sweeper.unlearn.loop._dot`` patched for the reference run only). The loop's flat path uses one float32
``torch.dot`` over the whole flat buffer, which on this CPU is off by ~5e-6 (relative) for the tiny
model's 375k parameter values, while the sharded path (per-parameter float32 dots summed in float64) agrees
with float64 to ~1e-8; against the exact reference the tolerances below measure the sharding alone.

Also checked: a run checkpointed after step 3 (full state dicts gathered to rank 0) and restored into a
fresh sharded model ends where the uninterrupted run ends, and greedy QA evaluation on the sharded
model (all ranks generating together) equals the evaluation of the same parameters unsharded.
"""
from __future__ import annotations

import math

import pytest
import torch

import ddp_worker
from equivalence import autolr_tolerance, rel
import fsdp_worker
import sweeper.unlearn.loop
from sweeper.unlearn.distributed import Comm

WORLD = 2
STEP1_RTOL = 1e-6    # step 1 differs only by summation order (shards vs one buffer); measured <= 1e-7
PARAM_ATOL = 1e-6
BULK_FRACTION = 0.999
#: case -> (rows rtol, params atol); measured: Adam rows <= 1.2e-6 on the machine these bounds were
#: first measured on, 3.4e-5 (||g_F|| at step 5) on a later one with the same torch: after AutoLR's first
#: fit every later row inherits the relative float32 error of eta* (up to ~1e-4 here, see
#: equivalence.autolr_tolerance), so the AutoLR case's rows get 2e-4; params <= 1.1e-5 (197 of 375k
#: coordinates > 1e-6); SGD rows <= 2.1e-6, params <= 1.2e-7. The Adam case's parameter bound is looser
#: for the reason documented in tests/test_distributed.py (Adam's eps turns float noise in
#: zero-gradient coordinates, e.g. GPT-2's attention key bias, into steps of order lr); the bulk of its
#: coordinates must still match PARAM_ATOL.
CASE_TOL = {
    "ngdiff_autolr_adam": (2e-4, 5e-5),
    "gdiff_npo_sgd": (1e-5, PARAM_ATOL),
}


def _exact_dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.double(), b.double()))




@pytest.fixture(scope="module")
def runs(gloo_ranks):
    """{"dist": [rank0 results, rank1 results], "single": 1-process unsharded results, "data": setup}."""
    dist_results = gloo_ranks["test_fsdp"]   # fsdp_worker.worker on two ranks (tests/conftest.py)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp_ctx:   # the exact reference (see the module docstring)
            mp_ctx.setattr(sweeper.unlearn.loop, "_dot", _exact_dot)
            data = ddp_worker.setup()
            single = {name: ddp_worker.run_case(name, data, Comm()) for name in ddp_worker.CASES}
    finally:
        torch.set_num_threads(threads)
    return {"dist": dist_results, "single": single, "data": data}






def _compare_rows(got_rows, want_rows, case, rows_rtol) -> float:
    assert len(got_rows) == len(want_rows) == ddp_worker.STEPS
    cfg, worst = ddp_worker.CASES[case], 0.0
    lr_before = cfg.lr
    for got, want in zip(got_rows, want_rows):
        assert got.keys() == want.keys(), (got.keys(), want.keys())
        for key, w in want.items():
            g = got[key]
            if isinstance(w, str):
                assert g == w, (key, got["step"], g, w)
            elif isinstance(w, float) and math.isnan(w):
                assert math.isnan(g), (key, got["step"], g)
            else:
                tol = autolr_tolerance(key, want, lr_before, cfg)
                rtol = STEP1_RTOL if got["step"] == 1 else rows_rtol
                assert math.isclose(g, w, rel_tol=rtol, abs_tol=tol), (key, got["step"], g, w, abs(g - w), tol)
                if tol == 0.0:
                    worst = max(worst, rel(g, w))
        lr_before = want["lr"]
    return worst


def _compare_params(got: dict, want: dict, params_atol: float) -> tuple[float, int, int]:
    assert got.keys() == want.keys()
    max_diff, n_off, n_all = 0.0, 0, 0
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, rtol=0.0, atol=params_atol, msg=k)
        diff = (got[k] - w).abs()
        max_diff = max(max_diff, float(diff.max()))
        n_off, n_all = n_off + int((diff > PARAM_ATOL).sum()), n_all + diff.numel()
    assert n_off <= (1 - BULK_FRACTION) * n_all, f"{n_off} of {n_all} parameters differ by > {PARAM_ATOL}"
    return max_diff, n_off, n_all


@pytest.mark.parametrize("case", list(ddp_worker.CASES))
def test_model_is_sharded(runs, case):
    for r in range(WORLD):
        s = runs["dist"][r][case]["sharding"]
        assert s["all_dtensor"], s
        assert s["fsdp_modules"] == 3, s                        # 2 GPT2Blocks + the root
        assert s["local_numel"] <= s["full_numel"] // WORLD + 1024, s   # each rank holds about half
    total = sum(runs["dist"][r][case]["sharding"]["local_numel"] for r in range(WORLD))
    assert total == runs["dist"][0][case]["sharding"]["full_numel"]


@pytest.mark.parametrize("case", list(ddp_worker.CASES))
def test_sharded_workers_reproduce_one(runs, case):
    one = runs["single"][case]
    rank0, rank1 = (runs["dist"][r][case] for r in range(WORLD))
    rows_rtol, params_atol = CASE_TOL[case]
    worst = _compare_rows(rank0["rows"], one["rows"], case, rows_rtol)
    if case.startswith("ngdiff_autolr"):
        assert any("autolr_status" in r for r in one["rows"]), "AutoLR never probed"
    for r0, r1 in zip(rank0["rows"], rank1["rows"]):   # every scalar is global: identical rows
        assert r0 == r1
    for k in one["params"]:
        assert torch.equal(rank0["params"][k], rank1["params"][k]), k
    max_diff, n_off, n_all = _compare_params(rank0["params"], one["params"], params_atol)
    moved = max(float((one["params"][k] - v).abs().max())
                for k, v in ddp_worker.new_model(runs["data"][0]).state_dict().items())
    assert moved > 100 * PARAM_ATOL
    print(f"\nfsdp {case}: rows max rel diff {worst:.2e}, params max abs diff {max_diff:.2e}, "
          f"{n_off}/{n_all} > {PARAM_ATOL} (moved {moved:.2e})")


def test_resumed_sharded_run_matches(runs):
    """Checkpoint after step 3 (gathered to rank 0), restore into a fresh sharded model, finish."""
    case = fsdp_worker.RESUME_CASE
    for r in range(WORLD):
        got, straight = runs["dist"][r]["resumed"], runs["dist"][r][case]
        assert got["rows"] == straight["rows"]
        for k, v in straight["params"].items():
            assert torch.equal(got["params"][k], v), k


def test_sharded_evaluation_on_every_rank(runs):
    plain = runs["dist"][0]["eval_plain"]
    for r in range(WORLD):
        sharded = runs["dist"][r]["eval_sharded"]
        assert sharded["answers"] == plain["answers"]
        assert math.isclose(sharded["loss"], plain["loss"], rel_tol=1e-5)
        assert sharded["rouge"] == plain["rouge"] and sharded["exact"] == plain["exact"]
