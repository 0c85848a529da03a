"""Storage: a local folder or any pyarrow filesystem URI (s3://, gs://, hdfs://, file://), one API.

Writes are atomic: a local file is written under a temporary name and renamed; on object stores a PUT
is atomic by itself. Nothing half-written is ever visible under its final name.

Usage::

    store = Storage("runs")                 # or Storage("s3://bucket/runs")
    store.write_table("smoke/trials/t1/summary.parquet", table)
    store.write_bytes("smoke/trials/t1/_SUCCESS", b"")
    store.exists("smoke/trials/t1/_SUCCESS")
"""
from __future__ import annotations

import io
import os
import tempfile
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class Storage:
    def __init__(self, uri: str):
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.uri = uri.rstrip("/")
        else:
            # Ray Train changes each worker's working directory, so a relative path must be made absolute
            # in the launcher, before it travels to any worker.
            self.root = os.path.abspath(uri)
            self.fs = pafs.LocalFileSystem()
            self.uri = self.root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def url(self, rel: str) -> str:
        """The full URI (or absolute local path) of ``rel``: what Ray's storage_path and users need."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str) -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}" if self.is_local else target
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        if tmp != target:
            self.fs.move(tmp, target)

    def delete(self, rel: str) -> None:
        """Remove the file ``rel`` if it exists."""
        if self.exists(rel):
            self.fs.delete_file(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs)

    def upload_dir(self, local_dir: str, rel: str) -> None:
        """Copy a local folder to ``rel`` file by file (each file atomically)."""
        for dirpath, _, files in os.walk(local_dir):
            for name in files:
                src = os.path.join(dirpath, name)
                sub = os.path.relpath(src, local_dir).replace(os.sep, "/")
                with open(src, "rb") as f:
                    self.write_bytes(f"{rel}/{sub}", f.read())

    def download_dir(self, rel: str, local_dir: str | None = None) -> str:
        """Copy ``rel`` to a local folder (a new temporary one by default); on local storage nothing is
        copied and the path itself is returned."""
        if self.is_local:
            return self.path(rel)
        local_dir = local_dir or tempfile.mkdtemp(prefix="sweeper-")
        pafs.copy_files(self.path(rel), local_dir, source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return local_dir

    def check_writable(self) -> str | None:
        """One sentence saying why this storage cannot be written, or None."""
        probe = f"_write_check_{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"ok")
            self.fs.delete_file(self.path(probe))
        except Exception as e:  # noqa: BLE001 -- any failure means "not writable"; say which
            return f"storage {self.uri!r} cannot be written: {e}"
        return None
