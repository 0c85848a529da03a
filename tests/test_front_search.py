"""Front search on a real Ray (slow): a three-seed search killed half-way resumes from its proposal log and
finished trials, running no trial twice, runs to its budget, writes the same Parquet as a grid plus its
proposals, and the report draws its front with intervals (one run serves all of it); a clearly dominated
configuration is stopped early and recorded."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from test_fault_tolerance import kill_session, launch, launcher_env, summaries

ROOT = Path(__file__).resolve().parent.parent
BASE = str(ROOT / "search_spaces" / "demo" / "base.yaml")
pytestmark = pytest.mark.slow


#: The smoke grid's fine-tune recipe, not the demo's faster one: these tests share the session's smoke target
#: (tests/conftest.py), and their settings (c, lr, margins) were chosen on it.
SMOKE_TARGET = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())["target"]


def grid(tmp_path: Path, name: str, **over) -> Path:
    """The demo task on tiny GPT-2 (the smoke target), 20 unlearning steps evaluated every 10, on 10 questions."""
    doc = {"name": name, "include": [BASE], "models": [{"name": "tiny-gpt2", "workers": 1, "cpus_per_worker": 1}],
           "target": SMOKE_TARGET, "unlearn": {"steps": 20}, "eval": {"max_questions": 10, "every": 10},
           "lr_modes": ["static"]}
    doc.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(path: Path, storage: Path, log: Path, *args: str) -> int:
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(path), "--storage", str(storage), *args]
    return launch(cmd, launcher_env(), log)


@pytest.fixture(scope="module")
def storage(demo_storage):
    """The session's demo storage (tests/conftest.py): the tests share the No-unlearn target built once."""
    return demo_storage


def test_three_seed_search_killed_resumed_to_budget_and_reported(storage, tmp_path, ray_address):
    """A three-seed search (2 configurations x 3 seeds) is killed, with its whole local Ray, once 3 trials
    have finished; the same command (on the session's Ray) runs it to its budget without running a finished
    trial again, goes on with the proposal log where it stopped, and reports the front with intervals."""
    path = grid(tmp_path, "front3", seeds=[0, 1, 2],
                search={"kind": "front", "budget": 6, "sampler": "gap", "early_stop": False},
                methods=[{"method": "gdiff", "c": {"range": [0.3, 0.9]}}], unlearn={"steps": 20, "lr": [1.2e-3]})
    trials = storage / "front3" / "trials"
    cmd = [sys.executable, "-m", "sweeper.launch", "--grid", str(path), "--storage", str(storage), "--no-report"]
    with open(tmp_path / "first.txt", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=launcher_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + 300
            while len(list(trials.glob("*gdiff*/_SUCCESS"))) < 3 and time.time() < deadline:
                assert proc.poll() is None, (tmp_path / "first.txt").read_text()[-3000:]
                time.sleep(0.2)
        finally:
            kill_session(proc.pid)
            proc.wait()
    first = {p.parent.name: p.parent.joinpath("summary.parquet").stat().st_mtime_ns
             for p in trials.glob("*gdiff*/_SUCCESS")}
    assert 3 <= len(first) < 6
    logged = pq.read_table(storage / "front3" / "search" / "proposals.parquet").to_pylist()

    assert run(path, storage, tmp_path / "log.txt", "--address", ray_address) == 0, \
        (tmp_path / "log.txt").read_text()[-3000:]
    out = (tmp_path / "log.txt").read_text()
    assert "front search: 1 study, 6 trials at most" in out and "6 ok" in out
    done = {p.parent.name: p.parent.joinpath("summary.parquet").stat().st_mtime_ns
            for p in trials.glob("*gdiff*/_SUCCESS")}
    assert len(done) == 6 and all(done[t] == first[t] for t in first)  # finished trials were not run again
    for t in done:
        assert pq.read_table(trials / t / "steps.parquet").column("step").to_pylist() == list(range(1, 21)), t
    rows = [r for r in summaries(storage / "front3").values() if r["method"] == "gdiff"]
    assert len(rows) == 6 and {r["search"] for r in rows} == {"front:gap"} and all(r["finished_at"] for r in rows)
    assert sorted(r["seed"] for r in rows) == [0, 0, 1, 1, 2, 2]
    proposals = pq.read_table(storage / "front3" / "search" / "proposals.parquet").to_pylist()
    assert proposals[:len(logged)] == logged  # the log went on where it stopped
    assert len(proposals) == 2 and all(len(p["trial_ids"]) == 3 for p in proposals)
    assert {t for p in proposals for t in p["trial_ids"]} == {r["trial_id"] for r in rows}

    from analysis.front import evaluation_points, seed_means
    from analysis.load import load_run
    from analysis.tables import paper_table
    data = load_run(str(storage / "front3"))
    means = seed_means(evaluation_points(data), "rouge_forget", "rouge_retain")
    searched = means[means["method"] == "gdiff"]
    assert len(searched) == 4 and (searched["seeds"] == 3).all()  # 2 configurations x steps 10, 20
    assert searched["rouge_retain_err"].notna().all()               # 95% intervals over the seeds
    assert "±" in paper_table(data.summaries)
    report = storage / "front3" / "report"
    assert (report / "pareto.png").exists() and (report / "search_cost.png").exists()
    assert "Search cost" in (report / "index.html").read_text()


def test_a_dominated_configuration_is_stopped_early_and_recorded(storage, tmp_path, ray_address):
    """One trial at a time, each inline in a Ray task whose reports its Tune trial process relays to the
    scheduler: GDiff (c = 0.55) reaches forget 0.0 / retain 0.75; then a rule that only ascends the retain
    loss sits near (0.06, 0.05) from step 10 on, dominated by more than the margin, or at retain 0.000, no
    better than the reference: which one depends on float32 sums that differ across CPUs (both reasons'
    wording: tests/test_search.py, tests/test_front_moves.py). (Under DDP, rank 0 reads the stop marker and
    tells every rank: tests/test_distributed.py.)"""
    path = grid(tmp_path, "stopper", plugins=["faulty_methods"],
                models=[{"name": "tiny-gpt2", "workers": 1, "cpus_per_worker": 1}],
                search={"kind": "grid", "early_stop": {"min_steps": 10, "margin": 0.02}},
                methods=[{"method": "gdiff", "c": 0.5483}, {"method": "retain_ascent"}],
                unlearn={"steps": 30, "lr": [1.248e-3]}, eval={"max_questions": 20, "every": 10})
    assert run(path, storage, tmp_path / "log.txt", "--max-concurrent", "1", "--no-report", "--address", ray_address) == 0
    rows = {r["method"]: r for r in summaries(storage / "stopper").values()}
    assert rows["gdiff"]["status"] == "ok" and rows["gdiff"]["steps"] == 30
    stopped = rows["retain_ascent"]
    assert stopped["status"] == "stopped_dominated" and stopped["steps"] < 30, stopped
    why = stopped["stop_reason"]
    assert ("dominated" in why and rows["gdiff"]["trial_id"] in why) or why.startswith("no evaluated point adds"), why
    assert stopped["rouge_forget"] is not None  # its last evaluated point is kept
    assert "1 stopped_dominated" in (tmp_path / "log.txt").read_text()
