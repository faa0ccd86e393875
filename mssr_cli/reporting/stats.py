"""Pure functions over metric lines and over seeds: series, spread, first step reaching a target, bands,
and the seed statistics of Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (IQM, percentile bootstrap intervals, probability of improvement).

The seed statistics follow rliable's definitions (``metrics.aggregate_iqm``,
``metrics.probability_of_improvement``, ``library.get_interval_estimates``) with one task: the final
metric value. rliable itself is not used: it needs ``arch < 8``, which fails to import with pandas 3.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from mssr_cli.thresholds import TOLERANCE, at_least



def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def rollouts_at(line: dict, rollouts_per_step: int | None) -> float | None:
    """Rollouts used by this line's step: the logged count, else step x rollouts per step."""
    logged = _number(line.get("rollouts"))
    if logged is not None:
        return logged
    return None if rollouts_per_step is None else float(line["step"] * rollouts_per_step)


X_AXES = ("step", "rollouts", "tokens", "seconds")  # what a curve can be drawn against: cost in four units


def x_at(line: dict, x: str, rollouts_per_step: int | None = None) -> float | None:
    """Where a metrics line sits on axis ``x``: its RL step, rollouts used, completion tokens generated
    (``train/tokens``; 0 before the first step) or wall seconds since training began (``time/elapsed``)."""
    if x == "step":
        return float(line["step"])
    if x == "rollouts":
        return rollouts_at(line, rollouts_per_step)
    if x == "tokens":
        logged = _number(line.get("train/tokens"))
        return 0.0 if logged is None and line["step"] == 0 else logged
    if x == "seconds":
        return _number(line.get("time/elapsed"))
    raise ValueError(f"unknown x axis {x!r}; valid: {', '.join(X_AXES)}")


def metric_series(metrics: list[dict], key: str, x: str = "step", rollouts_per_step: int | None = None) -> list[tuple[float, float]]:
    """``(x, value)`` for every line that logged a number for ``key``; x is one of ``X_AXES``."""
    if x == "tokens" and not any("train/tokens" in line for line in metrics):
        return []  # a run from before train/tokens: no token axis at all (not one point at step 0)
    out = []
    for line in metrics:
        value = _number(line.get(key))
        at = x_at(line, x, rollouts_per_step)
        if value is not None and at is not None:
            out.append((at, value))
    return out


def final_value(series: list[tuple[float, float]]) -> float | None:
    return series[-1][1] if series else None


def best_value(series: list[tuple[float, float]]) -> float | None:
    return max(v for _, v in series) if series else None


def lowest_value(series: list[tuple[float, float]]) -> float | None:
    return min(v for _, v in series) if series else None


def first_reaching(series: list[tuple[float, float]], target: float) -> float | None:
    """The first x whose value is >= target (None if it never is). Targets are means of floats ((0.6 + 0.6) / 2
    can land a hair above 0.6): a value on the target, within ``thresholds.TOLERANCE``, has reached it."""
    for at, value in series:
        if at_least(value, target):
            return at
    return None


@dataclass(frozen=True)
class Spread:
    """Mean and spread of one number over seeds. ``std`` is the sample std (n - 1); None for one seed."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float


def spread(values: list[float | None]) -> Spread | None:
    """Spread over the values that exist; None when none do."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return Spread(n=len(present), mean=statistics.fmean(present), std=std, min=min(present), max=max(present))


def mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Band:
    """A curve over seeds: at each x, the mean, min and max of the seeds that logged that x."""

    x: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: list[int]  # how many seeds logged each x


def band(curves: list[list[tuple[float, float]]], interpolate: bool = False) -> Band:
    """Mean and min-max over seeds, aligned on x (seeds may log different steps, or stop early).

    ``interpolate``: for a continuous cost axis (tokens, seconds) no two seeds share an x, so each
    seed's curve is read at every x any seed logged, linearly between its own points, and counts
    only inside its own x range (no extrapolation). Without it, a seed counts only at the x it logged."""
    at: dict[float, list[float]] = {}
    if interpolate:
        grid = sorted({x for curve in curves for x, _ in curve})
        for curve in curves:
            xs_c, ys_c = zip(*sorted(curve), strict=True)
            inside = [x for x in grid if xs_c[0] <= x <= xs_c[-1]]
            for x, value in zip(inside, np.interp(inside, xs_c, ys_c).tolist(), strict=True):
                at.setdefault(x, []).append(value)
    else:
        for curve in curves:
            for x, value in curve:
                at.setdefault(x, []).append(value)
    xs = sorted(at)
    return Band(
        x=xs,
        mean=[statistics.fmean(at[x]) for x in xs],
        low=[min(at[x]) for x in xs],
        high=[max(at[x]) for x in xs],
        seeds=[len(at[x]) for x in xs],
    )


# Seed statistics --------------------------------------------------------------------------------

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000  # rliable's default for performance profiles; its 50,000 buys nothing at 2-10 seeds
BOOTSTRAP_SEED = 0  # fixed, and reset for every interval: the same runs always give the same table
_BOOTSTRAP_BATCH = 250  # resamples evaluated at once: bounds the [batch, n, m] pair matrices in memory
IQM_TRIM = 0.25  # cut from each end


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def iqm(values: list[float]) -> float:
    """Interquartile mean: ``scipy.stats.trim_mean(values, 0.25)``, rliable's ``aggregate_iqm``.

    Sort, drop ``int(0.25 * n)`` values at each end, mean of the rest. So below 4 seeds nothing is
    dropped and the IQM is the mean; 4-7 seeds drop the lowest and the highest; 8 drop two of each.
    E.g. [0.2, 0.4, 0.6, 0.8] -> mean(0.4, 0.6) = 0.5.
    """
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, dtype=float), IQM_TRIM))


def probability_of_improvement(x, y, axis: int = -1):
    """P(X > Y) + 0.5 P(X = Y), X a value of ``x`` and Y one of ``y``, over all ``n * m`` pairs.

    Agarwal et al. 2021 (probability of improvement, one task): the Mann-Whitney U statistic of
    ``x`` over ``y`` divided by ``n * m``; rliable's ``probability_of_improvement``. 0.5 means neither
    is better; it says how often x wins, not by how much. E.g. [0.6, 0.7] over [0.5, 0.6]: pairs
    (0.6, 0.5) 1, (0.6, 0.6) 0.5, (0.7, 0.5) 1, (0.7, 0.6) 1 -> 3.5 / 4 = 0.875.

    Vectorised for the bootstrap: ``x`` [..., n] and ``y`` [..., m] along ``axis`` -> [...].
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)[..., :, None]  # [..., n, 1]
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)[..., None, :]  # [..., 1, m]
    # finals within thresholds.TOLERANCE are a tie: the same k of n items, rounded two ways, is not a win
    wins, ties = x > y + TOLERANCE, np.abs(x - y) <= TOLERANCE  # [..., n, m]
    return np.mean(wins + 0.5 * ties, axis=(-2, -1))  # [...]


def bootstrap_interval(samples: list[list[float]], statistic) -> Interval | None:
    """Percentile bootstrap ``CONFIDENCE`` interval of ``statistic(*samples, axis=-1)``; None when a sample
    has fewer than 2 values (one value resamples to itself: an interval of width 0 would claim certainty).

    Each sample is resampled with replacement on its own (rliable's stratified bootstrap with one task,
    ``method="percentile"``): ``BOOTSTRAP_RESAMPLES`` resamples, the 2.5th and 97.5th percentiles
    (numpy's linear interpolation) of the statistic, a generator seeded with ``BOOTSTRAP_SEED``.
    With 2 or 3 seeds the interval of the mean is the seeds' min-max (all-lowest resamples come up in
    1/4 and 1/27 > 2.5% of cases).
    """
    from scipy.stats import bootstrap

    if any(len(s) < 2 for s in samples):
        return None
    result = bootstrap(
        tuple(np.asarray(s, dtype=float) for s in samples), statistic, n_resamples=BOOTSTRAP_RESAMPLES,
        batch=_BOOTSTRAP_BATCH, vectorized=True, confidence_level=CONFIDENCE, method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )  # fmt: skip
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high))


def mean_interval(values: list[float]) -> Interval | None:
    """Bootstrap 95% interval of the mean over seeds (None below 2 seeds)."""
    ci = bootstrap_interval([values], np.mean)
    if ci is None:
        return None
    # A resample's mean lies within [min, max]; clipping drops float rounding (np.mean([0.1] * 3) > 0.1).
    low, high = np.clip([ci.low, ci.high], min(values), max(values))
    return Interval(float(low), float(high))


def improvement_interval(x: list[float], y: list[float]) -> Interval | None:
    """Bootstrap 95% interval of ``probability_of_improvement(x, y)``, x and y resampled independently
    (None when either has fewer than 2 values)."""
    return bootstrap_interval([x, y], probability_of_improvement)
