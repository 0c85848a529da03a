"""A models x methods grid over the tiny twins of all five paper architectures, on a real local Ray.

Slow (minutes): ``pytest -m slow``.
"""
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_five_twins_by_two_methods_on_ray(tmp_path, ray_address):
    result = subprocess.run([sys.executable, "-m", "sweeper.launch", "--grid", "twins", "--storage", str(tmp_path),
                             "--no-report", "--address", ray_address], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = tmp_path / "twins" / "trials"
    rows = [pq.read_table(trials / t / "summary.parquet").to_pylist()[0] for t in os.listdir(trials)]
    cells = sorted((r["model"], r["method"]) for r in rows)
    models = ["tiny-falcon", "tiny-gpt2", "tiny-llama", "tiny-mistral", "tiny-phi"]
    assert cells == sorted((m, k) for m in models for k in ("gdiff", "ngdiff", "no_unlearn"))
    assert all(r["status"] == "ok" for r in rows)
    base = {r["model"]: r for r in rows if r["method"] == "no_unlearn"}
    for r in rows:
        if r["method"] != "no_unlearn":  # every architecture unlearns through the same code
            assert r["final_loss_forget"] > base[r["model"]]["final_loss_forget"]
