"""A run's compacted tables: every finished trial's summary, curves and answer rows in three files.

A trial writes three small Parquet files (``sweeper/store/results.py``); a run of 10,000 trials is
30,000 files, and opening them is most of a report's reading time. ``analysis.load.load_run`` therefore
writes, when it has read at least ``COMPACT_AFTER`` trials from their folders, what it read into::

    <run>/compact/summary.parquet   every finished trial's summary row, with ``trial`` (its folder name)
    <run>/compact/steps.parquet     their curves
    <run>/compact/answers.parquet   their ROUGE rows of the forget and retain splits (the answer pages)
    <run>/compact/trials.parquet    trial, stamp: the size and modification time of its summary.parquet

The launcher loads the run when it ends (its closing counts), so a finished run holds its compacted
tables and every later report reads four files. A trial is taken from them only while its stamp still
matches its folder (a trial re-run with ``--retry-failed`` is read from its folder again); trials
finished since are read from their folders and the tables rewritten. Storage that cannot be written
(a read-only bucket) only costs the speed: the run loads as before. Usage::

    cached = read_compact(fs, root, stamps)          # (tables, trials covered) or None
    write_compact(uri, tables, stamps)
"""
from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

#: Trials read from their folders by one load above which the load writes the compacted tables.
COMPACT_AFTER = 200
KINDS = ("summary", "steps", "answers")
FOLDER = "compact"


def stamp(info: pafs.FileInfo) -> str:
    """What tells a trial's summary.parquet apart from a rewritten one: its size and modification time."""
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return f"{info.size}:{mtime}"


def read_compact(fs: pafs.FileSystem, root: str, stamps: dict[str, str]) -> tuple[dict, set] | None:
    """The compacted tables under ``root`` restricted to the trials whose stamp still matches ``stamps``
    (trial folder name -> stamp of the finished trials now listed), and the set of those trials; None
    when the run has no (readable) compacted tables."""
    base = f"{root}/{FOLDER}"
    try:
        manifest = pq.read_table(f"{base}/trials.parquet", filesystem=fs).to_pydict()
        covered = {t for t, s in zip(manifest["trial"], manifest["stamp"]) if stamps.get(t) == s}
        if not covered:
            return None
        keep = pa.array(sorted(covered), pa.string())
        tables = {}
        for kind in KINDS:
            table = pq.read_table(f"{base}/{kind}.parquet", filesystem=fs)
            tables[kind] = table.filter(pc.is_in(table["trial"], value_set=keep))
    except (OSError, pa.ArrowException, KeyError):   # none yet, or written by other code: read the folders
        return None
    return tables, covered


def write_compact(uri: str, tables: dict[str, pa.Table], stamps: dict[str, str]) -> bool:
    """Write the compacted tables of the run at ``uri`` (``tables``: kind -> table with a ``trial``
    column, every finished trial); True when written. Each file is written atomically, the manifest
    last, so a reader sees either the old manifest (whose stamps still guard it) or the new one."""
    from sweeper.store.storage import Storage
    trials = sorted(stamps)
    manifest = pa.table({"trial": pa.array(trials, pa.string()), "stamp": pa.array([stamps[t] for t in trials])})
    try:
        store = Storage(uri)
        for kind in KINDS:
            store.write_table(f"{FOLDER}/{kind}.parquet", tables[kind])
        store.write_table(f"{FOLDER}/trials.parquet", manifest)
    except (OSError, pa.ArrowException, ValueError) as e:
        print(f"analysis: could not write the compacted tables of {uri} ({e}); loading reads every trial's "
              f"files, only slower", file=sys.stderr)
        return False
    return True
