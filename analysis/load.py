"""Read what a sweep wrote: the one module of the analysis that reads files.

Layout (see ``sweeper/store/results.py``)::

    <run>/trials/<trial_id>/summary.parquet   one row: config + final metrics
    <run>/trials/<trial_id>/steps.parquet     curves, one row per step
    <run>/trials/<trial_id>/_SUCCESS          written last; without it the trial is unfinished

Usage::

    from analysis.load import load_run
    data = load_run(["runs/a", "s3://bucket/runs/b"])   # local paths or pyarrow filesystem URIs
    data.summaries, data.steps, data.unfinished, data.problems()
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# sweeper.store.results only imports pyarrow; the analysis must never pull in torch or ray.
from sweeper.store.results import STEP_SCHEMA, SUMMARY_SCHEMA

BASELINE = "no_unlearn"
#: The retrained (retain-only) reference's row, written by stage 1 when a run has one: TOFU's "Retain".
REFERENCE = "retrained_reference"
#: A front-search trial stopped early because all its evaluated points were dominated: a normal outcome.
STOPPED = "stopped_dominated"
PAPER_RESULTS = Path(__file__).parent / "data" / "paper_results.csv"


@dataclass
class RunData:
    """Everything one or several run directories hold.

    ``summaries``: one row per finished trial (No-unlearn targets included), every column of
    ``SUMMARY_SCHEMA`` plus ``trial_dir``. ``steps``: the curves of finished trials plus ``trial_dir``.
    ``unfinished``: trial dirs without ``_SUCCESS`` (or without a summary), kept so a report lists them.
    """

    summaries: pd.DataFrame
    steps: pd.DataFrame
    unfinished: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def baselines(self) -> pd.DataFrame:
        """The No-unlearn target rows."""
        return self.summaries[self.summaries["method"] == BASELINE]

    @property
    def trials(self) -> pd.DataFrame:
        """The unlearning trials (everything but the No-unlearn and retrained-reference rows)."""
        return self.summaries[~self.summaries["method"].isin([BASELINE, REFERENCE])]

    def curves(self) -> pd.DataFrame:
        """Steps joined with each trial's config (model, method, c, lr_mode, seed, ...), for plotting.

        The trial's initial learning rate is ``initial_lr``; ``lr`` stays the per-step rate.
        """
        keys = ["trial_dir", "model", "dataset", "method", "c", "forget_loss", "lr_mode", "lr", "seed"]
        config = self.summaries[[k for k in keys if k in self.summaries]].rename(columns={"lr": "initial_lr"})
        return self.steps.merge(config, on="trial_dir", how="inner")

    def status_counts(self) -> dict[str, int]:
        """Trials per status (ok / diverged / failed / stopped_dominated), plus ``unfinished``."""
        counts = self.summaries["status"].fillna("unknown").value_counts().to_dict()
        counts = {str(k): int(v) for k, v in sorted(counts.items())}
        counts["unfinished"] = len(self.unfinished)
        return counts

    def problems(self) -> pd.DataFrame:
        """One row per failed, diverged or unfinished trial: trial, status and what went wrong.

        Trials stopped early as dominated (``stopped_dominated``) are not problems: see ``stopped()``.
        """
        bad = self.summaries[~self.summaries["status"].isin(["ok", STOPPED])]
        rows = []
        for _, r in bad.iterrows():
            if r["status"] == "diverged" and pd.notna(r.get("diverged_step")):
                detail = f"diverged at step {int(r['diverged_step'])}"
            else:
                detail = r.get("error") if pd.notna(r.get("error")) else ""
            rows.append({"trial": r["trial_dir"], "status": r["status"], "detail": detail})
        rows += [{"trial": d, "status": "unfinished", "detail": "no _SUCCESS marker"} for d in self.unfinished]
        return pd.DataFrame(rows, columns=["trial", "status", "detail"])

    def stopped(self) -> pd.DataFrame:
        """The trials a front search stopped early as dominated: trial, steps run and ``stop_reason``."""
        rows = self.summaries[self.summaries["status"] == STOPPED]
        return pd.DataFrame({"trial": rows["trial_dir"], "steps": rows["steps"],
                             "stop_reason": rows.get("stop_reason")}).reset_index(drop=True)

    def total_wall_s(self) -> float:
        """Seconds all finished trials (and targets) spent in their loops."""
        return float(self.summaries["wall_s"].sum(skipna=True))

    def device_seconds(self) -> dict[str, float]:
        """Worker-seconds held by the trials' loops: wall seconds x workers, split into GPU-seconds
        (workers with GPUs, from each trial's config) and CPU-worker-seconds."""
        out = {"gpu": 0.0, "cpu": 0.0}
        for wall, workers, params in zip(self.summaries["wall_s"], self.summaries["workers"],
                                         self.summaries["params_json"]):
            if pd.isna(wall) or pd.isna(workers):
                continue
            gpus = gpus_per_worker(params)
            out["gpu" if gpus else "cpu"] += float(wall) * float(workers) * (gpus if gpus else 1.0)
        return out


def gpus_per_worker(params_json) -> float:
    """GPUs per worker of a trial, from its ``params_json`` (``model.gpus_per_worker``); 0 when absent.

    >>> gpus_per_worker('{"model": {"gpus_per_worker": 4}}'), gpus_per_worker(None)
    (4.0, 0.0)
    """
    try:
        model = json.loads(params_json).get("model", {}) if isinstance(params_json, str) else {}
        return float(model.get("gpus_per_worker") or 0)
    except (ValueError, TypeError, AttributeError):  # a malformed config must not break a report
        return 0.0


def devices(summaries: pd.DataFrame) -> pd.Series:
    """Devices each trial held: workers x GPUs per worker, counting a CPU worker as one device.

    Device-seconds up to a step are then ``wall_s x devices`` (``RunData.device_seconds`` splits the
    same product into GPU- and CPU-worker-seconds). A missing worker count is taken as one worker.
    """
    workers = pd.to_numeric(summaries.get("workers", pd.Series(1, index=summaries.index)), errors="coerce")
    params = summaries.get("params_json", pd.Series(None, index=summaries.index, dtype=object))
    gpus = params.map(gpus_per_worker).astype(float)
    return workers.fillna(1).astype(float) * gpus.where(gpus > 0, 1.0)


def load_run(paths: str | os.PathLike | list) -> RunData:
    """Load one or several run directories (local paths or URIs such as ``s3://bucket/runs/x``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("load_run needs at least one run directory.")
    summaries, steps, unfinished = [], [], []
    for path in map(str, paths):
        fs, root = _filesystem(path)
        trials = _list_trials(fs, root, path)
        for trial_dir, names in sorted(trials.items()):
            shown = _shown(path, root, trial_dir)
            if "_SUCCESS" not in names or "summary.parquet" not in names:
                unfinished.append(shown)
                continue
            summaries.append((fs, f"{trial_dir}/summary.parquet", shown))
            if "steps.parquet" in names:
                steps.append((fs, f"{trial_dir}/steps.parquet", shown))
    return RunData(
        summaries=_read_all(summaries, SUMMARY_SCHEMA),
        steps=_read_all(steps, STEP_SCHEMA),
        unfinished=unfinished,
        sources=[str(p) for p in paths],
    )


def paper_reference(table: int | str | None = None) -> pd.DataFrame:
    """The paper's published numbers (Tables 1, 2, 3, 4, 6) in long format, optionally one table."""
    df = pd.read_csv(PAPER_RESULTS, dtype={"table": str})
    return df if table is None else df[df["table"] == str(table)].reset_index(drop=True)


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    # Plain paths stay local (from_uri rejects relative ones); anything with a scheme goes to pyarrow.
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    try:
        fs, root = pafs.FileSystem.from_uri(path)
    except Exception as e:  # pyarrow raises several types for bad URIs
        raise ValueError(f"cannot open run directory {path}: {e}") from e
    return fs, root.rstrip("/")


def _list_trials(fs: pafs.FileSystem, root: str, shown: str) -> dict[str, set[str]]:
    """Map each trial dir under ``root/trials`` to the names of the files it holds (one listing call)."""
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise ValueError(f"run directory {shown} does not exist.")
    base = f"{root}/trials"
    # One recursive listing rather than one call per trial: cheap on object stores too.
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    trials: dict[str, set[str]] = {}
    for info in infos:
        parts = info.path[len(base) + 1:].split("/")
        if len(parts) == 1 and info.type == pafs.FileType.Directory:
            trials.setdefault(info.path, set())
        elif len(parts) == 2:
            trials.setdefault(f"{base}/{parts[0]}", set()).add(parts[1])
    if not trials:
        raise ValueError(f"run directory {shown} has no trials (expected {shown}/trials/<trial_id>/summary.parquet).")
    return trials


def _shown(path: str, root: str, trial_dir: str) -> str:
    """The trial dir as the user would write it: under the path or URI they gave (without its query:
    ``s3://b/runs/x?endpoint_override=...`` shows ``s3://b/runs/x/trials/<id>``)."""
    return path.split("?", 1)[0].rstrip("/") + trial_dir[len(root):]


def _read_one(item: tuple[pafs.FileSystem, str, str]) -> pa.Table:
    fs, file, shown = item
    try:
        table = pq.read_table(file, filesystem=fs)
    except Exception as e:
        raise ValueError(f"cannot read {shown}/{file.rsplit('/', 1)[-1]}: {e}") from e
    return table.append_column("trial_dir", pa.array([shown] * table.num_rows, pa.string()))


def _read_all(items: list, schema: pa.Schema) -> pd.DataFrame:
    """Concatenate the files into one DataFrame holding at least every column of ``schema``."""
    if not items:
        return schema.append(pa.field("trial_dir", pa.string())).empty_table().to_pandas()
    # Threads because remote filesystems spend their time waiting, not computing.
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(_read_one, items))
    # "permissive" lets files written by older or newer code (extra or missing columns) sit together.
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    for name in schema.names:
        if name not in df:
            df[name] = pa.nulls(len(df), schema.field(name).type).to_pandas()
    return df
