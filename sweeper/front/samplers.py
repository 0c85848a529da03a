"""Where a front search tries next: the samplers behind ``search: {sampler: gap | optuna | gp}``. No Ray.

A sampler works in the unit cube of a study's ranges (``sweeper.front.studies.Range.unit``). It is asked for
the next configuration with what the study knows so far: the finished configurations with their
evaluated points ((step, x, y) at every evaluation step, seed-averaged; (x, y) is accepted too) and the
configurations still running::

    sampler = make_sampler("gap", dims=2, senses=("min", "max"), seed=0, initial=3)
    unit, reason = sampler.propose(finished=[([0.2, 0.5], [(0.9, 0.8), (0.6, 0.7)])], pending=[[0.8, 0.1]])

``gap`` (ours): a Latin-hypercube start (the learning rate, when searched beside other parameters, in
the middle fifth of its range: dose moves and the No-unlearn fill move an lr either way from any
trajectory, while a method parameter is learnt only by trying it). Then, while the front's forget-ideal
end keeps at least ``END_SHARE`` of the best retain seen (``_end_carries``: a point at forget 0 spans the whole forget
axis; on the authors twin GDiff's at retain 0.96 carries 0.96 of the unit square), a dose move, else a
knee step, else a fill or an improving move (these two first in turn); otherwise (a front whose
hypervolume lies in the trade-off, such as NPO's on the authors twin) a fill on every other proposal and,
between fills, a dose move, a knee step and an improving move in turn. Each kind falls back on the others:

* *fill*: the midpoint between the two configurations whose front points bound the largest empty
  rectangle of the current front, in objectives scaled to the points' spread. When the learning rate is
  searched, the study's No-unlearn point joins the front as its ``lr -> 0`` end (``anchor``): every method
  starts there, so the gap between it and the front's nearest configuration is filled by that
  configuration at the lowest learning rate of the range (the lightest unlearning the box allows; already
  there, 0.2 along the end on each other coordinate, the way that makes the first evaluated points
  lighter first).
* *dose*: unlearning with a constant lr goes about as far in s steps at lr as in
  s * k steps at lr / k, so a trajectory's evaluated steps say which lr brings forget to its ideal (ROUGE
  0) at the last step: a configuration that got there between two evaluations is run again at the lr that
  lands the last step in that interval, one still on its way at the lr its last two points extrapolate to;
  the one whose retain there promises most first, only above the front's best retain at forget 0 and only
  where that point would add at least ``MIN_DOSE_GAIN`` of hypervolume (a trajectory already a sliver
  from the ideal is not worth a configuration).
* *knee step*: around the configuration with the best such *knee*, each other coordinate moved at that
  knee's lr (the dose move then corrects a step that misses the ideal): first half the way to the range's
  end in the direction where the configurations' own hypervolume rises (a line search: the best knees of
  GDiff lie next to the largest c that still forgets), then local steps of 0.1, 0.05, ... of the unit
  cube that way, then the other way.
* *improve*: first where a Gaussian process over the unit cube expects the largest improvement of a
  configuration's own hypervolume (its points' area against the objectives' reference: one configuration
  that reaches forget 0 at high retain carries most of a front's hypervolume; Optuna's ``GPSampler``,
  skipped without Optuna); then, where the front is weakest by dominance: when a configuration on the front dominates a
  neighbouring configuration (every point of the neighbour is beaten by one of its points), a step from
  it away from the dominated one (half their distance); else a local step (a coordinate at a time, 0.1
  of the unit cube, halved on each return) around the configuration whose points add the most
  hypervolume to the front (both kinds: the configurations adding most hypervolume first).

Every evaluated point counts (a configuration's steps 10, 20 and 30 are three candidate front points),
so a configuration stopped at a rung (``sweeper.front.promotion``) still shapes the front. The proposals
depend only on the search seed and the points seen, never on a random draw after the start.
``optuna``: Optuna's multi-objective TPE sampler (ask/tell): each configuration's final point is told to
its trial, and every earlier evaluated point is added as a completed trial with the same parameters;
``gp``: Optuna's Gaussian-process sampler (log expected hypervolume improvement), fed the same.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from sweeper.front.promotion import IDEAL_TOLERANCE, ideal, ideal_end

#: Two configurations closer than this (max-norm in the unit cube) count as the same point.
SAME_POINT = 0.02
#: A dose move must promise at least this much hypervolume (forget x retain, both in [0, 1]).
MIN_DOSE_GAIN = 0.01
#: The start's learning rates lie in this middle fraction of the lr range (unit coordinates 0.4-0.6).
START_LR_WIDTH = 0.2
#: Dose moves and knee steps lead while the retain at the front's forget-ideal end is this share of the best.
END_SHARE = 0.5
#: The gap sampler's Gaussian-process move needs Optuna (the ``[search]`` extra); without it, it is skipped.
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None


class GapSampler:
    """Fill the largest gap of the front and improve it where a neighbour dominates, in turn; start from a
    Latin hypercube of ``initial`` points (see the module docstring)."""

    name = "gap"
    #: The first local step around a configuration (unit cube); halved each time it is stepped around again.
    STEP = 0.1

    def __init__(self, dims: int, senses, seed: int = 0, initial: int = 3, ref=None, lr_axis=None):
        """``lr_axis``: (index, Range) of the learning-rate coordinate when it is searched, else None."""
        from scipy.stats import qmc
        self.senses, self.dims, self.seed, self.ref, self.lr_axis = senses, dims, seed, ref, lr_axis
        self.start = qmc.LatinHypercube(d=dims, seed=seed).random(initial) if dims else np.zeros((0, 0))
        if lr_axis is not None and dims >= 2:  # the lr in the middle of its range (module docstring)
            i = lr_axis[0]
            self.start[:, i] = 0.5 + (self.start[:, i] - 0.5) * START_LR_WIDTH
        self.explore = qmc.Sobol(d=dims, seed=seed + 1).random(64) if dims else np.zeros((0, 0))
        self.proposed = 0

    def propose(self, finished, pending, anchor=None) -> tuple[list[float], str] | None:
        """(unit coordinates, why) of the next configuration, or None to wait for running ones.

        ``anchor``: (the No-unlearn point, the index of the lr coordinate), or None."""
        taken = [np.asarray(u, float) for u, _ in finished] + [np.asarray(u, float) for u in pending]
        if self.proposed < len(self.start):
            return self._take(self.start[self.proposed], "initial Latin-hypercube point")
        if not finished:
            return None
        # Each kind of move falls back on the others (module docstring); built lazily, since the improving
        # moves fit a Gaussian process.
        fills = lambda: [(u, f"largest front gap ({area:.3g} of the scaled objective square) {why}")  # noqa: E731
                         for area, u, why in self._gaps(finished, anchor)]
        improve = lambda: self._modelled(finished, pending) + self._improvements(finished, taken)  # noqa: E731
        dose, knee = (lambda: self._dosed(finished)), (lambda: self._knee_steps(finished, taken))
        turn = self.proposed - len(self.start)
        if self._end_carries(finished):  # the front's hypervolume is at its forget-ideal end: work there
            plan = [dose, knee, *((fills, improve) if turn % 2 == 0 else (improve, fills))]
        else:  # a trade-off front: fill on even turns; dose, knee and improve in turn on odd ones
            odd = [dose, knee, improve]
            shift = (turn // 2) % 3
            plan = [fills, *odd[shift:], *odd[:shift]] if turn % 2 == 0 else [*odd[shift:], *odd[:shift], fills]
        for moves in plan:
            for u, why in moves():
                if not _near(u, taken):
                    return self._take(u, why)
        far = max(self.explore, key=lambda u: min((np.max(np.abs(u - t)) for t in taken), default=1.0))
        return self._take(far, "no open front gap left: the point farthest from every tried configuration")

    def replay(self, unit) -> None:
        """Count a proposal made before a resume (its coordinates come from the proposal log)."""
        self.proposed += 1

    def observe(self, unit, points) -> None:
        """Nothing to do: the gap sampler reads the whole history at every proposal."""

    def _take(self, u, why: str):
        self.proposed += 1
        return [float(x) for x in np.clip(u, 0.0, 1.0)], why

    def _scaled(self, finished, anchor=None):
        """(z: every point scaled to [0, 1] with both objectives minimised, owner of each point, front
        indices sorted along the first objective). Owner -1 is the No-unlearn anchor."""
        pts, owner = [], []
        for i, (_, points) in enumerate(finished):
            for p in points:
                pts.append(tuple(p)[-2:])  # (step, x, y) or (x, y)
                owner.append(i)
        if not pts:
            return None
        if anchor is not None:
            pts.append(anchor[0])
            owner.append(-1)
        z = np.asarray(pts, float) * [1 if s == "min" else -1 for s in self.senses]  # both minimised
        span = z.max(axis=0) - z.min(axis=0)
        z = (z - z.min(axis=0)) / np.where(span > 0, span, 1.0)
        from analysis.pareto import _non_dominated
        front = np.flatnonzero(_non_dominated(z[:, 0], z[:, 1]))
        return z, np.asarray(owner), front[np.argsort(z[front, 0], kind="stable")]

    def _gaps(self, finished, anchor=None):
        """(area, midpoint, why) for each pair of neighbouring front points, largest area first."""
        scaled = self._scaled(finished, anchor)
        if scaled is None:
            return []
        z, owner, front = scaled
        units = [np.asarray(u, float) for u, _ in finished]
        gaps = []
        for a, b in zip(front[:-1], front[1:]):
            area = float((z[b, 0] - z[a, 0]) * (z[a, 1] - z[b, 1]))
            if owner[a] == owner[b] or area <= 0:
                continue
            if -1 in (owner[a], owner[b]):  # the No-unlearn end: the neighbour, lighter (see _lighter)
                k = max(owner[a], owner[b])
                gaps += [(area, u, f"between the No-unlearn model and configuration {k + 1} ({how})")
                         for u, how in self._lighter(units, k, anchor[1], z, owner)]
            else:
                gaps.append((area, (units[owner[a]] + units[owner[b]]) / 2,
                             f"between configurations {owner[a] + 1} and {owner[b] + 1}"))
        return sorted(gaps, key=lambda g: -g[0])

    def _lighter(self, units, k, lr, z, owner):
        """[(unit, how)]: configuration ``k`` made lighter, towards the No-unlearn end: at the range's lowest
        lr; already there, a move along the end: each other coordinate 2 steps either way, the lighter way
        first. Straight to the end, not half way: halving spent proposal after proposal on ever closer
        learning rates of one configuration while the light end of NPO's front (tiny Llama) runs along the
        lowest lr, and the replay of both development tasks gained most from it with the middle-lr start
        (benchmarks/RESULTS.md, issue 22)."""
        u = units[k].copy()
        if u[lr] >= SAME_POINT:
            u[lr] = 0.0
            return [(u, "the lowest lr of the range")]
        moves = []
        for d in range(self.dims):
            if d == lr:
                continue
            for sign in sorted((1, -1), key=lambda g: -g * _lightness_slope(units, z, owner, d)):
                v = units[k].copy()
                v[d] = min(1.0, max(0.0, v[d] + sign * 2 * self.STEP))
                if abs(v[d] - units[k][d]) >= self.STEP:  # not against the range's end
                    moves.append((v, f"at the lowest lr, coordinate {d + 1} moved {sign * 2 * self.STEP:+.2g}"))
        return moves

    def _knees(self, finished):
        """(knees, end, last): for each configuration whose trajectory reached the forget objective's ideal
        between two evaluations, or is on its way there, ``(k, lr at which its last step would land there, retain
        expected there, how, that lr / its lr)``; the front's best retain at the ideal so far
        (``ideal_end``, oriented); and the last step evaluated.

        Unlearning with a constant learning rate goes about as far in s steps at lr as in s * k steps at
        lr / k (the *dose* lr x steps is what moves the weights, to first order), so a trajectory's
        evaluated steps say what another lr would reach at the last step. Reached between steps s0 < s1:
        lr x (s0 + s1) / 2 / last (the last step lands inside the interval the coarse evaluations skipped);
        on its way at the last step: the lr its last two points extrapolate to (none beyond twice its lr: a
        plateau, such as MUSE's VerbMem floor above 0). Needs ``lr_axis`` and a bounded first objective."""
        if self.lr_axis is None or self.ref is None:
            return [], -np.inf, 0
        axis, lr_range = self.lr_axis
        target_x = ideal(self.ref)
        tracks = [sorted(tuple(p) for p in pts if len(tuple(p)) == 3) for _, pts in finished]
        last = max((t[-1][0] for t in tracks if t), default=0)
        knees = []
        for k, ((u, _), track) in enumerate(zip(finished, tracks)):
            off = [abs(x - target_x) for _, x, _ in track]
            hit = next((j for j, d in enumerate(off) if d <= IDEAL_TOLERANCE), None)
            if hit:  # reached between the evaluations hit - 1 and hit (at the first: the No-unlearn fill's job)
                (s0, _, y0), (s1, _, y1) = track[hit - 1], track[hit]
                target, promise = (s0 + s1) / 2, (y0 + y1) / 2
                how = f"reached the forget ideal between steps {s0} and {s1}"
            elif hit is None and len(track) >= 2 and track[-1][0] == last and off[-2] > off[-1]:
                (sa, _, ya), (sb, _, yb) = track[-2], track[-1]
                target = sb + off[-1] * (sb - sa) / (off[-2] - off[-1])
                if target > 2 * last:
                    continue
                promise = min(yb, yb + (yb - ya) * (target - sb) / (sb - sa))  # retain there, extrapolated too
                how = f"on its way to the forget ideal at step {sb} ({off[-1]:.3g} short)"
            else:
                continue
            knees.append((k, lr_range.value(u[axis]) * target / last, promise, how, target / last))
        return knees, ideal_end([p for t in tracks for p in t], self.ref, self.senses), last

    def _promising(self, promise, end) -> bool:
        """Whether retain ``promise`` at the ideal beats the front's end there and the reference."""
        orient = 1.0 if self.senses[1] == "max" else -1.0
        return orient * promise > max(end, orient * self.ref[1])

    def _dosed(self, finished):
        """[(unit, why)]: a configuration again at the lr that brings its forget objective to its ideal (ROUGE 0)
        at the last step (``_knees``), the retain expected there highest first; only where that beats the
        front's end at the ideal so far (and the reference)."""
        knees, end, last = self._knees(finished)
        axis, lr_range = self.lr_axis or (None, None)
        from analysis.pareto import hypervolume_2d
        moves = []
        points = _points(finished)
        now = hypervolume_2d(points, self.ref, self.senses) if knees else 0.0
        for k, lr, promise, how, factor in sorted(knees, key=lambda q: -q[2]):
            gain = hypervolume_2d(np.vstack([points, [(ideal(self.ref), promise)]]), self.ref, self.senses) - now
            if not self._promising(promise, end) or gain < MIN_DOSE_GAIN:
                continue
            v = np.asarray(finished[k][0], float).copy()
            v[axis] = min(1.0, max(0.0, lr_range.unit(lr)))
            if abs(v[axis] - finished[k][0][axis]) >= SAME_POINT:
                moves.append((v, f"dose move: configuration {k + 1} {how}; lr x {factor:.2f} to reach it at "
                                 f"step {last}"))
        return moves

    def _end_carries(self, finished) -> bool:
        """Whether the front's end at the forget objective's ideal carries most of what a front can hold: its
        retain there (from the reference) at least ``END_SHARE`` of the best retain evaluated so far (a point
        at forget 0 spans the whole forget axis, so its retain is the hypervolume it holds). On GDiff's
        authors front the knee at forget 0 keeps ~0.95 of the best retain; on NPO's, where forget 0 means
        collapse, ~0.1-0.4, and there dose moves and knee steps first spent every proposal on a plateau
        (benchmarks/RESULTS.md, issue 22). Against the best retain, not the front's hypervolume: early on,
        when every point is poor, a poor forget-0 end would carry half of a poor front."""
        if self.ref is None or not finished:
            return False
        points = _points(finished)
        end = ideal_end(points.tolist(), self.ref, self.senses)
        orient = 1.0 if self.senses[1] == "max" else -1.0
        best = float(np.max(orient * points[:, 1])) if len(points) else -np.inf
        return bool(np.isfinite(end) and end - orient * self.ref[1] >= END_SHARE * (best - orient * self.ref[1]))

    def _knee_steps(self, finished, taken):
        """[(unit, why)]: steps along the front's forget-0 end. Around the configuration with the best knee (the
        best retain reached at the ideal, else expected there), each other coordinate moved at that knee's lr:
        first half the way to the range's end in the direction where the configurations' own hypervolume
        rises (covariance over every finished configuration: steadier than the few knees' retains, which
        sent early steps the wrong way), then local steps of ``STEP``, ``STEP``/2, ... that way first, then
        the other way. The knee's lr, not a model of how it varies: a log-linear fit over the knees
        extrapolated across GDiff's collapse regime (c < 0.65, where any lr forgets) into lrs too low to
        forget at all; a step that misses the ideal is the dose move's to correct."""
        knees, _, _ = self._knees(finished)
        if not knees or self.dims < 2:
            return []
        axis, lr_range = self.lr_axis
        orient = 1.0 if self.senses[1] == "max" else -1.0
        k, lr, promise, *_ = max(knees, key=lambda q: orient * q[2])
        if not self._promising(promise, -np.inf):  # the best knee adds nothing: no knee to follow
            return []
        base = np.asarray(finished[k][0], float).copy()
        base[axis] = min(1.0, max(0.0, lr_range.unit(lr)))
        at = f"at its knee's lr {lr:.3g}" + ("" if lr_range.low <= lr <= lr_range.high else
                                             f" (outside the range: {lr_range.value(base[axis]):.3g})")
        own = self._own_hypervolumes(finished)
        steps = []  # (radius, order, coordinate, sign)
        for d in (d for d in range(self.dims) if d != axis):
            slope = float(np.cov([u[d] for u, _ in finished], own)[0, 1]) if len(finished) > 1 else 0.0
            signs = (1, -1) if slope >= 0 else (-1, 1)
            room = 1.0 - base[d] if signs[0] > 0 else base[d]
            if room / 2 > self.STEP:
                steps.append((room / 2, 0, d, signs[0]))
            steps += [(self.STEP / 2 ** j, o, d, g) for j in range(4) for o, g in enumerate(signs)]
        moves = []
        for r, _, d, sign in sorted(steps, key=lambda q: (q[1], -q[0])):
            v = base.copy()
            v[d] = min(1.0, max(0.0, v[d] + sign * r))
            if abs(v[d] - base[d]) >= r / 2:  # not against the range's end
                moves.append((v, f"knee step ({sign * r:+.3g} on coordinate {d + 1}) from configuration {k + 1} {at}"))
        return moves

    def _own_hypervolumes(self, finished) -> list[float]:
        """Each configuration's own hypervolume: its points' area against the objectives' reference, else
        against the scaled square's worst corner."""
        from analysis.pareto import hypervolume_2d
        if self.ref is not None:
            return [hypervolume_2d(_points([(None, pts)]), self.ref, self.senses) if len(pts) else 0.0
                    for _, pts in finished]
        z, owner, _ = self._scaled(finished)
        return [hypervolume_2d(z[owner == k], (1.0, 1.0)) if np.any(owner == k) else 0.0
                for k in range(len(finished))]

    def _modelled(self, finished, pending):
        """[(unit, why)]: where a Gaussian process over the unit cube expects the largest improvement of a
        configuration's own hypervolume (its points' area against the objectives' reference, else against
        the scaled square's worst corner: a single configuration that reaches forget 0 at high retain carries
        most of a front's hypervolume; Optuna's ``GPSampler``, log expected improvement). Running
        configurations are told the worst value seen, so the next proposal goes elsewhere. Needs
        ``initial`` + 1 finished configurations (and at least 3)."""
        scaled = self._scaled(finished)
        if scaled is None or len(finished) < max(3, len(self.start) + 1) or not HAS_OPTUNA:
            return []
        own = self._own_hypervolumes(finished)
        u = gp_maximum([u for u, _ in finished], own, pending, self.dims, self.seed + self.proposed)
        best = int(np.argmax(own))
        return [(u, f"Gaussian-process expected improvement of a configuration's own hypervolume (best so far: "
                    f"configuration {best + 1}, {own[best]:.3g})")]

    def _improvements(self, finished, taken):
        """[(unit, why)]: steps away from dominated neighbours of the front's configurations, then local
        steps around the configurations that add the most hypervolume to the front (best first)."""
        scaled = self._scaled(finished)
        if scaled is None or not self.dims or len(finished) < 2:  # one configuration: explore instead
            return []
        z, owner, front = scaled
        units = [np.asarray(u, float) for u, _ in finished]
        on_front = sorted({int(owner[i]) for i in front})
        gain = {k: _exclusive_area(z, owner, front, k) for k in on_front}
        moves = []
        for k in sorted(on_front, key=lambda k: -gain[k]):  # the configuration adding most hypervolume first
            mine = z[owner == k]
            beaten = []
            for j in range(len(finished)):  # neighbours all of whose points one of k's points beats
                theirs = z[owner == j]
                if j != k and len(theirs) and all(np.any(np.all(mine <= p, axis=1) & np.any(mine < p, axis=1))
                                                  for p in theirs):
                    beaten.append(j)
            for j in sorted(beaten, key=lambda j: np.max(np.abs(units[j] - units[k]))):  # nearest first
                u = units[k] + 0.5 * (units[k] - units[j])
                moves.append((np.clip(u, 0, 1), f"away from configuration {j + 1}, which configuration {k + 1} "
                                                 f"dominates (a step where the front improves by dominance)"))
        # Then local steps; dominance first was better on the tuning task (benchmarks/RESULTS.md, issue 22).
        for k in sorted(on_front, key=lambda k: -gain[k]):
            near = sum(np.max(np.abs(t - units[k])) < 1.5 * self.STEP for t in taken) - 1  # earlier steps around it
            r = self.STEP / 2 ** max(0, near // (2 * self.dims))
            for d in range(self.dims):
                for sign in (1, -1):
                    u = units[k].copy()
                    u[d] = min(1.0, max(0.0, u[d] + sign * r))
                    if abs(u[d] - units[k][d]) < r / 2:  # against the range's end: hardly a move
                        continue
                    moves.append((u, f"local step ({r:.3g} on coordinate {d + 1}) around configuration {k + 1}, "
                                     f"which adds most hypervolume to the front ({gain[k]:.3g} scaled)"))
        return moves


def gp_maximum(units, values, pending, dims: int, seed: int) -> np.ndarray:
    """The unit-cube point where Optuna's ``GPSampler`` (Matern-5/2 GP, log expected improvement) would try
    next to maximise ``values`` observed at ``units``; ``pending`` points are told the lowest value."""
    import optuna
    import torch
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = {f"u{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(dims)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the searcher shares the driver's cores with running trials: 0.08 s a fit, not 0.3
    try:
        return _gp_ask(optuna, space, units, values, pending, seed)
    finally:
        torch.set_num_threads(threads)


def _gp_ask(optuna, space, units, values, pending, seed) -> np.ndarray:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPSampler is "experimental" in Optuna's terms
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GPSampler(seed=seed,
                                                                                              n_startup_trials=0))
        told = list(zip(units, values)) + [(u, min(values)) for u in pending]
        for u, v in told:
            study.add_trial(optuna.trial.create_trial(params={f"u{i}": float(x) for i, x in enumerate(u)},
                                                      distributions=space, values=[float(v)]))
        trial = study.ask(space)
    return np.array([trial.params[f"u{i}"] for i in range(len(space))])


def _lightness_slope(units, z, owner, d) -> float:
    """How the configurations' first evaluated points get lighter (forget and retain up: the No-unlearn
    end) as coordinate ``d`` grows: the covariance of the coordinate with (scaled forget - scaled retain
    loss) over the configurations (0 with fewer than two). Steps are compared at the first evaluation,
    which every trial reaches."""
    first = {}
    for i, o in enumerate(owner):
        if o >= 0 and o not in first:
            first[int(o)] = z[i, 0] - z[i, 1]
    if len(first) < 2:
        return 0.0
    ks = sorted(first)
    return float(np.cov([units[k][d] for k in ks], [first[k] for k in ks])[0, 1])


def _points(finished) -> np.ndarray:
    """Every evaluated (x, y) of the finished configurations, as an (n, 2) array."""
    return np.array([tuple(p)[-2:] for _, pts in finished for p in pts], float).reshape(-1, 2)


def _exclusive_area(z, owner, front, k) -> float:
    """Scaled hypervolume (reference (1.1, 1.1)) the front loses without configuration ``k``'s points."""
    from analysis.pareto import hypervolume_2d
    ref = (1.1, 1.1)
    rest = z[owner != k]
    return hypervolume_2d(z, ref) - (hypervolume_2d(rest, ref) if len(rest) else 0.0)


class OptunaSampler:
    """Optuna's multi-objective TPE (``TPESampler(multivariate=True, constant_liar=True)``) by ask/tell.

    Each configuration is one Optuna trial, told the seed mean of its final evaluated point; its earlier
    evaluated points join the study as completed trials at the same parameters."""

    name = "optuna"
    why = "Optuna multi-objective TPE"  # what a model-driven proposal's reason says

    def __init__(self, dims: int, senses, seed: int = 0, initial: int = 3):
        import warnings

        import optuna
        # ERROR: GPSampler warns on every study that it optimises without the optional greenlet package.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.initial = initial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate TPE and GPSampler are "experimental" in Optuna's terms
            sampler = self._sampler(optuna, seed, initial)
        self.study = optuna.create_study(directions=["minimize" if s == "min" else "maximize" for s in senses],
                                         sampler=sampler)
        self.space = {f"u{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(dims)}
        self.open: dict[tuple, object] = {}

    @staticmethod
    def _sampler(optuna, seed: int, initial: int):
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=initial, multivariate=True, constant_liar=True)

    def propose(self, finished, pending, anchor=None) -> tuple[list[float], str] | None:
        import warnings

        import optuna
        # Optuna samples at random until `initial` trials are complete (not merely asked).
        told = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.space)
        unit = [trial.params[k] for k in self.space]
        self.open[_key(unit)] = trial
        model = self.why if told >= self.initial else "Optuna's random start"
        return unit, f"{model}, trial {trial.number}"

    def replay(self, unit) -> None:
        self.study.enqueue_trial({f"u{i}": u for i, u in enumerate(unit)})
        self.propose([], [])

    def observe(self, unit, points) -> None:
        """Tell the configuration's trial its final point and add each earlier evaluated point as a completed
        trial with the same parameters (``points``: [(step, x, y)] or [(x, y)] in step order, one (x, y), or
        None when every seed failed)."""
        import optuna
        trial = self.open.pop(_key(unit), None)
        pts = [] if points is None else [tuple(p)[-2:] for p in np.atleast_2d(np.asarray(points, dtype=float))]
        pts = [p for p in pts if np.all(np.isfinite(p))]
        if trial is not None:
            if not pts:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(trial, [float(v) for v in pts[-1]])
        for p in pts[:-1]:
            self.study.add_trial(optuna.trial.create_trial(
                params={f"u{i}": float(u) for i, u in enumerate(unit)}, distributions=self.space,
                values=[float(v) for v in p]))


class GPSampler(OptunaSampler):
    """Optuna's Gaussian-process sampler (``GPSampler``): a Matern-5/2 GP per objective over the unit cube,
    the next configuration where the log expected hypervolume improvement is largest (q-batch over the
    configurations still running). Told, like TPE, every evaluated point of each configuration."""

    name = "gp"
    why = "Optuna GP, log expected hypervolume improvement"

    @staticmethod
    def _sampler(optuna, seed: int, initial: int):
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=initial)


def make_sampler(name: str, dims: int, senses, seed: int = 0, initial: int = 3, ref=None, lr_axis=None):
    """``ref``: the objectives' hypervolume reference, when known (``sweeper.front.promotion.reference``);
    ``lr_axis``: (index, Range) of the searched learning rate (the gap sampler's dose move)."""
    if name == "gap":
        return GapSampler(dims, senses, seed=seed, initial=initial, ref=ref, lr_axis=lr_axis)
    return {"optuna": OptunaSampler, "gp": GPSampler}[name](dims, senses, seed=seed, initial=initial)


def _near(u, others) -> bool:
    return any(np.max(np.abs(np.asarray(u) - o)) < SAME_POINT for o in others)


def _key(unit) -> tuple:
    return tuple(round(float(u), 6) for u in unit)
