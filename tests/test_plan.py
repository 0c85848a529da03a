"""Planning without Ray (``sweeper.cluster.plan``): the auto runner's choice, GPU packing with fractional GPUs,
and the one-sentence refusals of a grid that can never be placed."""
from __future__ import annotations

import dataclasses

import pytest

from sweeper.grid.load import expand_grid
from sweeper.launch import main as launch_main
from sweeper.cluster.plan import capacity_problems, concurrency, gpu_packing, gpu_trials_at_once, runner_for, runner_problems


def spec_with(workers: int, gpus: float, cpus: float = 1):
    spec = expand_grid("smoke")[0]
    return dataclasses.replace(spec, model={**spec.model, "workers": workers, "gpus_per_worker": gpus,
                                            "cpus_per_worker": cpus})


def test_auto_runs_one_worker_inline_and_sharded_trials_as_train_jobs():
    assert runner_for(spec_with(1, 0), "auto") == "inline" and runner_for(spec_with(2, 0), "auto") == "train"
    assert runner_for(spec_with(1, 0), "train") == "train"
    assert runner_problems([spec_with(2, 0)], "auto") == []
    assert "use --runner auto or train" in runner_problems([spec_with(2, 0)], "inline")[0]


@pytest.mark.parametrize("workers,gpus,cluster,expected", [
    (1, 0.25, 1, 4),    # four quarter-GPU trials share one GPU
    (2, 0.25, 1, 2),    # two workers each: two trials per GPU
    (1, 0.3, 2, 6),     # 3 per GPU (a fourth 0.3 would exceed it) on 2 GPUs
    (4, 1, 8, 2),       # whole GPUs: 8 // 4
    (1, 2, 4, 2),
    (4, 1, 2, 0),       # never fits
])
def test_gpu_trials_at_once(workers, gpus, cluster, expected):
    assert gpu_trials_at_once(spec_with(workers, gpus), cluster) == expected


def test_concurrency_takes_the_tighter_of_cpus_and_gpus():
    specs = [spec_with(1, 0.25), spec_with(1, 0.25)]
    assert concurrency(specs, cpus=16, gpus=1, driver_cpu=0) == 2   # only 2 trials in the grid
    assert concurrency(specs * 4, cpus=16, gpus=1, driver_cpu=0) == 4
    assert concurrency(specs * 4, cpus=3, gpus=1, driver_cpu=0) == 3


def test_unplaceable_grids_are_refused_in_one_sentence_each():
    bad = capacity_problems([spec_with(1, 1.5)], cpus=8, gpus=4, driver_cpu=0)
    assert len(bad) == 1 and "gpus_per_worker = 1.5 cannot be placed" in bad[0]
    bad = capacity_problems([spec_with(4, 1)], cpus=64, gpus=2, driver_cpu=0)
    assert len(bad) == 1 and "4 workers x 1 GPUs can never be placed on the cluster's 2 GPUs" in bad[0]
    assert capacity_problems([spec_with(4, 1)], cpus=64, gpus=None, driver_cpu=0) == []   # GPUs unknown
    assert "2 trial(s) at a time on 1 GPUs" in gpu_packing([spec_with(2, 0.25)], 1)[0]


def test_dry_run_reports_packing_and_refuses_what_never_fits(capsys):
    assert launch_main(["--grid", "tofu_published", "--dry-run", "--num-gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "GPU packing: meta-llama/Llama-2-7b-chat-hf (4 worker(s) x 1 GPU): 1 GPU(s) per worker, 2 trial(s) at a time on 8 GPUs" in out
    assert launch_main(["--grid", "tofu_published", "--dry-run", "--num-gpus", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "can never be placed on the cluster's 2 GPUs" in err


def test_a_dry_run_of_a_gpu_grid_on_a_laptop_says_nothing_fits_here(capsys):
    """Not "0 trial(s) at a time": the dry run says the laptop cannot place the GPU grid and how to plan
    for the cluster it will run on."""
    assert launch_main(["--grid", "tofu_published", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 trial(s) at a time" not in out
    assert "no trial fits here; pass --num-cpus and --num-gpus to plan for the cluster it will run on" in out
    assert launch_main(["--grid", "tofu_published", "--dry-run", "--num-cpus", "64", "--num-gpus", "8"]) == 0
    assert "-> 2 trial(s) at a time" in capsys.readouterr().out
