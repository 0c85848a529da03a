"""A real two-node Ray cluster on one machine (slow): a head and a second node started with ``ray start``
(separate processes, their own CPUs, ports and target caches), a grid launched against it with
``--address``; the nodes share no folder: the run's storage is an S3-compatible server (moto, started
here; no network) named by a query-parameter URI. Trials run on both nodes (each summary names its
node) and write to the one store; each node downloads the target once into its own cache. Mid-sweep
the second node's processes are killed: its interrupted trial is retried on the head from its
checkpoint in the store, the sweep completes, and every trial has exactly one summary and one unbroken
curve."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from object_store_server import CREDENTIALS, s3_server
from ray_cluster import cmdline, free_ports, kill, processes, ray_start as start_node
from sweeper.store.storage import Storage

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, **CREDENTIALS, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# The head's GCS declares a node dead after failure_threshold missed health checks, period_ms apart (Ray's
# defaults: 5 x 3 s). Until then Tune may place the lost trial's restart on the dead node's freed CPU and
# wait; a cluster on one machine can afford checks every 0.5 s (a raylet answers them from its own thread).
HEAD_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "2000",
            "RAY_health_check_failure_threshold": "4"}
STEPS = 60
BUCKET = "sweeper-twonodes"


def ray_start(cache: str, *args: str) -> None:
    """Start a node whose workers keep their target cache in ``cache`` (a node's own disk)."""
    start_node({**ENV, **(HEAD_ENV if "--head" in args else {}), "SWEEPER_CACHE": cache}, 1, *args)


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        server.bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    """(address, temp dir, the second node's node-manager port); the cluster's own processes are killed
    at the end (never `ray stop`, which would stop every Ray on the machine). Node caches: <tmp>/cache1, 2."""
    tmp = str(tmp_path_factory.mktemp("cluster"))
    gcs, client, nm, om, agent, agent_grpc, metrics, env_agent = free_ports(8)
    address = f"127.0.0.1:{gcs}"
    try:
        ray_start(os.path.join(tmp, "cache1"), "--head", "--port", str(gcs), "--ray-client-server-port", str(client), "--temp-dir", tmp,
                  "--include-dashboard", "false", "--min-worker-port", "21000", "--max-worker-port", "21499")
        ray_start(os.path.join(tmp, "cache2"), "--address", address, "--node-manager-port", str(nm), "--object-manager-port", str(om),
                  "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
                  "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(env_agent),
                  "--min-worker-port", "21500", "--max-worker-port", "21999")
        yield address, tmp, nm
    finally:
        kill(processes(lambda c: tmp in c or f":{gcs}" in c))


def second_node_raylet(port: int) -> list[psutil.Process]:
    return [p for p in processes(lambda c: "raylet" in c and f"node_manager_port={port}" in c)]


def summaries(store: Storage, written_only: bool = False) -> dict:
    """Each trial folder's one summary row. Mid-sweep (``written_only``) a folder can exist before its
    summary does: a trial writes samples and steps first, the summary last."""
    files = store.list_files("trials") if store.exists("trials") else []
    out = {}
    for t in sorted({f.split("/")[0] for f in files}):
        if written_only and f"{t}/summary.parquet" not in files:
            continue
        rows = store.read_table(f"trials/{t}/summary.parquet").to_pylist()
        assert len(rows) == 1, t
        out[t] = rows[0]
    return out


def test_trials_run_on_both_nodes_and_survive_losing_one(cluster, s3, tmp_path):
    address, tmp, node2_port = cluster
    grid = {"name": "twonodes", "data": [{"name": "authors", "source": "builtin", "n_authors": 6, "qa_per_author": 5}],
            "models": [{"name": "tiny-gpt2"}], "target": {"max_epochs": 20, "exact_match_gate": 0.0},
            "methods": [{"method": "gdiff", "c": [0.1, 0.3, 0.5, 0.7, 0.9]}, {"method": "ngdiff"}],
            "unlearn": {"steps": STEPS, "batch_size": 4}, "eval": {"max_questions": 4, "every": 10}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    storage = s3.uri(f"{BUCKET}/runs")
    run = Storage(Storage(storage).url("twonodes"))
    log = open(tmp_path / "launch.log", "w")
    launcher = subprocess.Popen([sys.executable, "-m", "sweeper.launch", "--grid", str(tmp_path / "grid.yaml"),
                                 "--address", address, "--storage", str(storage), "--no-report"], cwd=ROOT, env=ENV,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Wait until trials have finished on two different nodes and the second node is running another one.
        deadline, before_kill = time.time() + 600, set()
        while time.time() < deadline:
            done = {t: r for t, r in summaries(run, written_only=True).items() if r["method"] != "no_unlearn"}
            nodes = {r["node_id"] for r in done.values()}
            busy = [p for p in second_node_raylet(node2_port) if "ImplicitFunc" in cmdline(p)]
            if len(nodes) == 2 and busy and len(done) < 6:  # the kill lands mid-sweep
                before_kill = set(done)
                kill(second_node_raylet(node2_port))
                break
            assert launcher.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the second node never ran a trial: " + (tmp_path / "launch.log").read_text()[-3000:])
        assert launcher.wait(timeout=600) == 0, (tmp_path / "launch.log").read_text()[-4000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        log.close()

    assert before_kill, "the second node was never killed"
    rows = {t: r for t, r in summaries(run).items() if r["method"] != "no_unlearn"}
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows.values())
    assert len({r["node_id"] for r in rows.values()}) == 2     # both nodes ran trials
    for t, r in rows.items():                                   # one unbroken curve per trial, no step twice
        steps = run.read_table(f"trials/{t}/steps.parquet").column("step").to_pylist()
        assert steps == list(range(1, STEPS + 1)), t
    # Every trial that finished after the kill (the one the lost node was running among them) ran on the one
    # node left, and it is one of the two nodes that ran trials before.
    after = {rows[t]["node_id"] for t in rows if t not in before_kill}
    assert len(after) == 1 and after <= {r["node_id"] for t, r in rows.items() if t in before_kill}
    # No shared disk: each node downloaded the one target into its own cache, once.
    target = {r["target_hash"] for r in rows.values()}
    for node in ("cache1", "cache2"):
        assert sorted(n for n in os.listdir(os.path.join(tmp, node)) if not n.startswith(".")) == sorted(target), node
