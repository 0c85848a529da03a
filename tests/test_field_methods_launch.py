"""End to end on a real Ray (the session's, tests/conftest.py): the field grid (15 trials: every method of the field, NGDiff and GDiff
with SimNPO and NPO, a KL retain side) through the launcher, its curves and its report.

Slow (a few minutes on 2 CPUs; the smoke grid's target is reused from ``demo_storage`` when another slow test
built it): ``pytest -m slow tests/test_field_methods_launch.py``.
"""
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["ce_u", "gdiff+npo", "gdiff+simnpo", "idkdpo", "idknll", "ngdiff+npo", "ngdiff+npo+retain_kl",
          "ngdiff+simnpo", "npo", "pdu", "rmu", "satimp", "simnpo", "undial", "wga"]


def test_field_grid_runs_through_the_launcher(demo_storage, ray_address):
    result = subprocess.run([sys.executable, "-m", "sweeper.launch", "--grid", "field", "--storage", str(demo_storage),
                             "--address", ray_address],
                            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = demo_storage / "field" / "trials"
    rows = [pq.read_table(trials / t / "summary.parquet").to_pylist()[0] for t in os.listdir(trials)]
    done = [r for r in rows if r["method"] != "no_unlearn"]
    assert sorted(r["method"] for r in done) == LABELS
    assert all(r["status"] == "ok" for r in rows), [(r["method"], r["status"]) for r in rows]
    for r in done:
        steps = pq.read_table(trials / r["trial_id"] / "steps.parquet").to_pandas()
        assert steps["step"].tolist() == list(range(1, 21)), r["method"]
        assert steps["forget_objective"].notna().all() and 0 <= r["rouge_forget"] <= 1
    report = demo_storage / "field" / "report"
    assert (report / "pareto.png").stat().st_size > 10_000
    assert "undial" in (report / "summary.md").read_text()
