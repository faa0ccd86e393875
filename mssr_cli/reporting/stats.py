"""Pure functions over metric lines and over seeds: series, spread, first step reaching a target, bands."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Targets are means of floats (e.g. (0.6 + 0.6) / 2 can land a hair above 0.6): a run that
# logged exactly the target value has reached it.
REACH_TOLERANCE = 1e-9


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


def metric_series(metrics: list[dict], key: str, x: str = "step", rollouts_per_step: int | None = None) -> list[tuple[float, float]]:
    """``(x, value)`` for every line that logged a number for ``key``; x is ``step`` or ``rollouts``."""
    out = []
    for line in metrics:
        value = _number(line.get(key))
        at = float(line["step"]) if x == "step" else rollouts_at(line, rollouts_per_step)
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
    """The first x whose value is >= target (None if it never is)."""
    for at, value in series:
        if value >= target - REACH_TOLERANCE:
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


def band(curves: list[list[tuple[float, float]]]) -> Band:
    """Mean and min-max over seeds, aligned on x (seeds may log different steps, or stop early)."""
    at: dict[float, list[float]] = {}
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
