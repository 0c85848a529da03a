"""Ray clusters that tests start with ``ray start`` (real separate processes) and end by killing exactly
their own processes (never ``ray stop``, which would stop every Ray on the machine).

    address, stop = start_head(tmp_dir, num_cpus=2, env=env)     # a head with the trial-slot resource
    ... launch with --address address ...
    stop()

Every port a node opens is chosen free, so several clusters (the session's, a two-node test's) can run
side by side on one machine.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
TRIAL_SLOT = "sweeper_trial_slot"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_ports() -> list[str]:
    """The ``ray start`` options of every port a node (head or not) opens besides the GCS, each free."""
    nm, om, agent, agent_grpc, metrics, env_agent = free_ports(6)
    return ["--node-manager-port", str(nm), "--object-manager-port", str(om),
            "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(env_agent)]


def ray_start(env: dict, num_cpus: int, *args: str) -> None:
    """``ray start`` a node on 127.0.0.1 with ``num_cpus`` CPUs and the launcher's trial-slot resource."""
    subprocess.run([RAY, "start", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
                    "--disable-usage-stats", "--resources", json.dumps({TRIAL_SLOT: 100}), *args],
                   env=env, check=True, capture_output=True, timeout=120)


def processes(match) -> list[psutil.Process]:
    """Processes whose command line matches, with all their descendants."""
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if match(" ".join(p.info["cmdline"] or [])):
                found.add(p)
                found.update(p.children(recursive=True))
        except psutil.Error:
            pass
    return list(found)


def cmdline(p: psutil.Process) -> str:
    """A process's command line, or "" once it has exited (it can turn zombie between listing and reading)."""
    try:
        return " ".join(p.cmdline() or [p.name()])
    except psutil.Error:
        return ""


def kill(procs) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def start_head(tmp: str, num_cpus: int, env: dict, worker_ports: tuple[int, int] = (22000, 22499)):
    """A one-node cluster whose files live under ``tmp``: (address, a function that kills its processes)."""
    gcs, client = free_ports(2)
    ray_start(env, num_cpus, "--head", "--port", str(gcs), "--ray-client-server-port", str(client),
              "--temp-dir", tmp, "--include-dashboard", "false", *node_ports(),
              "--min-worker-port", str(worker_ports[0]), "--max-worker-port", str(worker_ports[1]))
    return f"127.0.0.1:{gcs}", lambda: kill(processes(lambda c: tmp in c or f":{gcs}" in c))
