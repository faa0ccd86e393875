"""Threshold boundaries decided as documented, for fractions as the runs log them (issue 20).

val/accuracy is k/n in float64 (models.generation.greedy_accuracy); train/accuracy and train/format_rate are
means of float32 tensors (TRL's reward mean, trainer.py's format rate). A plain ``0.4 - 0.3 > 0.1`` is True,
so each test walks every k of several set sizes: a fall or rate exactly at the threshold must not fire, one item
past it must.
"""

from __future__ import annotations

import numpy as np
import pytest

from mssr_cli.reporting.stats import first_reaching, probability_of_improvement
from mssr_cli.thresholds import TOLERANCE, above, at_least, below, level
from mssr_cli.training.collapse import ENTROPY_RULE, FORMAT_RULE, VAL_DROP_RULE, CollapseDetector, CollapseRules


def as_float64(k: int, n: int) -> float:
    return k / n  # greedy_accuracy: sum(correct) / n


def as_float32(k: int, n: int) -> float:
    return float(np.mean(np.array([1.0] * k + [0.0] * (n - k), dtype=np.float32)))  # a float32 tensor's .mean()


FRACTIONS = [as_float64, as_float32]
# (items n, threshold as a number of items m): the threshold m / n, written as the config would give it
VAL_SIZES = [(10, 1), (20, 2), (20, 3), (300, 30), (300, 15), (1000, 100), (7, 1)]


def _val_drop_fires(n: int, best: int, last: int, drop: float, fraction) -> bool:
    detector = CollapseDetector(CollapseRules(val_drop=drop))
    detector.observe({"step": 0, "val/accuracy": fraction(best, n)})
    return [a.rule for a in detector.observe({"step": 1, "val/accuracy": fraction(last, n)})] == [VAL_DROP_RULE]


@pytest.mark.parametrize("fraction", FRACTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n,m", VAL_SIZES)
def test_a_fall_of_exactly_val_drop_does_not_fire_and_one_item_more_does(n, m, fraction):
    drop = round(m / n, 6)  # as a user writes it: train.collapse.val_drop=0.1, 0.15, 0.05
    for best in range(m + 1, n + 1):
        assert not _val_drop_fires(n, best, best - m, drop, fraction), (n, best, best - m, drop)
        assert _val_drop_fires(n, best, best - m - 1, drop, fraction), (n, best, best - m - 1, drop)
    assert not _val_drop_fires(n, m, 0, drop, fraction)  # from m items right to none: exactly val_drop


def test_the_reported_case_0_4_to_0_3_of_20_items():
    """The issue's trajectory: 8/20 then 6/20. Floats make the fall 0.10000000000000003; it is 0.10."""
    assert 0.4 - 0.3 > 0.1  # why the plain comparison is wrong
    assert not _val_drop_fires(20, 8, 6, 0.1, as_float64)


@pytest.mark.parametrize("fraction", FRACTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n,below_items", [(16, 8), (20, 10), (300, 150), (10, 3), (10, 7), (10, 9), (300, 210)])
def test_a_format_rate_exactly_at_the_threshold_is_not_below_it(n, below_items, fraction):
    """format_collapse counts steps whose rate is < format_rate_below: at it, no; one completion fewer, yes."""
    threshold = round(below_items / n, 6)
    for k, low in ((below_items, False), (below_items - 1, True)):
        detector = CollapseDetector(CollapseRules(format_rate_below=threshold, format_patience=2))
        raised = [a.rule for step in range(3) for a in detector.observe({"step": step, "train/format_rate": fraction(k, n)})]
        assert raised == ([FORMAT_RULE] if low else []), (n, k, threshold)


@pytest.mark.parametrize("fraction", FRACTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n,m", [(20, 2), (100, 10), (300, 30)])
def test_train_accuracy_falling_exactly_val_drop_is_no_degradation(n, m, fraction):
    """Low entropy alarms only with degradation; a smoothed train accuracy down exactly val_drop is none."""
    drop = round(m / n, 6)
    for fall, alarm in ((m, False), (m + 1, True)):
        best = n // 2 + m
        detector = CollapseDetector(CollapseRules(val_drop=drop, accuracy_window=1, entropy_patience=1))
        detector.observe({"step": 0, "collapse/entropy_ratio": 1.0, "train/accuracy": fraction(best, n)})
        raised = detector.observe({"step": 1, "collapse/entropy_ratio": 0.01, "train/accuracy": fraction(best - fall, n)})
        assert [a.rule for a in raised] == ([ENTROPY_RULE] if alarm else []), (n, fall)
        assert detector.converged is not alarm


def test_an_entropy_ratio_at_the_threshold_is_not_low():
    rules = CollapseRules(entropy_ratio_below=0.3, entropy_patience=1, require_degradation=False)
    at = 0.1 + 0.2  # 0.30000000000000004: on the threshold, not past it either way
    for ratio, alarm in ((at, False), (0.3, False), (np.float32(0.3).item(), False), (0.3 - 1e-4, True)):
        detector = CollapseDetector(rules)
        assert [a.rule for a in detector.observe({"step": 0, "collapse/entropy_ratio": ratio})] == (
            [ENTROPY_RULE] if alarm else []), ratio


def test_a_best_equal_within_rounding_keeps_the_earlier_step():
    """Ties keep the earlier best validation, so a val drop's evidence begins after the first best."""
    detector = CollapseDetector(CollapseRules())
    detector.observe({"step": 3, "val/accuracy": as_float64(6, 20)})
    detector.observe({"step": 6, "val/accuracy": as_float32(6, 20)})  # the same 6 of 20, rounded as float32
    assert detector.evidence_from(VAL_DROP_RULE) == 4


@pytest.mark.parametrize("fraction", FRACTIONS, ids=lambda f: f.__name__)
def test_a_target_is_reached_by_a_value_on_it(fraction):
    series = [(0, fraction(5, 20)), (10, fraction(6, 20)), (20, fraction(7, 20))]
    assert first_reaching(series, 0.1 + 0.2) == 10  # 0.30000000000000004 is 6 of 20
    assert first_reaching(series, (0.3 + 0.3 + 0.3) / 3) == 10
    assert first_reaching(series, 0.3 + 1e-4) == 20  # a hair above 6 of 20 needs 7


def test_equal_finals_rounded_two_ways_are_a_tie():
    x = [as_float64(6, 20), as_float64(7, 20)]
    y = [as_float32(6, 20), as_float32(5, 20)]
    # pairs: (6, 6) tie 0.5, (6, 5) win, (7, 6) win, (7, 5) win -> 3.5 / 4
    assert probability_of_improvement(x, y) == pytest.approx(0.875)


def test_the_comparisons_themselves():
    assert not above(0.4 - 0.3, 0.1) and above(0.1 + 2 * TOLERANCE, 0.1)
    assert not below(0.1 + 0.2, 0.3) and not below(0.3, 0.1 + 0.2) and below(0.3 - 2 * TOLERANCE, 0.3)
    assert at_least(0.3, 0.1 + 0.2) and not at_least(0.3 - 2 * TOLERANCE, 0.3)
    assert level(0.1 + 0.2, 0.3) and not level(0.3, 0.3 + 2 * TOLERANCE)
    # one item of 100,000 past a threshold is past it
    assert above(30_001 / 100_000 - 0.2, 0.1) and below(29_999 / 100_000, 0.3)
