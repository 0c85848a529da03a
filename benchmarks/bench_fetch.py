"""Target fetch per trial on one node, first trial vs later trials, against an S3-compatible server.

    .venv/bin/python benchmarks/bench_fetch.py                 # a 256 MB target, 4 trials (about 2 minutes)
    .venv/bin/python benchmarks/bench_fetch.py --mb 64 --trials 3 --no-write   # a quick look

moto's standalone server runs in its own process on 127.0.0.1 (no network); a target folder of ``--mb``
MB (one weights file of random bytes plus the small files a target holds) is uploaded once with
``Storage.upload_dir``. Then each trial is a fresh process on this "node" that fetches the target:

- cache: through the node-local cache (``sweeper.store.cache``): the first trial downloads, later ones
  find the copy; also ``--trials`` trials starting at once on an empty cache (one download for all);
- before: as every trial did before the cache: a download into a new temporary folder per trial.

Also the peak memory (max RSS growth of a fresh process) of uploading the weights file streamed in
chunks (``Storage.put_file``) against reading it whole (what ``upload_dir`` did before). The section
between the markers in RESULTS.md is rewritten; ``run_all.py`` does not run this benchmark.
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from sections import markers, write_section  # noqa: E402
BEGIN, END = markers("bench_fetch.py")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
REL = "targets/0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("bench_fetch.py: moto's server did not start within 60 s")


def make_target(folder: str, mb: int) -> None:
    """A target folder: one ``mb``-MB weights file and the small files (config, tokenizer, data)."""
    os.makedirs(os.path.join(folder, "model"))
    with open(os.path.join(folder, "model", "model.safetensors"), "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    for name in ("model/config.json", "tokenizer/tokenizer.json", "data/forget.json", "data/retain.json", "metrics.json"):
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            f.write("{}\n" * 1000)


def trial_fetch(uri: str, mode: str, cache_dir: str, barrier=None) -> tuple[float, bool]:
    """One trial process: fetch the target (``cache`` or ``before``); return (seconds, downloaded)."""
    from sweeper.store.cache import TargetCache
    from sweeper.store.storage import Storage
    storage = Storage(uri)
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    if mode == "before":  # what every trial did before the cache: a new temporary folder each time
        import pyarrow.fs as pafs
        local = tempfile.mkdtemp(prefix="sweeper-", dir=cache_dir)
        pafs.copy_files(storage.path(REL), local, source_filesystem=storage.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return time.perf_counter() - start, True
    cache, downloads = TargetCache(cache_dir, 10**12), []
    download = cache._download
    cache._download = lambda *a: (downloads.append(1), download(*a))  # counted, as the unit test does
    with cache.use(storage, REL) as local:
        assert os.path.exists(os.path.join(local, "model", "model.safetensors"))
    return time.perf_counter() - start, bool(downloads)


def upload_peak(uri: str, path: str, streamed: bool) -> float:
    """MB of RSS growth while uploading one file, streamed in chunks or read whole (a fresh process;
    the resident size is sampled every 2 ms from a thread)."""
    import threading

    import psutil
    from sweeper.store.storage import Storage
    storage, me, peak, done = Storage(uri), psutil.Process(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.002)
    base = me.memory_info().rss
    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        if streamed:
            storage.put_file(path, "upload/streamed.bin")
        else:
            with open(path, "rb") as f:
                storage.write_bytes("upload/whole.bin", f.read())
    finally:
        done.set()
        watcher.join()
    return (peak[0] - base) / 2**20


def in_process(pool, fn, *args):
    return pool.apply(fn, args)


def du(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs) / 1e6


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the target's weights file (MB)")
    ap.add_argument("--trials", type=int, default=4, help="trials on the node")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args(argv)
    os.environ.update(CREDENTIALS)
    ctx = multiprocessing.get_context("spawn")  # each trial a fresh process, as Ray starts them
    port, work = free_port(), tempfile.mkdtemp(prefix="bench-fetch-")
    server, t0 = start_server(port), time.time()
    try:
        import pyarrow.fs as pafs
        from sweeper.store.storage import Storage
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True) \
            .create_dir("bench-fetch")
        uri = f"s3://bench-fetch/runs?endpoint_override=127.0.0.1:{port}&scheme=http"
        make_target(os.path.join(work, "target"), args.mb)
        start = time.perf_counter()
        Storage(uri).upload_dir(os.path.join(work, "target"), REL)
        upload_s = time.perf_counter() - start
        weights = os.path.join(work, "target", "model", "model.safetensors")
        peaks = {}
        for streamed in (True, False):
            with ctx.Pool(1) as pool:
                peaks[streamed] = in_process(pool, upload_peak, uri, weights, streamed)
        runs = {}
        for mode in ("cache", "before"):
            folder = os.path.join(work, mode)
            os.makedirs(folder)
            times = []
            for _ in range(args.trials):
                with ctx.Pool(1) as pool:
                    times.append(in_process(pool, trial_fetch, uri, mode, folder))
            runs[mode] = (times, du(folder))
        together = os.path.join(work, "together")
        barrier = ctx.Manager().Barrier(args.trials)  # noqa: the manager lives until the process ends
        with ctx.Pool(args.trials) as pool:
            start = time.perf_counter()
            at_once = pool.starmap(trial_fetch, [(uri, "cache", together, barrier)] * args.trials)
            at_once_s = time.perf_counter() - start
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)
    lines = render(args, upload_s, peaks, runs, at_once, at_once_s, time.time() - t0)
    print(lines)
    if not args.no_write:
        write_section(os.path.join(HERE, "RESULTS.md"), lines, BEGIN, END)
    return {"runs": runs, "at_once": at_once}


def render(args, upload_s, peaks, runs, at_once, at_once_s, total_s) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = "benchmarks/bench_fetch.py" + "".join(f" --{k} {v}" for k, v in (("mb", args.mb), ("trials", args.trials)))
    size = args.mb + 0.02
    lines = [BEGIN, "## Target fetch per trial on a node (issue 21)", "",
             f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; total {total_s:.0f} s; "
             f"load average at the end {load} (a shared 2-CPU machine)",
             f"- Command: `.venv/bin/python {cmd}` (from the repository root)",
             f"- Store: moto's S3 server in its own process on 127.0.0.1 (no network: a real store adds its bandwidth); "
             f"target {size:.0f} MB (one weights file + 5 small files), uploaded in {upload_s:.1f} s "
             f"({size / upload_s:.0f} MB/s); each trial a fresh process",
             "",
             "| trial on the node | fetch with the node cache (s) | fetch before: new temp folder per trial (s) |",
             "| --- | --- | --- |"]
    for i, (new, old) in enumerate(zip(runs["cache"][0], runs["before"][0]), 1):
        lines.append(f"| {i}{' (first)' if i == 1 else ''} | {new[0]:.3f}{' (download)' if new[1] else ''} | {old[0]:.3f} |")
    lines += ["", f"- Disk used on the node after {args.trials} trials: {runs['cache'][1]:.0f} MB with the cache, "
              f"{runs['before'][1]:.0f} MB before (never cleaned).",
              f"- {args.trials} trials starting at once on an empty cache: {sum(d for _, d in at_once)} download(s), "
              f"all had the target after {at_once_s:.1f} s (slowest trial {max(s for s, _ in at_once):.1f} s).",
              f"- Peak memory of uploading the {args.mb} MB file: +{peaks[True]:.0f} MB streamed in 8 MB chunks, flushed every 4 "
              f"(`Storage.put_file`), +{peaks[False]:.0f} MB read whole (before).",
              END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
