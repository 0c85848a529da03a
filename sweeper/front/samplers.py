"""Where a front search tries next: the samplers behind ``search: {sampler: gap | optuna | gp}``. No Ray.

A sampler works in the unit cube of a study's ranges (``sweeper.front.studies.Range.unit``). It is asked for
the next configuration with what the study knows so far: the finished configurations with their
evaluated points (every evaluation step, seed-averaged) and the configurations still running::

    sampler = make_sampler("gap", dims=2, senses=("min", "max"), seed=0, initial=3)
    unit, reason = sampler.propose(finished=[([0.2, 0.5], [(0.9, 0.8), (0.6, 0.7)])], pending=[[0.8, 0.1]])

``gap`` (ours): a Latin-hypercube start, then the midpoint between the two configurations whose front
points bound the largest empty rectangle of the current front, in objectives scaled to the points'
spread. When the learning rate is searched, the study's No-unlearn point joins the front as its
``lr -> 0`` end (``anchor``): every method starts there, so the gap between it and the front's nearest
configuration is filled by that configuration at a lower learning rate (half way down its unit
coordinate), which reaches the light-unlearning end of the front a search started at random misses.
``optuna``: Optuna's multi-objective TPE sampler (ask/tell), fed each configuration's final point;
``gp``: Optuna's Gaussian-process sampler (log expected hypervolume improvement), fed the same.
"""
from __future__ import annotations

import numpy as np

#: Two configurations closer than this (max-norm in the unit cube) count as the same point.
SAME_POINT = 0.02


class GapSampler:
    """Fill the largest gap of the current front; start from a Latin hypercube of ``initial`` points."""

    name = "gap"

    def __init__(self, dims: int, senses, seed: int = 0, initial: int = 3):
        from scipy.stats import qmc
        self.senses, self.dims = senses, dims
        self.start = qmc.LatinHypercube(d=dims, seed=seed).random(initial) if dims else np.zeros((0, 0))
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
        for area, u, why in self._gaps(finished, anchor):
            if not _near(u, taken):
                return self._take(u, f"largest front gap ({area:.3g} of the scaled objective square) {why}")
        far = max(self.explore, key=lambda u: min((np.max(np.abs(u - t)) for t in taken), default=1.0))
        return self._take(far, "no open front gap left: the point farthest from every tried configuration")

    def replay(self, unit) -> None:
        """Count a proposal made before a resume (its coordinates come from the proposal log)."""
        self.proposed += 1

    def observe(self, unit, point) -> None:
        """Nothing to do: the gap sampler reads the whole history at every proposal."""

    def _take(self, u, why: str):
        self.proposed += 1
        return [float(x) for x in u], why

    def _gaps(self, finished, anchor=None):
        """(area, midpoint, why) for each pair of neighbouring front points, largest area first."""
        units = [np.asarray(u, float) for u, _ in finished]
        pts, owner = [], []
        for i, (_, points) in enumerate(finished):
            for p in points:
                pts.append(p)
                owner.append(i)
        if not pts:
            return []
        if anchor is not None:
            pts.append(anchor[0])
            owner.append(-1)
        z = np.asarray(pts, float) * [1 if s == "min" else -1 for s in self.senses]  # both minimised
        span = z.max(axis=0) - z.min(axis=0)
        z = (z - z.min(axis=0)) / np.where(span > 0, span, 1.0)
        from analysis.pareto import _non_dominated
        front = np.flatnonzero(_non_dominated(z[:, 0], z[:, 1]))
        front = front[np.argsort(z[front, 0], kind="stable")]
        gaps = []
        for a, b in zip(front[:-1], front[1:]):
            area = float((z[b, 0] - z[a, 0]) * (z[a, 1] - z[b, 1]))
            if owner[a] == owner[b] or area <= 0:
                continue
            if -1 in (owner[a], owner[b]):  # the No-unlearn end: the neighbour at half its lr coordinate
                k = max(owner[a], owner[b])
                u = units[k].copy()
                u[anchor[1]] /= 2
                gaps.append((area, u, f"between the No-unlearn model and configuration {k + 1} (a lower lr)"))
            else:
                gaps.append((area, (units[owner[a]] + units[owner[b]]) / 2,
                             f"between configurations {owner[a] + 1} and {owner[b] + 1}"))
        return sorted(gaps, key=lambda g: -g[0])


class OptunaSampler:
    """Optuna's multi-objective TPE (``TPESampler(multivariate=True, constant_liar=True)``) by ask/tell.

    Each configuration is one Optuna trial, told the seed mean of its final evaluated point."""

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

    def observe(self, unit, point) -> None:
        trial = self.open.pop(_key(unit), None)
        if trial is None:
            return
        if point is None or not np.all(np.isfinite(point)):
            import optuna
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, [float(v) for v in point])


class GPSampler(OptunaSampler):
    """Optuna's Gaussian-process sampler (``GPSampler``): a Matern-5/2 GP per objective over the unit cube,
    the next configuration where the log expected hypervolume improvement is largest (q-batch over the
    configurations still running). Told, like TPE, the seed mean of each configuration's final point."""

    name = "gp"
    why = "Optuna GP, log expected hypervolume improvement"

    @staticmethod
    def _sampler(optuna, seed: int, initial: int):
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=initial)


def make_sampler(name: str, dims: int, senses, seed: int = 0, initial: int = 3):
    return {"gap": GapSampler, "optuna": OptunaSampler, "gp": GPSampler}[name](dims, senses, seed=seed,
                                                                            initial=initial)


def _near(u, others) -> bool:
    return any(np.max(np.abs(np.asarray(u) - o)) < SAME_POINT for o in others)


def _key(unit) -> tuple:
    return tuple(round(float(u), 6) for u in unit)
