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

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
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
    #: (filesystem, path, trial_dir) of the samples.parquet of each finished trial that ``answer_rows``
    #: (the compacted tables' ROUGE rows, ``read_answer_rows``) does not hold, when load_run listed them
    sample_files: list = field(default_factory=list, repr=False)
    answer_rows: pd.DataFrame | None = field(default=None, repr=False)

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
    return _gpus_of(params_json) if isinstance(params_json, str) else 0.0


@functools.lru_cache(maxsize=1 << 16)   # asked for every trial each time a report computes its points
def _gpus_of(params_json: str) -> float:
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


def load_run(paths: str | os.PathLike | list, compact: bool = True) -> RunData:
    """Load one or several run directories (local paths or URIs such as ``s3://bucket/runs/x``).

    One listing call per run; then the run's compacted tables (``analysis.compact``) for the trials
    they hold, and each kind of file (summaries, steps) of the other finished trials in one pass, as a
    ``pyarrow.dataset`` over their folders. With ``compact`` (default), a load that read at least
    ``COMPACT_AFTER`` trials from their folders writes the compacted tables for the next one."""
    from analysis.compact import COMPACT_AFTER, read_compact, write_compact
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("load_run needs at least one run directory.")
    parts: dict[str, list] = {"summary": [], "steps": [], "answers": []}
    unfinished, samples = [], []
    for path in map(str, paths):
        fs, root = _filesystem(path)
        trials, stamps = _list_trials(fs, root, path)
        finished, items = {}, {"summary": [], "steps": [], "samples": []}
        for trial_dir, names in sorted(trials.items()):
            if "_SUCCESS" not in names or "summary.parquet" not in names:
                unfinished.append(_shown(path, root, trial_dir))
                continue
            finished[trial_dir.rsplit("/", 1)[-1]] = stamps[trial_dir]
        tables, covered = (read_compact(fs, root, finished) if compact else None) or ({}, set())
        for name in finished:
            if name in covered:
                continue
            trial_dir = f"{root}/trials/{name}"
            for kind in ("summary", "steps", "samples"):
                if f"{kind}.parquet" in trials[trial_dir]:
                    items[kind].append((fs, f"{trial_dir}/{kind}.parquet", _shown(path, root, trial_dir)))
        base = path.split("?", 1)[0].rstrip("/") + "/trials"
        run = {kind: [_with_trial_dir(tables[kind], base)] if kind in tables else [] for kind in parts}
        run["summary"] += _read_all(items["summary"], SUMMARY_SCHEMA)
        run["steps"] += _read_all(items["steps"], STEP_SCHEMA)
        if compact and len(items["summary"]) >= COMPACT_AFTER:
            fresh = read_answer_rows(RunData(pd.DataFrame(), pd.DataFrame(), sample_files=items["samples"]), arrow=True)
            if fresh is not None:
                run["answers"].append(fresh)
                items["samples"] = []
                whole = {kind: _concat(run[kind], _SCHEMAS.get(kind)) for kind in parts}
                write_compact(path, {k: _with_trial(t) for k, t in whole.items()}, finished)
        for kind in parts:
            parts[kind] += [_in_trial_order(run[kind])] if tables and len(run[kind]) > 1 else run[kind]
        samples += items["samples"]
    return RunData(
        summaries=_concat(parts["summary"], SUMMARY_SCHEMA).to_pandas(),
        steps=_concat(parts["steps"], STEP_SCHEMA).to_pandas(),
        unfinished=unfinished,
        sources=[str(p) for p in paths],
        sample_files=samples,
        answer_rows=_concat(parts["answers"], None).to_pandas() if parts["answers"] else None,
    )


#: The ROUGE metrics of the per-sample rows that the answer pages show (``analysis.answers``).
ANSWER_METRICS = ("rouge_recall", "verbmem_rouge_recall", "knowmem_rouge_recall")
ANSWER_COLUMNS = ["step", "split", "metric", "index", "value", "question", "reference_answer", "generated_answer"]


def read_answer_rows(data: RunData, arrow: bool = False):
    """The ROUGE rows (``ANSWER_METRICS``) of the forget and retain splits of every finished trial's
    samples.parquet, with ``trial_dir`` and ``last_step`` (the trial's highest step over all its rows,
    NaN where it recorded none); every trial with a samples file has at least one row (an empty file:
    a row of nulls). Rows the compacted tables held (``data.answer_rows``) plus two passes over the
    other files (every row's step, then the ROUGE rows); None when those files do not scan together
    (the caller then reads them one by one). ``arrow``: a pyarrow Table instead of a DataFrame."""
    frames = [] if arrow or data.answer_rows is None else [data.answer_rows]
    for fs, items in _by_filesystem(data.sample_files):
        shown = {path: trial for _, path, trial in items}
        try:
            d = ds.dataset(list(shown), format="parquet", filesystem=fs)
            last = d.to_table(columns=["step", "__filename"]).group_by("__filename").aggregate([("step", "max")])
            wanted = pc.field("metric").isin(list(ANSWER_METRICS)) & pc.field("split").isin(["forget", "retain"])
            rows = d.to_table(columns=[c for c in ANSWER_COLUMNS if c in d.schema.names] + ["__filename"],
                              filter=wanted)
        except (pa.ArrowException, OSError, KeyError, ValueError):
            return None
        files = pa.array(list(shown))
        missing = pc.filter(files, pc.invert(pc.is_in(files, value_set=rows["__filename"].unique())))
        if len(missing):   # a file without ROUGE rows still gets its page: one row of nulls
            rows = pa.concat_tables([rows, pa.table({"__filename": missing})], promote_options="permissive")
        at = pc.index_in(rows["__filename"], value_set=last["__filename"])
        rows = rows.append_column("last_step", pc.cast(last["step_max"].take(at), pa.float64()))
        trial = pa.array(list(shown.values()), pa.string()).take(pc.index_in(rows["__filename"], value_set=files))
        frames.append(rows.drop_columns(["__filename"]).append_column("trial_dir", trial))
    if arrow:
        return _concat(frames, None) if frames else None
    frames = [f if isinstance(f, pd.DataFrame) else f.to_pandas() for f in frames]
    return pd.concat(frames, ignore_index=True) if frames else None


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


def _list_trials(fs: pafs.FileSystem, root: str, shown: str) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Map each trial dir under ``root/trials`` to the names of the files it holds, and to the stamp of
    its summary.parquet (``analysis.compact.stamp``); one listing call."""
    from analysis.compact import stamp
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise ValueError(f"run directory {shown} does not exist.")
    base = f"{root}/trials"
    # One recursive listing rather than one call per trial: cheap on object stores too.
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    trials: dict[str, set[str]] = {}
    stamps: dict[str, str] = {}
    for info in infos:
        parts = info.path[len(base) + 1:].split("/")
        if len(parts) == 1 and info.type == pafs.FileType.Directory:
            trials.setdefault(info.path, set())
        elif len(parts) == 2:
            trials.setdefault(f"{base}/{parts[0]}", set()).add(parts[1])
            if parts[1] == "summary.parquet":
                stamps[f"{base}/{parts[0]}"] = stamp(info)
    if not trials:
        raise ValueError(f"run directory {shown} has no trials (expected {shown}/trials/<trial_id>/summary.parquet).")
    return trials, stamps


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


def _by_filesystem(items: list) -> list[tuple[pafs.FileSystem, list]]:
    """``items`` ((fs, path, shown) tuples) grouped by filesystem, in order."""
    groups: dict[int, tuple[pafs.FileSystem, list]] = {}
    for item in items:
        groups.setdefault(id(item[0]), (item[0], []))[1].append(item)
    return list(groups.values())


def _scan(items: list, schema: pa.Schema) -> pa.Table:
    """All files of ``items`` (one filesystem) as one table, read as one ``pyarrow.dataset`` (its own
    threads, one pass): every column of ``schema`` plus those of the first file, ``trial_dir`` last."""
    fs, shown = items[0][0], {path: trial for _, path, trial in items}
    first = pq.read_schema(items[0][1], filesystem=fs)
    merged = pa.unify_schemas([first, schema], promote_options="permissive")
    table = ds.dataset(list(shown), schema=merged, format="parquet", filesystem=fs) \
        .to_table(columns=merged.names + ["__filename"])
    where = pc.index_in(table["__filename"], value_set=pa.array(list(shown)))
    trial = pa.array(list(shown.values()), pa.string()).take(where)
    return table.drop_columns(["__filename"]).append_column("trial_dir", trial)


def _read_all(items: list, schema: pa.Schema) -> list[pa.Table]:
    """The files of ``items`` as tables (one per filesystem, or one per file when they do not scan
    together), each with ``trial_dir``."""
    tables = []
    for fs, group in _by_filesystem(items):
        try:
            tables.append(_scan(group, schema))
        except (pa.ArrowException, OSError, KeyError, ValueError):
            # files that do not scan as one dataset (types that disagree): read one by one, so that the
            # error names the file; threads, because remote filesystems spend their time waiting
            with ThreadPoolExecutor(max_workers=8) as pool:
                tables += list(pool.map(_read_one, group))
    return tables


def _concat(tables: list[pa.Table], schema: pa.Schema | None) -> pa.Table:
    """One table holding at least every column of ``schema`` (with ``trial_dir``)."""
    if schema is not None:
        tables = [schema.append(pa.field("trial_dir", pa.string())).empty_table(), *tables]
    # "permissive" lets files written by older or newer code (extra or missing columns) sit together.
    return pa.concat_tables(tables, promote_options="permissive")


def _in_trial_order(tables: list[pa.Table]) -> pa.Table:
    """Compacted and freshly read rows of one run in trial order, as a load without compacted tables
    gives them (a stable sort: each trial's rows keep their order)."""
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.take(pc.sort_indices(table, sort_keys=[("trial_dir", "ascending")]))


def _with_trial_dir(table: pa.Table, base: str) -> pa.Table:
    """A compacted table's ``trial`` (folder name) as ``trial_dir`` under ``base`` (``<run>/trials``)."""
    trial_dir = pc.binary_join_element_wise(base, table["trial"], "/")
    return table.drop_columns(["trial"]).append_column("trial_dir", trial_dir)


def _with_trial(table: pa.Table) -> pa.Table:
    """Inverse of ``_with_trial_dir``: the folder name only, so the tables hold wherever the run is read from."""
    trial = pc.replace_substring_regex(table["trial_dir"], r"^.*/", "")
    return table.drop_columns(["trial_dir"]).append_column("trial", trial)


_SCHEMAS = {"summary": SUMMARY_SCHEMA, "steps": STEP_SCHEMA}
