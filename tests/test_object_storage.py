"""Object storage against a real S3-compatible server (moto, started here; no network), fast: URI joining
that keeps the query, the probe that refuses a store before Ray starts, files streamed in chunks both
ways, the node-local target cache (processes racing for one target download it once; least recently
used targets are evicted) and a report read from and written into the store.

The sweeps through the launcher on this server are in tests/test_object_storage_sweep.py (slow) and
tests/test_multinode.py (slow)."""
from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pyarrow as pa
import pytest

from object_store_server import s3_server
from sweeper.store.cache import TargetCache
from sweeper.store.storage import CHUNK, Storage, StorageError, copy_stream, join_url
from test_analysis import run_dir  # noqa: F401 -- the fabricated run, as a fixture

BUCKET = "sweeper-unit"


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        server.bucket(BUCKET)
        yield server


@pytest.fixture
def store(s3, request) -> Storage:
    return Storage(s3.uri(f"{BUCKET}/{request.node.name[:40]}"))


def test_paths_join_onto_the_uri_path_keeping_the_query():
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1"
    assert join_url(uri, "smoke/train") == \
        "s3://bucket/runs/smoke/train?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1"
    storage = Storage(uri.replace("runs?", "runs/?"))  # a trailing slash is not part of the path joined onto
    assert storage.url("smoke") == "s3://bucket/runs/smoke?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1"
    assert storage.path("smoke/trials") == "bucket/runs/smoke/trials" and storage.url("") == storage.uri
    assert Storage(storage.url("smoke")).path("x") == "bucket/runs/smoke/x"  # a run's URL is a storage too
    secret = Storage("s3://AK:SECRET@bucket/runs?region=us-east-1")  # a region: no look-up of the bucket
    assert secret.show("r") == "s3://AK:***@bucket/runs/r?region=us-east-1" and "SECRET" in secret.url("r")


def test_a_query_uri_and_the_environment_name_the_same_store(s3, store, monkeypatch):
    store.write_table("run/trials/t1/summary.parquet", pa.table({"x": [1, 2]}))
    store.write_bytes("run/trials/t1/_SUCCESS", b"")
    run = Storage(store.url("run"))
    assert run.exists("trials/t1/_SUCCESS") and run.read_table("trials/t1/summary.parquet")["x"].to_pylist() == [1, 2]
    run.delete("trials/t1/_SUCCESS")
    assert not store.exists("run/trials/t1/_SUCCESS")
    # No endpoint in the URI: pyarrow takes it (and the credentials) from the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{s3.endpoint}")
    plain = Storage(store.url("run").split("?")[0])
    assert plain.read_table("trials/t1/summary.parquet").num_rows == 2 and plain.problem() is None


def test_a_store_that_cannot_be_used_is_refused_in_one_sentence(s3, store, capsys):
    assert store.problem() is None and store.list_files("") == []  # the probe object is deleted again
    missing = Storage(s3.uri("no-such-bucket/runs"))
    why = missing.problem()
    assert why.startswith(f"storage {missing.uri!r} cannot be reached or written: ") and "\n" not in why
    assert "no-such-bucket" in why.split(": ", 1)[1]
    closed = Storage("s3://bucket/runs?endpoint_override=127.0.0.1:9&scheme=http")  # nothing listens on port 9
    assert "cannot be reached or written" in closed.problem()
    with pytest.raises(StorageError, match=r"storage 's3://bucket/runs\?nonsense=1' cannot be opened: .*nonsense"):
        Storage("s3://bucket/runs?nonsense=1")

    from sweeper.launch import main
    assert main(["--grid", "smoke", "--storage", missing.uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: storage {missing.uri!r} cannot be reached or written: ") and "\n" not in err
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()  # refused before Ray started


class Recorder:
    """A stream that records the size of every read."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.reads = data, 0, []

    def read(self, n: int) -> bytes:
        self.reads.append(n)
        block, self.pos = self.data[self.pos:self.pos + n], self.pos + n
        return block


def test_files_stream_in_chunks_both_ways(store, tmp_path, monkeypatch):
    src = Recorder(b"x" * 2500)
    out = pa.BufferOutputStream()
    assert copy_stream(src, out, chunk=1000) == 2500 and src.reads == [1000] * 4
    assert out.getvalue().size == 2500

    # Uploads and downloads go through copy_stream, never a whole-file read: each read is one chunk.
    reads = []

    def spy(src, dst, chunk):
        class Counted:
            def read(self, n):
                block = src.read(n)
                reads.append((n, len(block)))
                return block
        return copy_stream(Counted(), dst, chunk)
    monkeypatch.setattr("sweeper.store.storage.copy_stream", spy)
    size, chunk = 5 << 20, 1 << 20                     # a 5 MB file, 1 MB at a time
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(size))
    assert store.put_file(str(local), "t/model/weights.bin", chunk=chunk) == size
    assert store.get_file("t/model/weights.bin", str(tmp_path / "back.bin"), chunk=chunk) == size
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert reads == [(chunk, chunk)] * 5 + [(chunk, 0)] + [(chunk, chunk)] * 5 + [(chunk, 0)]
    assert CHUNK >= 1 << 20


def _target(store: Storage, key: str, nbytes: int = 1000) -> str:
    rel = f"targets/{key}"
    store.write_bytes(f"{rel}/model/weights.bin", bytes([len(key)]) * nbytes)
    store.write_bytes(f"{rel}/data/forget.json", b'{"q": 1}\n')
    return rel


def _race(uri: str, rel: str, root: str, barrier, log: str) -> None:
    """One trial process of a node: wait for the others, then read the target through the cache."""
    cache = TargetCache(root, 10**9)
    download = cache._download

    def counted(*args):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # a slow download: the others arrive while it runs
        download(*args)
    cache._download = counted
    barrier.wait()
    with cache.use(Storage(uri), rel) as local:
        assert open(os.path.join(local, "data", "forget.json")).read() == '{"q": 1}\n'


def test_trials_racing_for_one_target_download_it_once(store, tmp_path):
    rel, root, log = _target(store, "abc123"), str(tmp_path / "cache"), str(tmp_path / "downloads.log")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_race, args=(store.uri, rel, root, barrier, log)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(open(log).read().split()) == 1             # one download for three trials
    assert sorted(os.listdir(root)) == [".abc123.lock", "abc123"]  # no temporary folder left
    with TargetCache(root, 10**9).use(store, rel) as again:  # a later trial: no download at all
        assert again == os.path.join(root, "abc123")
    assert len(open(log).read().split()) == 1


def test_the_least_recently_used_targets_are_evicted_but_never_one_in_use(store, tmp_path):
    cache = TargetCache(str(tmp_path / "cache"), max_bytes=2500)  # room for two 1 KB targets
    a, b, c, d = (_target(store, k) for k in ("aaaa", "bbbb", "cccc", "dddd"))
    for rel in (a, b, a, c):                               # b is now the least recently used
        with cache.use(store, rel):
            time.sleep(0.01)
    assert [key for _, key, _ in cache.entries()] == ["aaaa", "cccc"]
    with cache.use(store, a):                              # a is read while d arrives: c goes, not a
        with cache.use(store, d):
            pass
        assert sorted(key for _, key, _ in cache.entries()) == ["aaaa", "dddd"]
    assert cache.evict() == []                             # within the limit


def test_a_target_built_on_this_node_is_adopted_not_downloaded(store, tmp_path, monkeypatch):
    built = tmp_path / "built"
    (built / "model").mkdir(parents=True)
    (built / "model" / "weights.bin").write_bytes(b"w" * 100)
    rel = "targets/eeee"
    store.upload_dir(str(built), rel)
    cache = TargetCache(str(tmp_path / "cache"), 10**9)
    cache.adopt(store, rel, str(built))
    monkeypatch.setattr(cache, "_download", lambda *a: pytest.fail("downloaded a target this node built"))
    with cache.use(store, rel) as local:
        assert open(os.path.join(local, "model", "weights.bin"), "rb").read() == b"w" * 100
    assert not built.exists() and sorted(os.listdir(tmp_path / "cache")) == [".eeee.lock", "eeee"]


def test_a_local_storage_folder_is_read_in_place(tmp_path):
    storage = Storage(str(tmp_path / "runs"))
    storage.write_bytes("targets/k1/metrics.json", b"{}")
    cache = TargetCache(str(tmp_path / "cache"), 10**9)
    with cache.use(storage, "targets/k1") as local:
        assert local == storage.path("targets/k1")
    assert not os.path.exists(tmp_path / "cache")


def test_the_report_is_read_from_the_store_and_written_into_it(store, run_dir, tmp_path, capsys):  # noqa: F811
    from analysis.report import main as report_main
    store.upload_dir(str(run_dir), "synthetic")
    url = store.url("synthetic")
    assert report_main([url, "--out", str(tmp_path / "local")]) == 0
    assert f"and {store.url('synthetic/report')}" in capsys.readouterr().out
    assert (tmp_path / "local" / "index.html").exists()
    index = store.read_bytes("synthetic/report/index.html").decode()
    assert "npo-static-failed" in index and "s3://" in index and "endpoint_override" in index
    assert {"pareto.png", "summary.md", "paper_table.tex"} <= set(store.list_files("synthetic/report"))
    # Trials are shown by their place in the store, without the query.
    from analysis.load import load_run
    assert f"s3://{store.path('synthetic')}/trials/rlw-static-unfinished" in load_run(url).unfinished
