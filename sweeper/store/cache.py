"""A node-local cache of targets: a node downloads a target folder once and every later trial reads it.

A target is content-addressed (``targets/<hash>``), so its local copy is keyed by that hash and never
goes stale. Several trials on one node may start at once: a file lock per target lets one of them
download (into a temporary folder, renamed into place when complete, so a half-copied target is never
seen) while the others wait, then all read the same copy; the node that built a target in stage 1
keeps the folder it uploaded (``adopt``). Trials hold the lock shared while they read
it; eviction takes it exclusively, so a target in use is never removed. For a local storage folder
nothing is copied: the target is read in place.

Settings (environment variables of each node, read when a trial loads its target; the launcher's own
environment on a local Ray; on a cluster, set them before ``ray start`` on each node):

    SWEEPER_CACHE         the cache folder (default ~/.cache/unlearning-sweeper/targets)
    SWEEPER_CACHE_MAX_GB  its size limit in GB (default 100): least recently used whole targets are
                          evicted after each new download; the target just used always stays

Usage::

    from sweeper.store.cache import TargetCache
    with TargetCache.from_env().use(storage, "targets/<hash>") as local:   # a local folder, read-only
        model = AutoModelForCausalLM.from_pretrained(f"{local}/model")
    TargetCache.from_env().adopt(storage, "targets/<hash>", built)  # stage 1: keep what this node built
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Iterator

from sweeper.store.storage import Storage

CACHE_ENV, LIMIT_ENV = "SWEEPER_CACHE", "SWEEPER_CACHE_MAX_GB"
DEFAULT_DIR = os.path.join("~", ".cache", "unlearning-sweeper", "targets")
DEFAULT_GB = 100.0


def _size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


@contextlib.contextmanager
def _lock(path: str) -> Iterator[int]:
    """An open lock file (flock'd by the caller); closing it releases any lock held on it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class TargetCache:
    root: str
    max_bytes: int

    @classmethod
    def from_env(cls) -> "TargetCache":
        """The cache this node's settings describe (``SWEEPER_CACHE``, ``SWEEPER_CACHE_MAX_GB``)."""
        root = os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_DIR)
        return cls(root, int(float(os.environ.get(LIMIT_ENV) or DEFAULT_GB) * 1e9))

    def _paths(self, key: str) -> tuple[str, str]:
        return os.path.join(self.root, key), os.path.join(self.root, f".{key}.lock")

    @contextlib.contextmanager
    def use(self, storage: Storage, rel: str) -> Iterator[str]:
        """A local folder holding ``rel`` (a target) while the block runs: downloaded once per node, then
        reused; read in place when ``storage`` is a local folder."""
        if storage.is_local:
            yield storage.path(rel)
            return
        key = rel.rstrip("/").rsplit("/", 1)[-1]
        os.makedirs(self.root, exist_ok=True)
        final, lock_path = self._paths(key)
        with _lock(lock_path) as fd:
            while True:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.path.isdir(final):
                    break                     # keep the shared lock while the caller reads
                fcntl.flock(fd, fcntl.LOCK_UN)
                fcntl.flock(fd, fcntl.LOCK_EX)  # one downloader; the others wait here, then find it
                if not os.path.isdir(final):
                    self._download(storage, rel, key, final)
                fcntl.flock(fd, fcntl.LOCK_UN)  # and loop: an eviction may come between, so look again
            os.utime(final)                     # recency, for least-recently-used eviction
            yield final
        self.evict(keep=key)

    def adopt(self, storage: Storage, rel: str, folder: str) -> None:
        """Make ``folder``, a complete local copy of ``rel`` (a target stage 1 just built and uploaded),
        this node's copy, so the node never downloads what it built. ``folder`` is moved (renamed when on
        the same disk); nothing happens for a local storage folder or a target the cache holds already."""
        if storage.is_local:
            return
        key = rel.rstrip("/").rsplit("/", 1)[-1]
        os.makedirs(self.root, exist_ok=True)
        final, lock_path = self._paths(key)
        with _lock(lock_path) as fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.isdir(final):
                part = os.path.join(self.root, f".{key}.part-{uuid.uuid4().hex}")
                try:
                    shutil.move(folder, part)
                    os.rename(part, final)
                except BaseException:
                    shutil.rmtree(part, ignore_errors=True)
                    raise
        self.evict(keep=key)

    def _download(self, storage: Storage, rel: str, key: str, final: str) -> None:
        """Copy ``rel`` into a temporary folder and rename it to ``final`` (the caller holds the lock)."""
        for name in os.listdir(self.root):      # left by a download that died: nobody else holds the lock
            if name.startswith(f".{key}.part-"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".{key}.part-", dir=self.root)
        try:
            storage.download_dir(rel, tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def entries(self) -> list[tuple[float, str, int]]:
        """(last use, key, bytes) of every complete target in the cache, least recently used first."""
        out = []
        for key in os.listdir(self.root) if os.path.isdir(self.root) else []:
            path = os.path.join(self.root, key)
            if not key.startswith(".") and os.path.isdir(path):
                out.append((os.path.getmtime(path), key, _size(path)))
        return sorted(out)

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used targets until the cache fits its limit; return the keys removed.

        ``keep`` and targets in use (their lock held by a reader) are skipped."""
        entries = self.entries()
        total, removed = sum(size for _, _, size in entries), []
        for _, key, size in entries:
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            final, lock_path = self._paths(key)
            with _lock(lock_path) as fd:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue                      # being read or downloaded right now
                trash = os.path.join(self.root, f".{key}.evicted-{uuid.uuid4().hex}")
                os.rename(final, trash)           # gone from view at once, deleted at leisure
                shutil.rmtree(trash, ignore_errors=True)
            total -= size
            removed.append(key)
        return removed
