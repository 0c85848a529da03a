"""FLOP-based device-time estimates (sweeper.cluster.estimate) and the dry-run line that prints them."""
import dataclasses

import pytest

from sweeper.cluster.estimate import GPU_PEAK_BF16, KNOWN_LMS, TOFU_TOKENS_PER_ROW, gpu_hours, trial_flops
from sweeper.grid.load import expand_grid
from sweeper.launch import device_time_estimate


@pytest.fixture(scope="module")
def paper():
    return expand_grid("paper")


def test_trial_flops_by_hand(paper):
    spec = next(s for s in paper if s.model["name"] == "microsoft/phi-1_5" and s.data["kind"] == "tofu"
                and s.lr_mode == "autolr")
    n, layers, d = KNOWN_LMS["microsoft/phi-1_5"]
    t = TOFU_TOKENS_PER_ROW
    row = (6 * n + 12 * layers * d * t) * t  # forward + backward of one row
    probes = spec.steps // spec.autolr.get("every", 10)
    f = trial_flops(spec)
    assert f["steps"] == pytest.approx(spec.steps * 2 * spec.batch_size * row)
    assert f["probes"] == pytest.approx(probes * 2 * spec.batch_size * row / 3)  # two forwards of the retain batch
    assert f["total"] == pytest.approx(f["steps"] + f["probes"])
    assert gpu_hours(f["total"], mfu=1.0) == pytest.approx(f["total"] / GPU_PEAK_BF16 / 3600)


def test_unknown_model_is_none_and_named_in_the_dry_run(paper):
    spec = dataclasses.replace(paper[0], model={**paper[0].model, "name": "org/unknown-model"})
    assert trial_flops(spec) is None
    line = device_time_estimate([spec, paper[0]])
    assert "GPU-hours" in line and "org/unknown-model" in line
