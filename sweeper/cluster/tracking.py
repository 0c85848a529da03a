"""Experiment trackers (``--track mlflow|tensorboard|wandb``) through Ray Tune's own logger callbacks.

The launcher checks the names before Ray starts, hands the callbacks to ``tune.RunConfig`` and attaches
the run's report after the sweep::

    problems = tracker_problems(names, run_dir=storage.url(run))          # one sentence each; no imports
    callbacks = tracker_callbacks(names, storage.url(run), run, specs={s.trial_id: s.to_dict() for s in specs})
    tune.RunConfig(..., callbacks=[..., *callbacks])
    ...
    attach_report(names, storage.url(run), run, report_dir)

Tune's config of a trial holds only its id (``trial``), ``storage``, ``runner`` and ``retry_failed``: the
specs travel with ``tune.with_parameters``. So each callback here is Ray's own with one addition: it
looks the trial's spec up by ``trial.config["trial"]`` in ``specs`` (or takes ``trial.config["spec"]``)
and logs :func:`tracked_config` of it next to Tune's config (MLflow: params at ``log_trial_start``;
TensorBoard: hparams at trial end; W&B: the run's config). Runs are named by the sweeper's trial id.

Metrics: every numeric value a trial reports to Tune (``step``, ``loss_retain``, ``loss_forget``, ``lr``
while it runs; ``final_loss_retain``, ``final_loss_forget``, ``rouge_forget``, ``rouge_retain``, ``steps``
at the end; Tune's own counters) is logged. MLflow and TensorBoard put them at the unlearning step
(``step``, or ``steps`` for the final report) instead of Tune's report count; W&B keeps Tune's count
(its steps must only increase) and has ``step`` as a metric to plot against.

MLflow defaults to a local file store beside the run's results, ``file://<run_dir>/mlflow``; set
``MLFLOW_TRACKING_URI`` for a server (needed when the run's storage is not a local folder). MLflow 3
refuses a file store unless ``MLFLOW_ALLOW_FILE_STORE=true``, which is set for this process when the
tracking URI is one. Look at it with ``mlflow ui --backend-store-uri file://<run_dir>/mlflow`` (full
``mlflow``; this project needs only ``mlflow-skinny``). TensorBoard event files are written in each Tune
trial's folder (``<run_dir>/tune/<trial>/``): ``tensorboard --logdir <run_dir>/tune``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

TRACKERS = ("mlflow", "tensorboard", "wandb")

#: tracker -> (module it needs, how to install it)
PACKAGES = {
    "mlflow": ("mlflow", "pip install mlflow-skinny (or this project's extra: pip install -e .[track])"),
    "tensorboard": ("tensorboardX", "pip install tensorboardX (ray[tune] installs it)"),
    "wandb": ("wandb", "pip install wandb"),
}

#: Keys of :func:`tracked_config`, in order.
TRACKED_KEYS = ("model", "dataset", "method", "c", "forget_loss", "lr_mode", "lr", "seed", "optimizer", "steps",
                "workers")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _local_path(run_dir: str) -> str | None:
    """The local folder of a run directory (a path or a ``file://`` URI), or None for remote storage."""
    if "://" not in run_dir:
        return os.path.abspath(run_dir)
    parsed = urlparse(run_dir)
    return parsed.path if parsed.scheme == "file" else None


def mlflow_tracking_uri(run_dir: str) -> str | None:
    """``MLFLOW_TRACKING_URI`` when set, else a file store ``<run_dir>/mlflow`` for a local run directory,
    else None (remote storage and no server: nowhere to track)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = _local_path(run_dir)
    return (Path(local) / "mlflow").as_uri() if local is not None else None


def _allow_file_store(uri: str) -> None:
    # MLflow 3 keeps its file store "in maintenance mode" and raises unless this is set; 2.x ignores it.
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def tracker_problems(names: list[str], run_dir: str | None = None) -> list[str]:
    """One sentence per problem with ``--track`` names, found without importing any tracker: an unknown
    name, a tracker whose package is not installed, and (given ``run_dir``) MLflow with remote storage
    but no ``MLFLOW_TRACKING_URI``."""
    problems = []
    for name in dict.fromkeys(names):
        if name not in TRACKERS:
            problems.append(f"--track {name!r} is not a tracker; choose from {', '.join(TRACKERS)}")
            continue
        module, install = PACKAGES[name]
        if not _installed(module):
            problems.append(f"--track {name} needs the {module} package; {install}")
        if name == "mlflow" and run_dir is not None and mlflow_tracking_uri(run_dir) is None:
            problems.append(f"--track mlflow with storage {run_dir} needs MLFLOW_TRACKING_URI (an MLflow tracking "
                            f"server); the default file store works only for local storage")
    return problems


def tracked_config(spec_dict: dict) -> dict:
    """The flat configuration a tracker logs for one trial, from a ``TrialSpec`` dict: model, dataset,
    method (the label: gdiff, ngdiff, npo, ...), c (None for a method without one), forget_loss, lr_mode,
    lr, seed, optimizer, steps, workers."""
    s = spec_dict
    return {"model": s["model"]["name"], "dataset": s["data"]["name"], "method": s["label"],
            "c": (s.get("method_params") or {}).get("c"), "forget_loss": s["forget_loss"], "lr_mode": s["lr_mode"],
            "lr": s["lr"], "seed": s["seed"], "optimizer": s["optimizer"], "steps": s["steps"],
            "workers": s["model"].get("workers", 1)}


def trial_params(config: dict, specs: dict | None) -> dict:
    """:func:`tracked_config` of the trial a Tune config names (``specs[config["trial"]]``, or
    ``config["spec"]``), without None values; {} when neither is there."""
    spec = (specs or {}).get(config.get("trial")) if isinstance(config.get("trial"), str) else None
    if spec is None and isinstance(config.get("spec"), dict):
        spec = config["spec"]
    return {k: v for k, v in tracked_config(spec).items() if v is not None} if spec else {}


def tracked_step(result: dict) -> int:
    """The x-axis of a reported result: its unlearning ``step`` (progress), else ``steps`` (the final
    report), else Tune's ``training_iteration``."""
    for key in ("step", "steps"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return result["training_iteration"]


def _run_name(trial) -> str:
    name = trial.config.get("trial")
    return name if isinstance(name, str) else str(trial)


# The callback classes subclass Ray's, so they are defined on first use (PEP 562 ``__getattr__``): importing
# this module stays cheap, and pickling by reference (Tune pickles its RunConfig) finds them by name.

def _define_mlflow():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrackedMLflowLoggerCallback(MLflowLoggerCallback):
        """Ray's MLflow callback; runs named by trial id, the trial's :func:`tracked_config` logged as
        params beside Tune's config, metrics at the unlearning step (:func:`tracked_step`)."""

        def __init__(self, *args, specs: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.specs = dict(specs or {})

        def log_trial_start(self, trial):
            if trial not in self._trial_runs:  # Ray's would name the run after Tune's trial name
                run = self.mlflow_util.start_run(tags={**self.tags, "trial_name": str(trial)},
                                                 run_name=_run_name(trial))
                self._trial_runs[trial] = run.info.run_id
            super().log_trial_start(trial)  # Tune's config as params (trial, storage, runner, ...)
            if not self.log_params_on_trial_end:
                self._log_tracked(trial)

        def log_trial_result(self, iteration, trial, result):
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result,
                                         step=tracked_step(result))

        def log_trial_end(self, trial, failed=False):
            if self.log_params_on_trial_end:
                self._log_tracked(trial)
            super().log_trial_end(trial, failed)

        def _log_tracked(self, trial):
            if params := trial_params(trial.config, self.specs):
                self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=params)

    return TrackedMLflowLoggerCallback


def _define_tbx():
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.result import TIMESTEPS_TOTAL
    from ray.tune.utils import flatten_dict

    class TrackedTBXLoggerCallback(TBXLoggerCallback):
        """Ray's TensorBoardX callback (event files in each Tune trial's folder); scalars at the unlearning
        step (Ray's callback takes ``timesteps_total`` as the step, so that key is set to it and shows as a
        scalar too), the trial's :func:`tracked_config` among the hparams written at trial end. It takes
        the place of the TensorBoard callback Tune adds by itself."""

        def __init__(self, specs: dict | None = None):
            super().__init__()
            self.specs = dict(specs or {})

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {**result, TIMESTEPS_TOTAL: tracked_step(result)})

        def _try_log_hparams(self, trial, result):
            from tensorboardX.summary import hparams
            params = {**flatten_dict(trial.evaluated_params), **trial_params(trial.config, self.specs)}
            params = {k: v.item() if hasattr(v, "item") else v for k, v in params.items()}
            params = {k: v for k, v in params.items() if isinstance(v, (str, bool, int, float))}
            try:
                for summary in hparams(hparam_dict=params, metric_dict=result):
                    self._trial_writer[trial].file_writer.add_summary(summary)
            except Exception:  # noqa: BLE001 -- as Ray's own: hparams are a nicety, the scalars are written
                logger.exception("TensorboardX failed to log the hparams of trial %s", trial)

    return TrackedTBXLoggerCallback


def _define_wandb():
    from ray.air.integrations.wandb import WandbLoggerCallback

    class TrackedWandbLoggerCallback(WandbLoggerCallback):
        """Ray's W&B callback; runs named by trial id, the trial's :func:`tracked_config` in the run's config."""

        def __init__(self, *args, specs: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.specs = dict(specs or {})

        def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
            wandb_init_kwargs["config"] = {**wandb_init_kwargs.get("config", {}),
                                           **trial_params(trial.config, self.specs)}
            wandb_init_kwargs["name"] = _run_name(trial)
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    return TrackedWandbLoggerCallback


_CLASSES = {"TrackedMLflowLoggerCallback": _define_mlflow, "TrackedTBXLoggerCallback": _define_tbx,
            "TrackedWandbLoggerCallback": _define_wandb}


def __getattr__(name: str):
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = _CLASSES[name]()
    cls.__module__, cls.__qualname__ = __name__, name
    globals()[name] = cls
    return cls


def tracker_callbacks(names: list[str], run_dir: str, experiment: str, specs: dict | None = None) -> list:
    """Tune callbacks for the ``--track`` names (each once, in order).

    ``run_dir`` is the run's storage URL (``storage.url(run)``), ``experiment`` the MLflow experiment and
    W&B project (the run's name), ``specs`` maps trial ids to ``TrialSpec`` dicts (what the launcher binds
    with ``tune.with_parameters``) so that each trial's configuration is logged. Call
    :func:`tracker_problems` first: an unknown name or a missing package raises here.
    """
    import sys
    module = sys.modules[__name__]
    if problems := tracker_problems(names, run_dir):
        raise ValueError("\n".join(problems))
    callbacks = []
    for name in dict.fromkeys(names):
        if name == "mlflow":
            uri = mlflow_tracking_uri(run_dir)
            _allow_file_store(uri)
            callbacks.append(module.TrackedMLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment,
                                                                 save_artifact=False, specs=specs))
        elif name == "tensorboard":
            callbacks.append(module.TrackedTBXLoggerCallback(specs=specs))
        elif name == "wandb":
            callbacks.append(module.TrackedWandbLoggerCallback(project=experiment, specs=specs))
    return callbacks


def attach_report(names: list[str], run_dir: str, experiment: str, report_dir: str) -> dict[str, str]:
    """Attach the run's report folder (index.html, PNGs) where a tracker keeps files; returns
    {tracker: where it went}.

    MLflow: every file of ``report_dir`` becomes an artifact of a run named ``report`` in the experiment
    (the same tracking URI as the trials'; the latest such run is reused, so a resumed sweep overwrites
    its report). TensorBoard keeps no files: skipped. W&B: skipped too; its trial runs have finished by
    now and logging an artifact needs an active run (``wandb artifact put <report_dir>`` does it by hand).
    """
    attached = {}
    if "mlflow" in names:
        from mlflow.tracking import MlflowClient

        uri = mlflow_tracking_uri(run_dir)
        if uri is None:
            raise ValueError(tracker_problems(["mlflow"], run_dir)[-1])
        _allow_file_store(uri)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        runs = client.search_runs([exp_id], filter_string="tags.`mlflow.runName` = 'report'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        run_id = runs[0].info.run_id if runs else client.create_run(
            exp_id, run_name="report", tags={"sweeper.kind": "report"}).info.run_id
        client.log_artifacts(run_id, report_dir)
        client.set_terminated(run_id)
        attached["mlflow"] = client.get_run(run_id).info.artifact_uri
    return attached
