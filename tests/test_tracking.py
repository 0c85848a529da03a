"""--track: name and package checks, the tracked configuration, and a real Tune sweep logged to MLflow's
file store and TensorBoard event files, read back through MlflowClient and the event files themselves."""
from __future__ import annotations

import glob
import os
import struct

import pytest

from sweeper.cluster import tracking
from sweeper.grid.load import expand_grid
from sweeper.cluster.tracking import TRACKERS, attach_report, tracked_config, tracker_callbacks, tracker_problems


@pytest.fixture(scope="module")
def smoke_specs():
    specs = expand_grid("smoke")
    with_c = next(s for s in specs if s.label == "gdiff" and s.lr_mode == "static")
    without_c = next(s for s in specs if s.label == "ngdiff" and s.lr_mode == "static")
    return {s.trial_id: s.to_dict() for s in (with_c, without_c)}


def test_unknown_tracker_names_the_allowed_ones():
    problems = tracker_problems(["mlflow", "neptune", "tensorboard"])
    assert len(problems) == 1
    assert "'neptune'" in problems[0] and all(t in problems[0] for t in TRACKERS)


def test_missing_package_is_one_sentence_with_the_install_command(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    problems = tracker_problems(["wandb", "tensorboard", "mlflow", "wandb"])
    assert problems == ["--track wandb needs the wandb package; pip install wandb",
                        "--track mlflow needs the mlflow package; pip install mlflow-skinny "
                        "(or this project's extra: pip install -e .[track])"]


def test_mlflow_store_beside_local_storage_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.mlflow_tracking_uri(str(tmp_path / "smoke")) == f"file://{tmp_path}/smoke/mlflow"
    assert tracking.mlflow_tracking_uri(f"file://{tmp_path}/smoke") == f"file://{tmp_path}/smoke/mlflow"
    assert tracking.mlflow_tracking_uri("s3://bucket/runs/smoke") is None
    assert "MLFLOW_TRACKING_URI" in tracker_problems(["mlflow"], run_dir="s3://bucket/runs/smoke")[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.mlflow_tracking_uri(str(tmp_path)) == "http://mlflow.example:5000"
    assert tracker_problems(["mlflow"], run_dir="s3://bucket/runs/smoke") == []


def test_tracked_config_of_a_smoke_spec(smoke_specs):
    with_c, without_c = smoke_specs.values()
    cfg = tracked_config(with_c)
    assert list(cfg) == list(tracking.TRACKED_KEYS)
    assert cfg == {"model": "tiny-gpt2", "dataset": with_c["data"]["name"], "method": "gdiff",
                   "c": with_c["method_params"]["c"], "forget_loss": with_c["forget_loss"], "lr_mode": "static",
                   "lr": with_c["lr"], "seed": with_c["seed"], "optimizer": with_c["optimizer"],
                   "steps": with_c["steps"], "workers": with_c["model"]["workers"]}
    assert tracked_config(without_c)["c"] is None and tracked_config(without_c)["method"] == "ngdiff"
    # What a callback logs for a Tune config naming the trial: the same, None values left out.
    trial_id = next(iter(smoke_specs))
    assert tracking.trial_params({"trial": trial_id, "storage": "/x"}, smoke_specs) == cfg
    assert "c" not in tracking.trial_params({"spec": without_c}, None)
    assert tracking.trial_params({"trial": "unknown"}, smoke_specs) == {}


def test_callbacks_unpickle_by_name(tmp_path, monkeypatch):
    """Tune pickles its RunConfig (callbacks included): the lazily defined classes are found by name, also
    in a process that has not defined them yet (as after a restart)."""
    import pickle

    import ray.cloudpickle
    blob = ray.cloudpickle.dumps(tracker_callbacks(["tensorboard"], str(tmp_path), "x", specs={"a": {}})[0])
    monkeypatch.delitem(vars(tracking), "TrackedTBXLoggerCallback")  # as in a fresh process
    cb = pickle.loads(blob)  # by reference: the module defines the class again; by value would make a copy
    assert type(cb) is tracking.TrackedTBXLoggerCallback and cb.specs == {"a": {}}


def test_wandb_runs_get_the_tracked_config_and_the_trial_id_as_name(monkeypatch, smoke_specs):
    """wandb is not installed here: the hook that adds the config is checked on Ray's own method's input."""
    from types import SimpleNamespace

    from ray.air.integrations.wandb import WandbLoggerCallback
    seen = {}
    monkeypatch.setattr(WandbLoggerCallback, "_start_logging_actor",
                        lambda self, trial, exclude, **kwargs: seen.update(kwargs))
    cls = tracking.TrackedWandbLoggerCallback
    cb = cls.__new__(cls)  # wandb's absence makes __init__ raise; the hook needs only the specs
    cb.specs = smoke_specs
    trial_id = next(iter(smoke_specs))
    cb._start_logging_actor(SimpleNamespace(config={"trial": trial_id, "storage": "/x"}), [],
                            name="run_trial_00000", config={"trial": trial_id, "storage": "/x"})
    assert seen["name"] == trial_id
    assert seen["config"] == {"trial": trial_id, "storage": "/x", **tracked_config(smoke_specs[trial_id])}


def _tfevents(path: str):
    """The Event protos of a TensorBoard event file (TFRecord: length, CRC, payload, CRC)."""
    from tensorboardX.proto.event_pb2 import Event
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        yield Event.FromString(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4


@pytest.mark.slow  # runs on the session's Ray (tests/conftest.py), as the marker means
def test_a_real_sweep_is_tracked_by_mlflow_and_tensorboard(tmp_path, monkeypatch, smoke_specs, ray_address):
    import mlflow
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    run_dir, experiment = str(tmp_path / "smoke"), "smoke"

    def trainable(config, specs=None):  # what sweeper.cluster.trial.run_trial reports, without the unlearning
        c = specs[config["trial"]]["method_params"].get("c", 1.0)
        for step in (10, 20, 30):
            tune.report({"step": step, "loss_retain": c * step, "loss_forget": -step, "lr": 1e-3})
        tune.report({"status": "ok", "final_loss_retain": 0.5, "final_loss_forget": 7.0, "rouge_forget": 0.1,
                     "rouge_retain": 0.9, "steps": 30})

    ray.init(address=ray_address, log_to_driver=False)
    try:
        results = tune.Tuner(
            tune.with_parameters(trainable, specs=smoke_specs),
            param_space={"trial": tune.grid_search(list(smoke_specs)), "storage": str(tmp_path), "runner": "inline"},
            run_config=tune.RunConfig(name="tune", storage_path=run_dir, verbose=0,
                                      callbacks=tracker_callbacks(["mlflow", "tensorboard"], run_dir, experiment,
                                                                  specs=smoke_specs))).fit()
        assert not results.errors
    finally:
        ray.shutdown()
        mlflow.set_tracking_uri(None)  # Ray's callback set the process-wide URI

    uri = f"file://{run_dir}/mlflow"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(smoke_specs)  # one run per trial, named by trial id
    for trial_id, run in runs.items():
        params = run.data.params
        expected = {k: str(v) for k, v in tracked_config(smoke_specs[trial_id]).items() if v is not None}
        assert {k: params.get(k) for k in expected} == expected
        assert params["trial"] == trial_id and ("c" in params) == ("c" in smoke_specs[trial_id]["method_params"])
        history = client.get_metric_history(run.info.run_id, "loss_forget")
        assert [(m.step, m.value) for m in history] == [(10, -10.0), (20, -20.0), (30, -30.0)]
        assert run.data.metrics["rouge_retain"] == 0.9 and run.data.metrics["final_loss_forget"] == 7.0
        assert [m.step for m in client.get_metric_history(run.info.run_id, "rouge_retain")] == [30]
        assert run.info.status == "FINISHED"

    event_files = glob.glob(os.path.join(run_dir, "tune", "*", "events.out.tfevents.*"))
    assert len(event_files) == 2
    for path in event_files:
        events = list(_tfevents(path))
        steps = [e.step for e in events if any(v.tag == "ray/tune/loss_forget" for v in e.summary.value)]
        assert steps == [10, 20, 30]
        hparams = b"".join(v.metadata.plugin_data.content for e in events for v in e.summary.value
                           if v.metadata.plugin_data.plugin_name == "hparams")
        assert b"lr_mode" in hparams and b"tiny-gpt2" in hparams

    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html>report</html>")
    (report / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for _ in range(2):  # a resumed sweep attaches its report to the same run
        where = attach_report(["mlflow", "tensorboard"], run_dir, experiment, str(report))
    assert set(where) == {"mlflow"}
    reports = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "report"]
    assert len(reports) == 1
    assert {a.path for a in client.list_artifacts(reports[0].info.run_id)} == {"index.html", "curves.png"}
    assert attach_report(["tensorboard", "wandb"], run_dir, experiment, str(report)) == {}
