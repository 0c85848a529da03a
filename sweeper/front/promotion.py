"""Steps as a fidelity: successive halving over the front, and the step budget it frees. No Ray.

A front search's trials are evaluated every ``eval.every`` steps. At each *rung* (by default every
evaluation step before the last) a trial continues only while its newest point could still move the
front of its model and data; the others are stopped (the stopping variant of ASHA: a stopped trial keeps
every point it measured, and they count for the front like any other). The freed steps buy new
configurations, since the budget counts full-length trials' worth of steps, not trials::

    depth = front_depth((0.5, 0.5), [(0.2, 0.9)], ("min", "max"))      # 0.4: beaten by 0.3 and 0.4
    keep, why = promote(0.3, [0.3, 0.0, -0.1], keep=0.5, margin=0.02)   # False: neither near the front nor
                                                                         # in the better half at the rung
    front_depth((0.0, 0.0), [], ("min", "max"), ref=(1.0, 0.0))         # inf: retain 0 adds no hypervolume

Instead of one scalar (ASHA's loss), a configuration is ranked by its *front depth*: how far its point is
behind the current front of every other configuration's points (the most by which a point at least as
good on both objectives beats it on one; <= 0 on the front). A trial continues when its depth is within
``margin`` of the front, or when it is in the best ``keep`` fraction of the configurations that have
reached the rung (ASHA's top 1/eta, over the front). A point that adds no hypervolume against the
reference (for ROUGE: forget 1, retain 0; a collapsed model's forget 0 with retain 0 is one) is never on
the front: such a trial stops at its first rung, since it would otherwise count as the front's forget-0 end.
A trial whose retain is above the front's end at forget 0 always continues (``may_reach_ideal``): it may still
get there above it, and intermediate points say little about where a trajectory ends.
"""
from __future__ import annotations

import math

import numpy as np

#: A first-objective value this close to its ideal (ROUGE forget 0) has reached it: one question in a few hundred.
IDEAL_TOLERANCE = 0.005

#: Settings of ``search: {fidelity: ...}``; ``rungs: auto`` = every evaluation step before the last.
DEFAULT_FIDELITY = {"rungs": "auto", "keep": 0.5, "margin": 0.02}


def rung_steps(fidelity: dict | None, steps: int, every: int | None) -> list[int]:
    """The rung steps of a trial of ``steps`` steps evaluated every ``every`` (none when fidelity is off)."""
    if not fidelity:
        return []
    rungs = fidelity["rungs"]
    if rungs == "auto":
        rungs = list(range(every, steps, every)) if every else []
    return sorted({int(r) for r in rungs if 0 < int(r) < steps})


def adds_nothing(point, ref, senses) -> bool:
    """Whether ``point`` adds no hypervolume against the reference ``ref`` (None: no reference): it is not
    strictly better than ``ref`` on both objectives (a forget-0 point whose retain ROUGE is 0 is such one)."""
    if ref is None:
        return False
    orient = np.array([1.0 if s == "min" else -1.0 for s in senses])
    return not bool(np.all(np.asarray(point, float) * orient < np.asarray(ref, float) * orient))


def reference(objectives) -> tuple | None:
    """The hypervolume reference of a search's objectives when both are bounded in [0, 1] (the report's:
    the worst end of each, so ROUGE's is (1, 0)), else None (the report then takes the worst value reached,
    which the search cannot know in advance)."""
    from analysis.front import BOUNDED
    from sweeper.grid.search_settings import SENSES
    if not objectives or not set(objectives) <= BOUNDED:
        return None
    return tuple(1.0 if SENSES[o] == "min" else 0.0 for o in objectives)


def ideal(ref) -> float:
    """The first objective's ideal for a [0, 1]-bounded pair with reference ``ref`` (its worst end): 0 for a
    minimised objective such as ROUGE forget, 1 for a maximised one."""
    return 1.0 - ref[0]


def ideal_end(points, ref, senses) -> float:
    """The best second objective (oriented: larger is better) among ``points`` whose first objective is at
    its ideal (0 for ROUGE forget: the front's forget-0 end); -inf when none is, or without a reference."""
    if ref is None:
        return -math.inf
    target, orient = ideal(ref), 1.0 if senses[1] == "max" else -1.0
    return max((orient * p[-1] for p in points if abs(p[-2] - target) <= IDEAL_TOLERANCE), default=-math.inf)


def may_reach_ideal(point, others, ref, senses) -> bool:
    """Whether a trajectory at ``point`` could still move the front's end at the first objective's ideal:
    its second objective beats every other point's there. Unlearning lowers both objectives as it goes (forget
    down, retain with it), so the best such a trajectory can still add is the ideal at its current retain;
    the trajectories that end best on a front cross to forget 0 late, from high retain, and rank low at the
    earlier rungs (benchmarks/RESULTS.md, issue 22)."""
    if ref is None or adds_nothing(point, ref, senses):
        return False
    orient = 1.0 if senses[1] == "max" else -1.0
    return abs(point[0] - ideal(ref)) > IDEAL_TOLERANCE and orient * point[1] > ideal_end(others, ref, senses)


def front_depth(point, others, senses, ref=None) -> float:
    """How far ``point`` is behind ``others`` (objectives' own units). Behind (> 0): some other point is at
    least as good on both objectives, and this is the most by which one such point beats it on one of them
    (so a point at forget 0 whose retain is 0.2 below another forget-0 point is 0.2 behind: forget ROUGE
    cannot drop below 0, so beating it by a margin on both objectives is impossible there). On the front
    (<= 0): minus the least by which it sticks out; -inf with no others. +inf when it adds no hypervolume
    against ``ref`` (``adds_nothing``): being on the front there is worth nothing."""
    if adds_nothing(point, ref, senses):
        return math.inf
    if not len(others):
        return -math.inf
    orient = np.array([1.0 if s == "min" else -1.0 for s in senses])
    z = np.asarray(others, float).reshape(-1, 2) * orient
    diff = np.asarray(point, float) * orient - z  # > 0 where the other point is better
    covers = np.all(diff >= 0, axis=1) & np.any(diff > 0, axis=1)
    if covers.any():
        return float(np.max(np.max(diff[covers], axis=1)))
    return float(np.max(np.min(diff, axis=1)))


def promote(depth: float, rung_depths, keep: float, margin: float) -> tuple[bool, str]:
    """(continue?, why) for a trial of ``depth`` at a rung, given the depths of every configuration that
    reached that rung (its own included): near the front, or in the best ``keep`` fraction of them."""
    ranked = sorted(rung_depths)
    slots = max(1, math.ceil(keep * len(ranked)))
    rank = ranked.index(depth) if depth in ranked else sum(d < depth for d in ranked)
    if depth == math.inf:  # such a trial is stopped even when it is the first at the rung
        return False, "its newest point adds no hypervolume (not better than the reference on both objectives)"
    if depth <= margin:
        return True, f"within {margin:g} of the front (depth {depth:.3f})"
    if rank < slots:
        return True, f"rank {rank + 1} of {len(ranked)} at the rung (top {slots}), depth {depth:.3f}"
    return False, (f"its newest point is {depth:.3f} behind the front (more than the margin {margin:g}) and it "
                   f"ranks {rank + 1} of {len(ranked)} configurations at the rung (only the best {slots} go on)")


def steps_used(statuses: dict, runs: dict, full: dict) -> float:
    """Full-length trials' worth of steps spent: a finished trial by the steps it ran, a running or
    unfinished one in full (``statuses``: trial -> status or None while it runs; ``runs``: trial -> steps
    run when finished; ``full``: trial -> its spec's steps)."""
    used = 0.0
    for t, status in statuses.items():
        if status in (None, "lost", "failed") or not full.get(t):  # a failed trial may be retried: in full
            used += 1.0
        else:
            used += min(1.0, max(runs.get(t, 0), 0) / full[t])
    return used
