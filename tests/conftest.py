"""Shared fixtures."""
import pytest
import torch


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


@pytest.fixture(scope="session")
def demo_storage(tmp_path_factory):
    """One storage for the slow tests whose grids fine-tune the smoke/demo target (tiny GPT-2 on the
    built-in authors, the same recipe): the first launch builds it, the others find it cached, as a
    researcher's second sweep would. Each test's run keeps a name of its own under it."""
    return tmp_path_factory.mktemp("demo_runs")


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One Ray for the slow tests whose launches can share it (``--address``), started once per session as
    a researcher's long-lived cluster would be: each such launch skips starting and stopping its own
    local Ray. Tests that kill a launcher's whole session keep their own."""
    import os

    from ray_cluster import start_head
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           # the head's workers import the tests' plugins (faulty_methods) as local Ray's would
           "PYTHONPATH": os.pathsep.join(p for p in (tests, os.path.dirname(tests), os.environ.get("PYTHONPATH")) if p)}
    env.pop("RAY_ADDRESS", None)
    address, stop = start_head(str(tmp_path_factory.mktemp("ray")), num_cpus=os.cpu_count() or 2, env=env)
    yield address
    stop()


@pytest.fixture(scope="session")
def s3_smoke_sweep(demo_storage, tmp_path_factory, ray_address):
    """The smoke grid killed, resumed and relaunched on moto's S3 server (tests/s3_smoke_sweep.py), once per
    session; the server stays up until the session ends so the tests read the store itself."""
    from object_store_server import s3_server
    from s3_smoke_sweep import sweep
    with s3_server() as s3:
        yield sweep(s3, demo_storage, tmp_path_factory.mktemp("s3_sweep"), ray_address)
