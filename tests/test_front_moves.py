"""The front search's moves and stops added for issue 22, without a cluster (fast, ~3 s):

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_front_moves.py

a point that adds no hypervolume (a collapsed model's forget 0 with retain 0) is never on the front, so
its trial stops at the first rung or by early stop; the No-unlearn gap at the lowest learning rate is
filled at the range's lowest lr, then along that end (lighter way first); the Gaussian-process
move goes where a configuration's own hypervolume is expected to improve; the dose move puts a
configuration's last step where its trajectory reached forget 0; the knee step line-searches the method
parameter at the best knee's lr; and those two lead only while the front's forget-0 end holds most of it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.front.promotion import adds_nothing, front_depth, promote, reference
from sweeper.front.samplers import GapSampler, gp_maximum
from sweeper.front.searcher import DominatedStopper, FrontBook
from sweeper.store.records import STOP_MARKER
from sweeper.store.storage import Storage
from test_search import book_with

SENSES = ("min", "max")  # forget ROUGE down, retain ROUGE up
REF = (1.0, 0.0)


def test_a_point_that_adds_no_hypervolume_is_never_on_the_front(tmp_path):
    assert reference(("rouge_forget", "rouge_retain")) == REF and reference(("final_loss_forget", "rouge_retain")) is None
    assert adds_nothing((0.0, 0.0), REF, SENSES) and adds_nothing((1.0, 0.5), REF, SENSES)
    assert not adds_nothing((0.0, 0.01), REF, SENSES) and not adds_nothing((0.0, 0.0), None, SENSES)
    # Without a reference (0, 0) is the front's forget-0 end when nobody else reached forget 0 ...
    assert front_depth((0.0, 0.0), [(0.3, 0.9)], SENSES) < 0
    # ... with it, it is infinitely far behind, and stopped even as the first trial at its rung.
    assert front_depth((0.0, 0.0), [(0.3, 0.9)], SENSES, REF) == math.inf
    go_on, why = promote(math.inf, [math.inf], keep=0.5, margin=0.02)
    assert not go_on and "adds no hypervolume" in why

    book, (collapsed, fine) = book_with(("m", 0.1, [(10, 0.0, 0.0), (20, 0.0, 0.0)]), ("m", 0.9, [(10, 0.3, 0.9)]))
    assert book.ref == REF
    why = book.dominated(collapsed, margin=0.05)  # forget 0 can never be beaten by the margin: only the ref stops it
    assert why and "no evaluated point adds hypervolume" in why
    assert book.dominated(fine, margin=0.05) is None
    book.ref = None
    assert book.dominated(collapsed, margin=0.05) is None

    book, (first,) = book_with(("m", 0.1, []))
    book.fidelity = {"rungs": "auto", "keep": 0.5, "margin": 0.02}
    storage = Storage(str(tmp_path))
    trial = type("Trial", (), {"config": {"trial": first, "spec": {"steps": 30, "eval": {"every": 10}}}})
    DominatedStopper(book, storage, "run", min_steps=20, margin=0.05).on_trial_result(
        None, trial, {"step": 10, "rouge_forget": 0.0, "rouge_retain": 0.0})
    assert "adds no hypervolume" in storage.read_bytes(f"run/trials/{first}/{STOP_MARKER}").decode()


def _anchor_fill(lr_unit: float, finished_extra=()):
    """The first proposal after the start with the No-unlearn point (0.99, 1.0) beside configuration 1
    (c 0.5, at ``lr_unit``), which sits next to it on the front."""
    finished = [([0.5, lr_unit], [(10, 0.3, 0.9), (20, 0.1, 0.6)]), ([0.2, 0.9], [(10, 0.0, 0.2)]),
                *finished_extra]
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=0)
    return s.propose(finished, [], anchor=((0.99, 1.0), 1)), finished, s


def test_the_no_unlearn_gap_at_the_lowest_lr_is_filled_along_the_range_end():
    (u, why), _, _ = _anchor_fill(0.6)
    assert u == [pytest.approx(0.5), 0.0] and "the lowest lr of the range" in why  # straight to the end
    (u, why), _, _ = _anchor_fill(0.15)
    assert u == [pytest.approx(0.5), 0.0] and "the lowest lr of the range" in why
    # At the end already: c moves 0.2 the lighter way. Configuration 2 (c 0.2) starts heavier (forget 0,
    # retain 0.2 at its first evaluation) than configuration 1 (c 0.5), so larger c is lighter.
    (u, why), finished, s = _anchor_fill(0.0)
    assert u == [pytest.approx(0.7), 0.0] and "at the lowest lr, coordinate 1 moved +0.2" in why
    # the other way once that one is taken (a fresh sampler: its next proposal would be an improving move)
    u2, why2 = GapSampler(dims=2, senses=SENSES, seed=0, initial=0).propose(finished, [u], anchor=((0.99, 1.0), 1))
    assert u2 == [pytest.approx(0.3), 0.0] and "moved -0.2" in why2
    # where a larger c starts heavier, the smaller c comes first
    (u, _), _, _ = _anchor_fill(0.0, [([0.9, 0.5], [(10, 0.0, 0.1)])])
    assert u == [pytest.approx(0.3), 0.0]


def test_the_gaussian_process_move_goes_where_a_configurations_own_hypervolume_may_improve():
    units = [[0.1], [0.3], [0.5], [0.7], [0.9]]
    values = [1 - 4 * (u[0] - 0.6) ** 2 for u in units]
    best = gp_maximum(units, values, [], dims=1, seed=0)
    assert abs(best[0] - 0.6) < 0.1
    assert abs(gp_maximum(units, values, [[float(best[0])]], dims=1, seed=0)[0] - best[0]) > 0.05  # running: elsewhere
    # In the sampler: the configurations' own hypervolume against the reference; the odd proposals improve.
    finished = [([0.1, 0.5], [(10, 0.0, 0.1)]), ([0.4, 0.5], [(10, 0.1, 0.5)]), ([0.6, 0.5], [(10, 0.0, 0.9)]),
                ([0.9, 0.5], [(10, 0.6, 0.95)])]
    runs = []
    for _ in range(2):
        s = GapSampler(dims=2, senses=SENSES, seed=0, initial=3, ref=REF)
        s.proposed = 4  # the start and one fill done: an improving move is next
        runs.append(s.propose(finished, []))
    (u, why), again = runs
    assert "Gaussian-process expected improvement" in why and "configuration 3" in why
    assert (u, why) == again  # deterministic per search seed and history
    assert abs(u[0] - 0.6) < 0.2  # c near the best configuration's (every lr told is 0.5: no signal on lr)


def test_the_dose_move_puts_the_last_step_where_forget_reaches_its_ideal():
    """lr x steps is what moves the weights (to first order), so a trajectory's evaluated steps say which
    lr reaches forget 0 at the last step: the middle of the interval where it got there, or the lr its last
    two points extrapolate to; most promising retain first, and only above the front's end at forget 0."""
    from sweeper.grid.search_settings import Range
    lr = Range("lr", 3e-4, 3e-3, log=True)
    at = lr.unit(1e-3)
    crossed = ([0.8, at], [(10, 0.4, 0.95), (20, 0.0, 0.7), (30, 0.0, 0.6)])    # got there between 10 and 20
    on_way = ([0.9, at], [(10, 0.5, 0.98), (20, 0.3, 0.97), (30, 0.2, 0.96)])   # 0.1 per 10 steps: at 50
    collapsed = ([0.2, at], [(10, 0.0, 0.1), (20, 0.0, 0.1), (30, 0.0, 0.1)])   # there at once: no move
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF, lr_axis=(1, lr))
    moves = s._dosed([crossed, on_way, collapsed])
    assert len(moves) == 2
    (first, why1), (second, why2) = moves
    # on its way: retain extrapolated to step 50 is 0.94, above the crossed one's (0.95 + 0.7) / 2
    assert first[0] == 0.9 and lr.value(first[1]) == pytest.approx(1e-3 * 50 / 30, rel=1e-3)
    assert "configuration 2 on its way" in why1 and "lr x 1.67 to reach it at step 30" in why1
    assert second[0] == 0.8 and lr.value(second[1]) == pytest.approx(1e-3 * 15 / 30, rel=1e-3)
    assert "configuration 1 reached the forget ideal between steps 10 and 20" in why2
    # a front whose forget-0 end already has retain 0.85 leaves only the move that promises more
    better = ([0.5, 0.5], [(30, 0.0, 0.85)])
    assert [m[1] for m in s._dosed([crossed, on_way, collapsed, better])] == [why1]
    # at most twice the lr (beyond: a plateau, such as MUSE's VerbMem floor above 0), a promise above the
    # reference, and nothing without a searched lr or a bounded forget objective
    at_twice = ([0.9, at], [(20, 0.5, 0.98), (30, 0.375, 0.98)])  # 30 more steps: 2x
    assert lr.value(s._dosed([at_twice])[0][0][1]) == pytest.approx(2e-3, rel=1e-3)
    assert s._dosed([([0.9, at], [(20, 0.5, 0.98), (30, 0.49, 0.98)])]) == []
    assert s._dosed([([0.9, at], [(20, 0.2, 0.6), (30, 0.1, 0.2)])]) == []   # retain there: below 0
    assert GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF)._dosed([crossed, on_way]) == []
    assert GapSampler(dims=2, senses=SENSES, seed=0, initial=0, lr_axis=(1, lr))._dosed([crossed, on_way]) == []
    # a trajectory a sliver from the ideal: forget 0 there adds under MIN_DOSE_GAIN (0.01 x 0.3 here)
    sliver = ([0.9, at], [(20, 0.05, 0.92), (30, 0.01, 0.9)])
    assert s._dosed([([0.5, 0.5], [(30, 0.0, 0.6)]), sliver]) == []
    # in turn: after a fill, the dose move comes first
    s.proposed = 1
    u, why = s.propose([crossed, on_way, collapsed], [])
    assert why == why1 and u == pytest.approx(list(first))


def test_a_trajectory_above_the_fronts_forget_0_end_may_still_reach_it():
    """Unlearning lowers forget and retain together, so the most a trajectory at (x, y) can still add is
    (0, y): it goes on past a rung while y beats every retain reached at forget 0 so far."""
    from sweeper.front.promotion import ideal_end, may_reach_ideal
    others = [(0.3, 0.99), (0.0, 0.8), (0.004, 0.85), (0.1, 0.9)]
    assert ideal_end(others, REF, SENSES) == 0.85          # within the tolerance of 0 counts as 0
    assert ideal_end(others, None, SENSES) == -math.inf and ideal_end([(0.1, 0.9)], REF, SENSES) == -math.inf
    assert may_reach_ideal((0.5, 0.9), others, REF, SENSES)
    assert not may_reach_ideal((0.5, 0.85), others, REF, SENSES)   # no better than the end: ranked as before
    assert not may_reach_ideal((0.0, 0.95), others, REF, SENSES)   # there already: it is ranked as it stands
    assert not may_reach_ideal((0.5, 0.9), others, None, SENSES)   # unbounded objectives: no ideal known
    assert may_reach_ideal((0.5, 0.1), [], REF, SENSES) and not may_reach_ideal((0.5, 0.0), [], REF, SENSES)


def test_a_knee_step_line_searches_the_method_parameter_at_the_knees_lr():
    """Around the best knee (the retain expected where forget reaches 0), the method parameter moves at that
    knee's lr: first half the way to the range's end where the configurations' own hypervolume rises, then
    local steps (0.1, 0.05, ...) that way first, then the other way."""
    from sweeper.grid.search_settings import Range
    lr = Range("lr", 3e-4, 3e-3, log=True)
    at = lr.unit(1e-3)
    low = ([0.5, at], [(10, 0.5, 0.9), (20, 0.1, 0.55), (30, 0.0, 0.5)])    # knee: lr 1e-3 x 25/30, retain 0.525
    high = ([0.7, at], [(10, 0.5, 0.98), (20, 0.3, 0.95), (30, 0.15, 0.93)])  # knee: lr 1e-3 x 40/30, retain 0.91
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF, lr_axis=(1, lr))
    moves = s._knee_steps([low, high], taken=[])
    knee_lr = lr.unit(1e-3 * 40 / 30)
    assert [round(m[0][0], 4) for m in moves] == [0.85, 0.8, 0.75, 0.725, 0.7125, 0.6, 0.65, 0.675, 0.6875]
    assert all(m[0][1] == pytest.approx(knee_lr, abs=1e-3) for m in moves)  # the best knee's lr, every step
    assert "knee step (+0.15 on coordinate 1) from configuration 2 at its knee's lr 0.00133" in moves[0][1]
    assert "outside" not in moves[0][1]
    beyond = ([0.7, 0.95], [(10, 0.5, 0.98), (20, 0.4, 0.97), (30, 0.3, 0.96)])  # on its way: lr x 2, past the top
    assert "at its knee's lr 0.00535 (outside the range: 0.003)" in s._knee_steps([beyond], taken=[])[0][1]
    # where the configurations' own hypervolume falls with c, the line goes down first
    flipped = [([0.5, at], low[1]), ([0.3, at], high[1])]
    assert s._knee_steps(flipped, taken=[])[0][0][0] == pytest.approx(0.15)
    # a knee whose retain there adds nothing (a collapse on its way to forget 0) is not followed
    collapsing = ([0.7, at], [(10, 0.5, 0.3), (20, 0.3, 0.1), (30, 0.15, 0.05)])
    assert s._knee_steps([collapsing], taken=[]) == []
    # no searched lr or a single coordinate: no knee steps
    assert GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF)._knee_steps([low, high], []) == []
    assert GapSampler(dims=1, senses=SENSES, seed=0, initial=0, ref=REF, lr_axis=(0, lr))._knee_steps(
        [([at], low[1])], []) == []
    # in turn: the dose move first, then the knee step (the dose move is running)
    dose, why = s.propose([low, high], [])
    assert "dose move: configuration 2" in why
    assert "knee step (+0.15" in s.propose([low, high], [dose])[1]


def test_the_start_spreads_the_method_parameter_and_keeps_the_lr_in_the_middle():
    """A Latin hypercube over the box, with the learning rate squeezed into the middle fifth of its range:
    dose moves and the No-unlearn fill move an lr either way, a method parameter is learnt only by trying it."""
    from sweeper.grid.search_settings import Range
    lr = Range("lr", 3e-4, 3e-3, log=True)
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=5, ref=REF, lr_axis=(1, lr))
    start = [s.propose([], [])[0] for _ in range(5)]
    assert sorted(int(u[0] * 5) for u in start) == [0, 1, 2, 3, 4]    # the parameter: one per fifth
    assert sorted(int((u[1] - 0.4) / 0.04) for u in start) == [0, 1, 2, 3, 4]  # the lr: one per 0.04 in 0.4-0.6
    alone = GapSampler(dims=1, senses=SENSES, seed=0, initial=3, ref=REF, lr_axis=(0, lr))
    assert sorted(int(alone.propose([], [])[0][0] * 3) for _ in range(3)) == [0, 1, 2]  # the lr alone: its range


def test_dose_moves_and_knee_steps_lead_only_while_the_forget_0_end_holds_the_front():
    """A point at forget 0 spans the whole forget axis, so while the front's forget-0 end keeps half of the
    best retain seen, its hypervolume is there and dose moves and knee steps come first; on a trade-off
    front (forget 0 only by collapse, as NPO's on the authors twin) fills lead on every other turn."""
    from sweeper.grid.search_settings import Range
    lr = Range("lr", 3e-4, 3e-3, log=True)
    at = lr.unit(1e-3)
    knee = ([0.8, at], [(10, 0.4, 0.97), (20, 0.2, 0.9), (30, 0.0, 0.85)])      # forget 0 at retain 0.85
    light = ([0.9, 0.2], [(10, 0.6, 0.99), (20, 0.5, 0.98), (30, 0.45, 0.98)])
    collapse = ([0.2, at], [(10, 0.05, 0.5), (20, 0.0, 0.3), (30, 0.0, 0.2)])   # forget 0 at retain 0.3
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF, lr_axis=(1, lr))
    assert s._end_carries([knee, light]) and not s._end_carries([collapse, light])
    assert not s._end_carries([light]) and not GapSampler(dims=2, senses=SENSES)._end_carries([knee, light])
    # the forget-0 end holds the front: a knee-side move first even on a fill's (even) turn
    assert "largest front gap" not in s.propose([knee, light], [])[1]
    # a trade-off front: the fill on the even turn
    s = GapSampler(dims=2, senses=SENSES, seed=0, initial=0, ref=REF, lr_axis=(1, lr))
    assert "largest front gap" in s.propose([collapse, light], [])[1]
