"""Build the smoke grid's No-unlearn target (tiny GPT-2 on the built-in authors, search_spaces/smoke.yaml's
recipe) into a storage folder, as stage 1 does, on one torch thread (a Ray task with one CPU runs it so):

    python tests/smoke_target.py /tmp/demo_runs

The test session runs it in the background while the fast tests run (tests/conftest.py, ``demo_storage``),
so the slow tests' launches find the target cached, as a researcher's second sweep would.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeper.grid.load import expand_grid  # noqa: E402
from sweeper.store.storage import Storage  # noqa: E402
from sweeper.unlearn.targets import ensure_target  # noqa: E402


def main(storage: str) -> None:
    torch.set_num_threads(1)
    spec = expand_grid(str(ROOT / "search_spaces" / "smoke.yaml"))[0]
    ensure_target(spec.model, spec.data, spec.target, Storage(storage), log=lambda _: None)


if __name__ == "__main__":
    main(sys.argv[1])
