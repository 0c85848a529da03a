"""Steps as a fidelity and proposals by dominance, without a cluster (fast): the front depth and the
promotion rule at a rung, the stopper writing a rung's stop marker, the searcher spending what stopped
trials did not run on further configurations, and the gap sampler's step away from a dominated neighbour."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.front.promotion import front_depth, promote, rung_steps, steps_used
from sweeper.front.samplers import GapSampler, OptunaSampler
from sweeper.front.searcher import DominatedStopper, FrontSearcher
from sweeper.front.studies import load_search
from sweeper.grid.search_settings import search_settings
from sweeper.store.records import STOP_MARKER
from sweeper.store.storage import Storage
from test_search import book_with, finish, front_grid

SENSES = ("min", "max")  # forget ROUGE down, retain ROUGE up


def test_front_depth_is_how_far_a_point_is_behind_the_front():
    assert front_depth((0.5, 0.5), [(0.2, 0.9)], SENSES) == pytest.approx(0.4)    # beaten by 0.3 and 0.4
    assert front_depth((0.5, 0.5), [(0.2, 0.6), (0.45, 0.95)], SENSES) == pytest.approx(0.45)
    assert front_depth((0.0, 0.0), [(0.0, 0.185)], SENSES) == pytest.approx(0.185)  # forget 0 cannot improve
    assert front_depth((0.1, 0.5), [(0.2, 0.9)], SENSES) == pytest.approx(-0.1)    # on the front, by 0.1
    assert front_depth((0.1, 0.5), [], SENSES) == -math.inf


def test_promotion_keeps_the_near_front_and_the_best_fraction_at_a_rung():
    assert promote(0.01, [0.3, 0.01, 0.2], keep=0.34, margin=0.02)[0]          # near the front
    go_on, why = promote(0.2, [0.3, 0.1, 0.2, 0.4], keep=0.5, margin=0.02)     # 2nd of 4, top 2 go on
    assert go_on and "rank 2 of 4" in why
    go_on, why = promote(0.3, [0.3, 0.1, 0.2, 0.4], keep=0.5, margin=0.02)
    assert not go_on and "0.300 behind the front" in why and "ranks 3 of 4" in why
    assert promote(0.9, [0.9], keep=0.5, margin=0.0)[0]                        # the first at a rung goes on


def test_rungs_budget_and_settings():
    assert rung_steps({"rungs": "auto"}, 30, 10) == [10, 20] and rung_steps(None, 30, 10) == []
    assert rung_steps({"rungs": [25, 5, 40]}, 30, 10) == [5, 25]
    used = steps_used({"a": "ok", "b": "stopped_dominated", "c": None, "d": "failed"},
                      {"a": 30, "b": 10}, {"a": 30, "b": 30, "c": 30, "d": 30})
    assert used == pytest.approx(1 + 1 / 3 + 1 + 1)  # running and failed trials count in full
    front = search_settings({"search": {"kind": "front"}})[0]
    assert front["fidelity"] == {"rungs": "auto", "keep": 0.5, "margin": 0.02}
    assert search_settings({"search": {"kind": "front", "early_stop": False}})[0]["fidelity"] is None
    assert search_settings({"search": {"kind": "front", "fidelity": False}})[0]["fidelity"] is None
    for bad in ({"keep": 0}, {"rungs": [0]}, {"margin": -1}, {"eta": 3}):
        assert "search: fidelity" in search_settings({"search": {"kind": "front", "fidelity": bad}})[1][0], bad


def test_a_trial_behind_the_front_at_a_rung_is_stopped_there(tmp_path):
    """Two configurations reach step 10: (0, 0.9) and (0.5, 0.5). With keep 0.5 only the better goes
    on; the other gets the stop marker at the rung, long before early stop's min_steps (20). A third at
    (0.6, 0.95), above the front's end at forget 0, goes on although it ranks last: it may still get there."""
    storage = Storage(str(tmp_path))
    book, (good, bad, high) = book_with(("m", 0.5, [(10, 0.0, 0.9)]), ("m", 0.1, []), ("m", 0.9, []))
    book.fidelity = {"rungs": "auto", "keep": 0.5, "margin": 0.02}

    def trial(tid):
        return type("Trial", (), {"config": {"trial": tid, "spec": {"steps": 30, "eval": {"every": 10}}}})
    stopper = DominatedStopper(book, storage, "run", min_steps=20, margin=0.05)
    stopper.on_trial_result(None, trial(good), {"step": 10, "rouge_forget": 0.0, "rouge_retain": 0.9})
    assert not storage.exists(f"run/trials/{good}/{STOP_MARKER}")
    stopper.on_trial_result(None, trial(bad), {"step": 10, "rouge_forget": 0.5, "rouge_retain": 0.5})
    reason = storage.read_bytes(f"run/trials/{bad}/{STOP_MARKER}").decode()
    assert reason.startswith("stopped at rung 10") and "ranks 2 of 2" in reason
    stopper.on_trial_result(None, trial(high), {"step": 10, "rouge_forget": 0.6, "rouge_retain": 0.95})
    assert not storage.exists(f"run/trials/{high}/{STOP_MARKER}")
    book.fidelity["keep"] = 1.0  # every configuration at the rung goes on: no stop at the rung
    book2, (_, other) = book_with(("m", 0.5, [(10, 0.2, 0.9)]), ("m", 0.1, []))
    book2.fidelity = book.fidelity
    DominatedStopper(book2, storage, "run2", 20, 0.05).on_trial_result(
        None, trial(other), {"step": 10, "rouge_forget": 0.5, "rouge_retain": 0.5})
    assert not storage.exists(f"run2/trials/{other}/{STOP_MARKER}")


def test_steps_a_stopped_trial_did_not_run_buy_more_configurations(tmp_path):
    """A budget of 2 full trials (30 steps each): every trial is stopped at step 10, so the searcher goes on
    proposing while one more full trial fits (1/3 each: four configurations), then finishes. Without
    fidelity the same budget is two configurations, stopped or not."""
    storage = Storage(str(tmp_path / "runs"))
    for fidelity, want in (({}, 4), (False, 2)):
        search = {"kind": "front", "budget": 2, "initial": 2, **({"fidelity": False} if fidelity is False else {})}
        run = f"fs{want}"
        searcher = FrontSearcher(load_search(front_grid(tmp_path, name=run, search=search)), storage, run,
                                 {"storage": storage.uri})
        n = 0
        while (config := searcher.suggest(f"t{n}")) not in ("FINISHED", None):
            finish(storage, config, stop_at=10)
            searcher.on_trial_complete(f"t{n}")
            n += 1
        assert config == "FINISHED" and n == want, (fidelity, n)
    log = storage.read_table("fs4/search/proposals.parquet").to_pylist()
    assert len(log) == 4 and len({r["unit_json"] for r in log}) == 4


def test_the_gap_sampler_steps_away_from_a_neighbour_its_front_configuration_dominates():
    """Configuration 1 (c 0.5) reaches (0.2, 0.9) and dominates configuration 2 (c 0.3, (0.4, 0.7));
    configuration 3 (c 0.9) is on the front at (0.8, 1.0). The first proposal fills the 1-3 gap; the first
    improving move after the Gaussian-process one (tests/test_front_moves.py) steps from configuration 1
    away from 2 (half their distance), the same for the same seed."""
    finished = [([0.5, 0.5], [(10, 0.3, 0.95), (20, 0.2, 0.9)]), ([0.3, 0.5], [(10, 0.4, 0.7)]),
                ([0.9, 0.1], [(10, 0.8, 1.0)])]
    runs = []
    for _ in range(2):
        s = GapSampler(dims=2, senses=SENSES, seed=3, initial=0)
        taken = [u for u, _ in finished] + [[0.7, 0.3]]
        runs.append([s.propose(finished, []), _listed(s._improvements(finished, [np.asarray(u) for u in taken])[0])])
    (fill, fill_why), (step, step_why) = runs[0]
    assert fill == [pytest.approx(0.7), pytest.approx(0.3)] and "largest front gap" in fill_why
    assert step == [pytest.approx(0.6), pytest.approx(0.5)]
    assert "away from configuration 2, which configuration 1 dominates" in step_why
    assert runs[0] == runs[1]  # deterministic per search seed


def _listed(move):
    u, why = move
    return [float(x) for x in u], why


def test_optuna_sees_every_evaluated_point_of_a_configuration():
    s = OptunaSampler(dims=1, senses=SENSES, seed=0, initial=1)
    unit, _ = s.propose([], [])
    s.observe(unit, [(10, 0.6, 0.9), (20, 0.3, 0.8), (30, 0.1, 0.6)])
    values = sorted(tuple(t.values) for t in s.study.trials)
    assert values == [(0.1, 0.6), (0.3, 0.8), (0.6, 0.9)]
    assert all(t.params == {"u0": unit[0]} for t in s.study.trials)


def test_a_repeatable_search_proposes_the_same_whatever_finishes_first(tmp_path):
    """``repeatable: true``: proposal j sees exactly the first j - 1 configurations (two in flight), so the
    log is the same whether trials finish oldest first or newest first, though Tune has room for three;
    without it the order of completion changes the proposals (issue 22: a SimNPO search reran 0.79 -> 1.21)."""
    logs = {}
    for repeatable in (True, False):
        for order in ("oldest", "newest"):
            storage, run = Storage(str(tmp_path / f"runs-{repeatable}-{order}")), "fs"
            search = {"kind": "front", "budget": 7, "initial": 2, "repeatable": repeatable,
                      **({} if repeatable else {"early_stop": False})}
            searcher = FrontSearcher(load_search(front_grid(tmp_path, name=run, search=search)), storage, run,
                                     {"storage": storage.uri})
            running, n, most = [], 0, 0
            while True:
                while len(running) < 3 and (config := searcher.suggest(f"t{n}")) not in ("FINISHED", None):
                    running.append((f"t{n}", config))
                    n += 1
                most = max(most, len(running))
                if not running:
                    break
                tune_id, config = running.pop(0 if order == "oldest" else -1)
                finish(storage, config)
                searcher.on_trial_complete(tune_id)
            logs[repeatable, order] = [r["unit_json"] for r in storage.read_table(f"{run}/search/proposals.parquet").to_pylist()]
            assert most == (2 if repeatable else 3), (repeatable, order)
    assert len(logs[True, "oldest"]) == 7 and logs[True, "oldest"] == logs[True, "newest"]
    assert logs[False, "oldest"] != logs[False, "newest"]


def test_repeatable_settings():
    settings, problems = search_settings({"search": {"kind": "front", "repeatable": True}})
    assert (settings["repeatable"], settings["early_stop"], settings["fidelity"], problems) == (2, None, None, [])
    assert search_settings({"search": {"kind": "front", "repeatable": 4}})[0]["repeatable"] == 4
    assert search_settings({"search": {"kind": "front"}})[0]["repeatable"] is None
    for bad, says in (({"repeatable": 0}, "must be true, false or a positive integer"),
                      ({"repeatable": True, "sampler": "optuna"}, "needs sampler: gap"),
                      ({"repeatable": True, "fidelity": {"keep": 0.5}}, "needs fidelity: false"),
                      ({"repeatable": True, "early_stop": {"margin": 0.1}}, "needs early_stop: false")):
        assert says in " ".join(search_settings({"search": {"kind": "front", **bad}})[1]), bad


def test_the_plan_names_the_search_seed_and_a_repeatable_search(tmp_path, capsys):
    from sweeper.cluster.plan import print_search_plan
    for search, says in (({"seed": 3}, "sampler gap (seed 3), objectives"),
                         ({"repeatable": True}, "sampler gap (seed 0; repeatable, 2 configurations in flight)")):
        print_search_plan(load_search(front_grid(tmp_path, search={"kind": "front", "budget": 6, **search})),
                          conc=2, cpus=2, gpus=0)
        assert says in capsys.readouterr().out
