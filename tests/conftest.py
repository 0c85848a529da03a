"""Shared fixtures. The fast tests run first; the slow tests' session resources (the smoke target, the Ray
head) warm up in the background meanwhile (``WarmUp``)."""
import os
import subprocess
import sys
import threading

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: the machine has 2 cores shared with other test processes, and
    more threads only spin against them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: The test modules whose gloo ranks share one spawn (tests/equivalence.py, ``spawn_jobs``): module -> rank worker.
GLOO_JOBS = {"test_distributed": ("ddp_worker", "worker"), "test_fsdp": ("fsdp_worker", "worker"),
             "test_field_methods_fsdp": ("test_field_methods_fsdp", "worker"), "test_lora": ("lora_worker", "both_worker")}


@pytest.fixture(scope="session")
def gloo_ranks(request, tmp_path_factory):
    """``{module: [rank 0's results, rank 1's]}`` for the modules of ``GLOO_JOBS`` whose tests this session runs
    (and that use this fixture), from two gloo ranks spawned once for all of them."""
    from equivalence import spawn_jobs
    wanted = {item.module.__name__ for item in request.session.items if "gloo_ranks" in getattr(item, "fixturenames", ())}
    return spawn_jobs({m: GLOO_JOBS[m] for m in sorted(wanted)}, 2, tmp_path_factory.mktemp("gloo"))


def pytest_collection_modifyitems(config, items):
    """The fast tests first: the slow ones' session resources warm up beside them (``warm_up``)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


class WarmUp:
    """The slow tests' shared session resources, started in the background when the session begins: the
    fast tests before them mostly use one core, and the other builds the smoke target and starts the Ray
    head meanwhile."""

    def __init__(self, tmp_path_factory):
        self.storage = tmp_path_factory.mktemp("demo_runs")
        self._build = subprocess.Popen([sys.executable, os.path.join(TESTS, "smoke_target.py"), str(self.storage)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ray_dir, self._ray, self._ray_error = str(tmp_path_factory.mktemp("ray")), None, None
        self._ray_thread = threading.Thread(target=self._start_ray, name="ray-head", daemon=True)
        self._ray_thread.start()

    def _start_ray(self) -> None:
        from ray_cluster import start_head
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               # the head's workers import the tests' plugins (faulty_methods) as local Ray's would
               "PYTHONPATH": os.pathsep.join(p for p in (TESTS, os.path.dirname(TESTS), os.environ.get("PYTHONPATH")) if p)}
        env.pop("RAY_ADDRESS", None)
        try:
            self._ray = start_head(self._ray_dir, num_cpus=os.cpu_count() or 2, env=env)
        except Exception as e:  # noqa: BLE001 -- raised in the first test that asks for the head
            self._ray_error = e

    def demo_storage(self):
        output = self._build.communicate()[0]
        assert self._build.returncode == 0, f"building the smoke target failed:\n{output[-3000:]}"
        return self.storage

    def ray_address(self) -> str:
        self._ray_thread.join()
        if self._ray_error is not None:
            raise self._ray_error
        return self._ray[0]

    def stop(self) -> None:
        self._ray_thread.join()
        if self._ray is not None:
            self._ray[1]()
        if self._build.poll() is None:
            self._build.kill()
            self._build.wait()


@pytest.fixture(scope="session", autouse=True)
def warm_up(request, tmp_path_factory):
    """At the session's first test, when any selected test uses them: the smoke target and the Ray head."""
    users = {"demo_storage", "ray_address", "s3_smoke_sweep"}
    if not any(users & set(getattr(item, "fixturenames", ())) for item in request.session.items):
        yield None
        return
    warm = WarmUp(tmp_path_factory)
    yield warm
    warm.stop()


@pytest.fixture(scope="session")
def demo_storage(warm_up):
    """One storage for the slow tests whose grids use the smoke/demo target (tiny GPT-2 on the built-in
    authors, the same recipe): built in the background (``WarmUp``, tests/smoke_target.py), then found
    cached by every launch, as a researcher's second sweep would. Each test's run keeps a name of its own
    under it. (Stage 1 fine-tuning inside a Ray task is run by the launches with targets of their own:
    tests/test_real_material.py, tests/test_multinode.py.)"""
    return warm_up.demo_storage()


@pytest.fixture(scope="session")
def ray_address(warm_up):
    """One Ray for the slow tests whose launches can share it (``--address``), started once per session (in
    the background, ``WarmUp``) as a researcher's long-lived cluster would be: each such launch skips
    starting and stopping its own local Ray. Tests that kill a launcher's whole session keep their own."""
    return warm_up.ray_address()


@pytest.fixture(scope="session")
def s3_smoke_sweep(demo_storage, tmp_path_factory, ray_address):
    """The smoke grid killed, resumed and relaunched on moto's S3 server (tests/s3_smoke_sweep.py), once per
    session; the server stays up until the session ends so the tests read the store itself."""
    from object_store_server import s3_server
    from s3_smoke_sweep import sweep
    with s3_server() as s3:
        yield sweep(s3, demo_storage, tmp_path_factory.mktemp("s3_sweep"), ray_address)
