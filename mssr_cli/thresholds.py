"""Comparisons of a logged fraction (accuracy, rate, ratio) with a threshold, deciding the boundary as documented.

A logged accuracy is k/n, computed in float64 or gathered through float32, and the difference of two of them
carries rounding: ``0.4 - 0.3 == 0.10000000000000003``. Compared plainly, "a fall of more than 0.10" fires on a
fall of exactly 0.10 (two items of 20, thirty of 300), and "reached 0.3" can miss ``0.1 + 0.2``. So every
threshold rule (collapse detection, targets, warm start, ties between seeds) compares through these functions:
a value within ``TOLERANCE`` of its threshold counts as *on* it.

``TOLERANCE`` (1e-6) sits above float32 rounding of a fraction in [0, 1] (half an ulp is ~6e-8, ~1.2e-7 for a
difference of two) and below one item in 100,000 (1e-5), so a value one item past its threshold is past it for
any evaluation set of up to 100,000 items.
"""

from __future__ import annotations

TOLERANCE = 1e-6


def above(value: float, threshold: float) -> bool:
    """``value > threshold``, with a value on the threshold (within TOLERANCE) not above it."""
    return value > threshold + TOLERANCE


def below(value: float, threshold: float) -> bool:
    """``value < threshold``, with a value on the threshold (within TOLERANCE) not below it."""
    return value < threshold - TOLERANCE


def at_least(value: float, threshold: float) -> bool:
    """``value >= threshold``, with a value on the threshold (within TOLERANCE) counted as reaching it."""
    return not below(value, threshold)


def level(a: float, b: float) -> bool:
    """``a == b`` for two logged fractions: equal within TOLERANCE (a tie)."""
    return abs(a - b) <= TOLERANCE
