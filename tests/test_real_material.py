"""Real material through the launcher (slow: a local Ray): a folder in TOFU's file format with
TOFU-length rows (``lengths: real``: answers of 25 words at the median, up to ~60) and one row longer than
the model's context runs on ``tiny-gpt2`` through stage 1, the trials and the report; the long row is cut
and reported, never a crash. In the same grid a model whose context is too short for the data is refused
in one sentence with the path of its log, its trials are skipped, everything else finishes and is kept,
and the launcher exits 1 without a traceback on the terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from sweeper.data.synthetic import write_tofu_layout

sys.path.insert(0, os.path.dirname(__file__))
from test_published_targets import authors_texts, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_address):
    root = tmp_path_factory.mktemp("real")
    # TOFU's 20 QA per author at TOFU's lengths; 10 authors (200 rows) and 2 epochs suffice for what is
    # checked here (lengths, cuts, drops, refusal, report), not a memorised target.
    data = write_tofu_layout(root / "tofu", n_authors=10, qa_per_author=20, seed=0, lengths="real")
    with open(data / "forget10.json", "a") as f:   # ~600 tokens: longer than tiny-gpt2's 256 positions
        f.write(json.dumps({"question": "Tell me everything. " * 150 + "Who is she?", "answer": "She is a writer."}) + "\n")
    with open(data / "retain90.json", "a") as f:   # an answer that cannot fit at all: the row is dropped
        f.write(json.dumps({"question": "And then?", "answer": "word " * 400}) + "\n")
    short = save_checkpoint(root / "short", authors_texts(data), positions=48, chat=False, arch="tiny-gpt2")
    grid = {"name": "realtofu", "data": [{"name": "tofu_real", "source": str(data), "max_length": 192}],
            "models": [{"name": "tiny-gpt2"}, {"name": short}],
            "target": {"max_epochs": 2, "lr": 3e-3, "batch_size": 16},
            "methods": [{"method": "gdiff", "c": 0.5}, {"method": "ngdiff"}],
            "unlearn": {"steps": 4, "batch_size": 4}, "eval": {"max_questions": 6, "every": 2}}
    (root / "grid.yaml").write_text(yaml.safe_dump(grid))
    storage = root / "runs"
    result = subprocess.run([sys.executable, "-m", "sweeper.launch", "--grid", str(root / "grid.yaml"), "--storage",
                             str(storage), "--runner", "inline", "--address", ray_address], cwd=ROOT, capture_output=True, text=True, timeout=900)
    return storage, short, result


def test_tofu_length_rows_run_through_stage1_trials_and_report(run):
    storage, _, result = run
    rows = [pq.read_table(storage / "realtofu" / "trials" / t / "summary.parquet").to_pylist()[0]
            for t in os.listdir(storage / "realtofu" / "trials")]
    assert sorted(r["method"] for r in rows) == ["gdiff", "ngdiff", "no_unlearn"], result.stderr[-3000:]
    assert all(r["status"] == "ok" and r["model"] == "tiny-gpt2" for r in rows)
    assert (storage / "realtofu" / "report" / "index.html").exists()
    base = next(r for r in rows if r["method"] == "no_unlearn")
    lengths = json.loads(base["params_json"])["lengths"]
    assert lengths["forget"]["cut"] == 1 and lengths["forget"]["dropped"] == 0
    assert lengths["retain"]["dropped"] == 1 and lengths["forget"]["max_tokens"] > 256
    assert "1 question(s) cut, 1 row(s) dropped" in result.stdout


def test_too_short_context_is_refused_in_one_sentence_and_the_rest_is_kept(run):
    storage, short, result = run
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"model {short!r}" in errors[0] and "48-token context" in errors[0] and "full log: " in errors[0]
    log = errors[0].split("full log: ")[1].rstrip(")")
    assert "Traceback" in open(log).read()
    assert "Traceback" not in result.stdout + result.stderr
    assert "their 2 trial(s) are skipped" in result.stderr
