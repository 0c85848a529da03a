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


@pytest.fixture(scope="session")
def demo_storage(tmp_path_factory):
    """One storage for the slow tests whose grids fine-tune the smoke/demo target (tiny GPT-2 on the
    built-in authors, the same recipe): the first launch builds it, the others find it cached, as a
    researcher's second sweep would. Each test's run keeps a name of its own under it."""
    return tmp_path_factory.mktemp("demo_runs")
