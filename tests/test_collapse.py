"""Collapse detector: converging vs degenerate runs, validation drops, non-finite losses, resume."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from mssr_cli.training.collapse import (
    ENTROPY_RULE,
    FORMAT_RULE,
    NONFINITE_RULE,
    VAL_DROP_RULE,
    Alarm,
    CollapseDetector,
    CollapseRules,
)


def _line(step, ratio=None, fmt=None, acc=None, val=None, loss=0.01, grad=0.4):
    """One metrics line as RunLogger writes it (absent metrics left out, not None)."""
    line = {"step": step, "train/loss": loss, "collapse/grad_norm": grad}
    for key, value in (("collapse/entropy_ratio", ratio), ("train/format_rate", fmt),
                       ("train/accuracy", acc), ("val/accuracy", val)):
        if value is not None:
            line[key] = value
    return line


def _run(lines, rules=None):
    detector = CollapseDetector(rules)
    return detector, detector.observe_all(lines)


# Converging run, shape of the tiny-model probe on the one-token digits task: entropy falls
# from ~0.40 to 0.06 nats (ratio to the first steps ~0.15) while train accuracy climbs to
# ~0.87 and nearly every completion stays boxed. Columns: step, entropy ratio, format, accuracy.
CONVERGING_TABLE = [
    (1, 1.02, 0.98, 0.30), (2, 1.00, 0.99, 0.33), (3, 0.99, 1.00, 0.31), (4, 0.98, 0.99, 0.36),
    (5, 1.01, 1.00, 0.38), (6, 0.90, 1.00, 0.42), (7, 0.82, 0.99, 0.45), (8, 0.71, 1.00, 0.50),
    (9, 0.62, 1.00, 0.52), (10, 0.55, 1.00, 0.58), (11, 0.47, 1.00, 0.61), (12, 0.40, 0.99, 0.65),
    (13, 0.34, 1.00, 0.63), (14, 0.29, 1.00, 0.70), (15, 0.25, 1.00, 0.72), (16, 0.22, 1.00, 0.76),
    (17, 0.19, 1.00, 0.78), (18, 0.18, 1.00, 0.74), (19, 0.17, 1.00, 0.80), (20, 0.16, 1.00, 0.83),
    (21, 0.16, 1.00, 0.81), (22, 0.15, 1.00, 0.85), (23, 0.15, 1.00, 0.84), (24, 0.15, 1.00, 0.87),
    (25, 0.15, 1.00, 0.86), (26, 0.14, 1.00, 0.88), (27, 0.15, 1.00, 0.85), (28, 0.15, 1.00, 0.87),
]
CONVERGING_VAL = {0: 0.30, 10: 0.55, 20: 0.80, 28: 0.86}  # validation at step 0, every 10, last
CONVERGING = [_line(0, val=CONVERGING_VAL[0])] + [
    _line(s, r, f, a, CONVERGING_VAL.get(s)) for s, r, f, a in CONVERGING_TABLE]

# Degenerate collapse, shape of the runs that ended in `}}}}}}`: entropy sinks first and
# looks like convergence (steps 6-12), then the format rate falls from 1.0 to 0.1 and
# accuracy from 0.4 to 0.05. Hand-worked with the default rules:
#   entropy ratio < 0.2 from step 6 -> 5 consecutive steps at step 10 (low, but no evidence yet:
#     format 0.96; train accuracy mean over steps 6-10 = 2.01/5 = 0.402 vs best 2.04/5 = 0.408)
#   step 13: format 0.31 < 0.5 -> degradation -> entropy_collapse raised at 13
#   format < 0.5 at steps 13, 14, 15 -> format_collapse raised at 15
#   val 0.06 at step 16 vs best 0.45 (step 10): 0.39 > 0.10 -> val_drop raised at 16
DEGENERATE_TABLE = [
    (1, 1.00, 1.00, 0.40), (2, 0.90, 1.00, 0.41), (3, 0.70, 0.99, 0.40), (4, 0.45, 1.00, 0.42),
    (5, 0.30, 0.98, 0.40), (6, 0.19, 0.99, 0.41), (7, 0.17, 1.00, 0.40), (8, 0.15, 0.98, 0.41),
    (9, 0.14, 0.97, 0.40), (10, 0.13, 0.96, 0.39), (11, 0.12, 0.80, 0.30), (12, 0.10, 0.55, 0.18),
    (13, 0.08, 0.31, 0.10), (14, 0.06, 0.18, 0.06), (15, 0.05, 0.10, 0.05), (16, 0.05, 0.10, 0.05),
]
DEGENERATE_VAL = {0: 0.40, 10: 0.45, 16: 0.06}
DEGENERATE = [_line(0, val=DEGENERATE_VAL[0])] + [
    _line(s, r, f, a, DEGENERATE_VAL.get(s)) for s, r, f, a in DEGENERATE_TABLE]


def test_converging_run_is_not_an_alarm_but_converged():
    detector = CollapseDetector()
    converged_at = []
    for line in CONVERGING:
        assert detector.observe(line) == []
        assert detector.metric_value() == 0.0
        converged_at.append(detector.converged)
    # ratio < 0.2 from step 17 -> 5 steps at step 21; not converged before
    assert converged_at.index(True) == 21 and all(converged_at[21:])
    assert detector.converged and not detector.alarm_active and detector.alarms == []


def test_degenerate_collapse_alarms_at_the_step_degradation_appears():
    detector = CollapseDetector()
    raised = {}
    converged = {}
    for line in DEGENERATE:
        for alarm in detector.observe(line):
            raised[alarm.rule] = alarm
        converged[line["step"]] = detector.converged
        if line["step"] == 13:
            assert detector.metric_value() == 1.0
    assert {rule: a.step for rule, a in raised.items()} == {ENTROPY_RULE: 13, FORMAT_RULE: 15, VAL_DROP_RULE: 16}
    # Before the output degraded, the low entropy read as convergence.
    assert [s for s, c in converged.items() if c] == [10, 11, 12]
    entropy = raised[ENTROPY_RULE]
    assert entropy.message.startswith("entropy ratio 0.08 < 0.2 for 8 steps while format rate fell to 0.31")
    assert (entropy.value, entropy.threshold) == (0.08, 0.2)
    assert raised[FORMAT_RULE].message == "format rate 0.1 < 0.5 for 3 steps"
    assert "val accuracy 0.06" in raised[VAL_DROP_RULE].message and "best 0.45" in raised[VAL_DROP_RULE].message
    assert detector.alarm_active and not detector.converged


def test_falling_train_accuracy_alone_is_degradation():
    # Boxed but wrong answers: format stays fine, only the smoothed train accuracy shows it.
    # With val_drop 0.05: step 12 window 8-12 = (.41+.40+.39+.30+.18)/5 = 0.336, best 0.408,
    # drop 0.072 > 0.05 (step 11: 0.38, drop 0.028, not yet); format 0.55 is not < 0.5.
    detector, alarms = _run(DEGENERATE, CollapseRules(val_drop=0.05))
    entropy = [a for a in alarms if a.rule == ENTROPY_RULE]
    assert [a.step for a in entropy] == [12]
    assert "train accuracy (mean of 5 steps) fell to 0.336 from its best 0.408" in entropy[0].message
    assert "format rate fell" not in entropy[0].message


def test_validation_drop_alone_alarms_and_rearms_after_recovery():
    lines = [_line(0, val=0.40), _line(1, 0.9, 1.0, 0.4), _line(2, 0.9, 1.0, 0.4, val=0.52),
             _line(3, 0.9, 1.0, 0.4), _line(4, 0.9, 1.0, 0.4, val=0.47),  # 0.05 below best: fine
             _line(5, 0.9, 1.0, 0.4, val=0.38),  # 0.14 below 0.52 -> alarm
             _line(6, 0.9, 1.0, 0.4),  # no validation: still active, not raised again
             _line(7, 0.9, 1.0, 0.4, val=0.50),  # recovered -> cleared
             _line(8, 0.9, 1.0, 0.4, val=0.30)]  # again -> raised again
    detector = CollapseDetector()
    per_step = [[a.rule for a in detector.observe(line)] for line in lines]
    assert per_step == [[], [], [], [], [], [VAL_DROP_RULE], [], [], [VAL_DROP_RULE]]
    assert [a.step for a in detector.alarms] == [5, 8]
    assert detector.alarms[0].message == "val accuracy 0.38 is 0.14 below its best 0.52 (> 0.1)"


@pytest.mark.parametrize("bad", [{"train/loss": None}, {"train/loss": float("nan")},
                                 {"collapse/grad_norm": float("inf")}, {"collapse/grad_norm": None}])
def test_nonfinite_loss_or_grad_norm_alarms_immediately(bad):
    detector = CollapseDetector()
    assert detector.observe(_line(1, 1.0, 1.0, 0.4)) == []
    alarms = detector.observe({**_line(2, 1.0, 1.0, 0.4), **bad})
    assert [(a.rule, a.step) for a in alarms] == [(NONFINITE_RULE, 2)]
    assert next(iter(bad)) in alarms[0].message and detector.metric_value() == 1.0
    assert detector.observe(_line(3, 1.0, 1.0, 0.4)) == [] and detector.metric_value() == 0.0  # cleared


def test_line_without_loss_keeps_the_nonfinite_alarm():
    # A validation-only line says nothing about the loss: the alarm neither clears nor repeats.
    detector = CollapseDetector()
    assert [a.step for a in detector.observe({"step": 2, "train/loss": None})] == [2]
    assert detector.observe({"step": 3, "val/accuracy": 0.4}) == [] and detector.metric_value() == 1.0
    assert detector.observe({"step": 4, "train/loss": float("nan")}) == []  # same episode, not raised again
    assert len(detector.alarms) == 1


def test_nonfinite_needs_the_key_and_the_rule():
    detector = CollapseDetector()
    assert detector.observe({"step": 0, "val/accuracy": 0.3}) == []  # no loss key: no evidence
    assert CollapseDetector(CollapseRules(nonfinite_loss=False)).observe({"step": 1, "train/loss": None}) == []


def test_without_require_degradation_low_entropy_alone_alarms():
    detector, alarms = _run(CONVERGING, CollapseRules(require_degradation=False))
    assert [(a.rule, a.step) for a in alarms] == [(ENTROPY_RULE, 21)]  # 5th step below 0.2 (17..21)
    assert alarms[0].message == "entropy ratio 0.16 < 0.2 for 5 steps"
    assert detector.alarm_active and not detector.converged


def test_low_entropy_without_any_accuracy_is_not_called_converged():
    # "Converged" claims accuracy at or near its best; with no accuracy seen it is unknown.
    detector = CollapseDetector()
    detector.observe_all([_line(s, 0.1, 1.0) for s in range(1, 8)])
    assert not detector.converged and not detector.alarm_active
    detector.observe_all([_line(s, 0.1, 1.0, 0.8) for s in range(8, 13)])  # a full accuracy window
    assert detector.converged


def test_format_rule_raises_once_and_again_after_clearing():
    fmts = [1.0, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1, 0.9, 0.3, 0.3, 0.3, 0.3]
    #        1    2    3    4*   5    6    7    8 (clears) 9  10  11*  12
    detector = CollapseDetector()
    steps = [a.step for s, f in enumerate(fmts, 1) for a in detector.observe(_line(s, 1.0, f, 0.4))]
    assert steps == [4, 11]
    assert all(a.rule == FORMAT_RULE for a in detector.alarms)


def test_entropy_alarm_clears_when_degradation_recovers_and_raises_again():
    rules = CollapseRules(entropy_patience=2, format_patience=99)  # isolate the entropy rule
    fmts = [1.0, 1.0, 0.3, 0.3, 0.9, 0.9, 0.2]  # entropy low throughout
    detector = CollapseDetector(rules)
    per_step = [[a.rule for a in detector.observe(_line(s, 0.1, f))] for s, f in enumerate(fmts, 1)]
    assert per_step == [[], [], [ENTROPY_RULE], [], [], [], [ENTROPY_RULE]]


@pytest.mark.parametrize("split", range(1, len(DEGENERATE)))
def test_state_dict_round_trip_resumes_like_an_uninterrupted_run(split):
    uninterrupted, expected = _run(DEGENERATE)
    first = CollapseDetector()
    first.observe_all(DEGENERATE[:split])
    resumed = CollapseDetector()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.observe_all(DEGENERATE[split:])
    assert resumed.alarms == expected == uninterrupted.alarms
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert (resumed.converged, resumed.active_rules) == (uninterrupted.converged, uninterrupted.active_rules)


def test_fresh_detector_would_not_match_a_resume():
    # Guards the round-trip test: mid-streak, a detector without the state misses the alarm.
    split = 13  # DEGENERATE[13] is step 13; the entropy streak is already 7 (steps 6-12)
    fresh = CollapseDetector()
    fresh.observe_all(DEGENERATE[split:])
    assert ENTROPY_RULE not in [a.rule for a in fresh.alarms]


@pytest.mark.parametrize("field,value", [
    ("entropy_ratio_below", 0.0), ("entropy_ratio_below", 1.5), ("entropy_ratio_below", float("nan")),
    ("entropy_patience", 0), ("entropy_patience", 2.5), ("entropy_patience", True),
    ("val_drop", 0.0), ("val_drop", 1.0), ("val_drop", "0.1"),
    ("format_rate_below", -0.1), ("format_rate_below", 2.0),
    ("format_patience", 0), ("accuracy_window", 0),
    ("nonfinite_loss", "yes"), ("require_degradation", 1),
])
def test_bad_rules_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"CollapseRules.{field} "):
        CollapseRules(**{field: value})


def test_default_rules_are_valid():
    rules = CollapseRules()
    assert (rules.entropy_ratio_below, rules.entropy_patience, rules.val_drop) == (0.2, 5, 0.10)
    assert (rules.format_rate_below, rules.format_patience) == (0.5, 3)
    assert rules.nonfinite_loss and rules.require_degradation


def test_missing_keys_and_none_values_never_crash():
    detector = CollapseDetector()
    keys = ["step", "train/loss", "collapse/grad_norm", "collapse/entropy_ratio", "train/format_rate",
            "train/accuracy", "val/accuracy", "collapse/entropy"]
    values = [None, float("nan"), float("inf"), -float("inf"), 0.0, 0.05, 0.5, 1.0, 3, "x", True, [1]]
    rng = random.Random(0)
    for _ in range(300):
        line = {k: rng.choice(values) for k in keys if rng.random() < 0.6}
        alarms = detector.observe(line)
        assert all(isinstance(a, Alarm) for a in alarms)
        assert detector.metric_value() in (0.0, 1.0)
    json.dumps(detector.state_dict(), allow_nan=False)  # still valid JSON after garbage
    detector.observe({})
    detector.status()


def test_none_metrics_leave_streaks_untouched():
    # A None (non-finite) entropy ratio or format rate is no evidence: neither resets nor extends.
    rules = CollapseRules(require_degradation=False, entropy_patience=3)
    lines = [_line(1, 0.1), _line(2, 0.1), {"step": 3, "collapse/entropy_ratio": None}, {"step": 4}, _line(5, 0.1)]
    detector = CollapseDetector(rules)
    per_step = [[a.rule for a in detector.observe(line)] for line in lines]
    assert per_step == [[], [], [], [], [ENTROPY_RULE]]
    assert detector.alarms[0].step == 5 and not math.isnan(detector.alarms[0].value)


def test_missing_step_counts_on():
    detector = CollapseDetector()
    detector.observe({"step": 7})
    assert detector.observe({"train/loss": None})[0].step == 8


def test_module_imports_no_heavy_dependency():
    code = ("import sys, mssr_cli.training.collapse; "
            "heavy = [m for m in ('torch', 'trl', 'wandb', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
