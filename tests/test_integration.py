"""End to end on a real Ray (the session's, tests/conftest.py): the smoke grid (8 trials + the No-unlearn
row), the report, the same trials as Ray Train jobs (read from the session's sweep on S3,
tests/s3_smoke_sweep.py), the terminal lines and MLflow tracking. (A relaunch that reuses the cached
target and re-runs no finished trial, after a kill, is in tests/test_object_storage_sweep.py.)

Slow (a few minutes on 2 CPUs): ``pytest -m slow``; skipped by ``-m "not slow"``.
"""
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeper.launch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_run(demo_storage, ray_address):
    storage = demo_storage
    result = launch("--grid", "smoke", "--storage", str(storage), "--track", "mlflow", "--address", ray_address)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return storage, result


def summaries(run_dir):
    trials = os.path.join(run_dir, "trials")
    return {t: pq.read_table(os.path.join(trials, t, "summary.parquet")).to_pylist()[0] for t in os.listdir(trials)}


def test_smoke_grid_yields_eight_ok_trials_and_a_baseline(smoke_run):
    storage, result = smoke_run
    rows = summaries(storage / "smoke")
    methods = sorted(r["method"] for r in rows.values())
    assert methods == ["gdiff"] * 6 + ["ngdiff"] * 2 + ["no_unlearn"]
    assert all(r["status"] == "ok" for r in rows.values())
    trials = [r for r in rows.values() if r["method"] != "no_unlearn"]
    assert sorted({r["c"] for r in trials if r["method"] == "gdiff"}) == [0.1, 0.5, 0.9]
    assert sorted(r["lr_mode"] for r in trials) == ["autolr"] * 4 + ["static"] * 4
    for r in trials:
        assert r["steps"] == 30 and 0 <= r["rouge_forget"] <= 1 and 0 <= r["rouge_retain"] <= 1
        steps = pq.read_table(storage / "smoke" / "trials" / r["trial_id"] / "steps.parquet").to_pandas()
        assert steps["step"].tolist() == list(range(1, 31))
        assert (storage / "smoke" / "trials" / r["trial_id"] / "_SUCCESS").exists()
        if r["lr_mode"] == "autolr":
            assert steps["autolr_status"].notna().sum() == 3  # probes at steps 10, 20, 30
    # Unlearning did something: every trial's forget loss rose above the target's.
    base = next(r for r in rows.values() if r["method"] == "no_unlearn")
    assert all(r["final_loss_forget"] > base["final_loss_forget"] for r in trials)


def test_report_writes_front_and_summary(smoke_run):
    storage, result = smoke_run
    report = storage / "smoke" / "report"
    assert (report / "pareto.png").stat().st_size > 10_000
    assert "ngdiff" in (report / "summary.md").read_text()
    assert str(report) in result.stdout  # the launcher says where the report is


def test_train_runner_gives_the_auto_runners_results(smoke_run, s3_smoke_sweep):
    """The default runner (auto: these one-worker trials run inline, inside reused Tune trial processes)
    and --runner train (every trial a Ray Train job) compute the same trials: every step's losses and
    learning rate and every final metric agree.

    The Ray Train side is the session's smoke sweep on S3 (tests/s3_smoke_sweep.py: every trial a Ray
    Train job, ~20 s each on 2 cores, killed and resumed half-way): its NGDiff trial with AutoLR (the
    normalised rule and the learning-rate search) has the smoke grid's settings; its id differs only
    because that grid loads the test plugin (its GDiff trial is the plugin's ``gdiff_hold``)."""
    from s3_smoke_sweep import RUN
    storage, _ = smoke_run
    store = s3_smoke_sweep.store
    auto = {(r["method"], r["lr_mode"]): r for r in summaries(storage / "smoke").values()}
    train = [store.read_table(f"{RUN}/trials/{t}/summary.parquet").to_pylist()[0] for t in s3_smoke_sweep.finished()]
    train = {(r["method"], r["lr_mode"]): r for r in train if r["method"] in ("ngdiff", "no_unlearn")}
    assert sorted(train) == [("ngdiff", "autolr"), ("no_unlearn", None)] and set(train) <= set(auto) and all(r["status"] == "ok" for r in train.values())
    for key, row in train.items():
        ours = auto[key]
        assert ours["target_hash"] == row["target_hash"]  # the same No-unlearn target
        if key[0] == "no_unlearn":
            continue
        for col in ("final_loss_retain", "final_loss_forget", "rouge_forget", "rouge_retain", "final_lr"):
            assert ours[col] == pytest.approx(row[col], rel=1e-5, abs=1e-7), (key, col)
        a = pq.read_table(storage / "smoke" / "trials" / ours["trial_id"] / "steps.parquet").to_pandas()
        b = store.read_table(f"{RUN}/trials/{row['trial_id']}/steps.parquet").to_pandas()
        assert a["step"].tolist() == b["step"].tolist() == list(range(1, 31))
        for col in ("loss_retain", "loss_forget", "lr"):
            assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-5), (key, col)
        assert not (storage / "smoke" / "train" / ours["trial_id"] / "inline_state.pt").exists()  # removed when done


def test_one_line_per_trial_and_final_counts(smoke_run):
    _, result = smoke_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("done ")]
    assert len(lines) == 8 and lines[-1].startswith("done 8/8 ") and " ok  forget " in lines[-1]
    assert "8 ok, 0 failed, 0 diverged, 0 skipped trial(s), 1 No-unlearn row(s)" in result.stdout
    assert "Trial status" not in result.stdout   # Tune's table only with --verbose


def test_mlflow_lists_one_run_per_trial_with_params_and_metrics(smoke_run, monkeypatch):
    """--track mlflow: read back through MLflow's own client from the local store under the run."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # MLflow 3 keeps file stores behind this switch

    from sweeper.cluster.tracking import mlflow_tracking_uri
    storage, _ = smoke_run
    client = MlflowClient(mlflow_tracking_uri(str(storage / "smoke")))
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    trials = {r.info.run_name: r for r in runs if r.info.run_name != "report"}
    assert sorted(trials) == sorted(t for t, r in summaries(storage / "smoke").items() if r["method"] != "no_unlearn")
    for run in trials.values():
        for key in ("model", "dataset", "method", "lr_mode", "lr", "seed"):
            assert key in run.data.params, (run.info.run_name, key)
        assert "final_loss_forget" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "loss_forget")) >= 3   # one per evaluation step
    report = next(r for r in runs if r.info.run_name == "report")
    assert "index.html" in {a.path for a in client.list_artifacts(report.info.run_id)}
