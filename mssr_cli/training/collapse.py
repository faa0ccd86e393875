"""Collapse detection: turn each RL step's metrics line into alarms (``collapse/alarm``).

Pure Python on purpose (no torch, TRL or W&B import): it runs inside the training loop on
the line ``RunLogger`` writes, and offline over a recorded ``metrics.jsonl``.

Four rules, each with a reason to exist:

- ``entropy_collapse``: the entropy ratio (``collapse/entropy_ratio``) stays below a
  threshold. Low entropy alone is not failure: on a task with one short answer it is
  convergence (a tiny-model probe sat at 0.06 nats with 0.87 accuracy). The collapses that
  mattered ended in degenerate output (``}}}}}}``) with the format rate and accuracy
  falling. So, by default (``require_degradation``), low entropy only alarms together with
  evidence of degradation; low entropy with accuracy at or near its best is reported as
  ``converged`` (information, not an alarm).
- ``val_drop``: validation accuracy falls from its best by more than ``val_drop``; the
  held-out number is the one a run is judged on, so losing it is a failure by itself.
- ``format_collapse``: the share of completions with a boxed answer
  (``train/format_rate``) stays low; without an answer there is no reward to learn from,
  and it is the first visible sign of degenerate output.
- ``nonfinite``: a loss or grad norm that is None/NaN/inf; the update that follows would
  corrupt the weights, so it alarms at once. Also an update skipped for its non-finite gradient norm
  (``train/skipped_updates`` > 0, ``train.skip_nonfinite_updates``): the logged grad norm is only the
  step's last update's, and the skip kept the weights but not the step's learning.

Every threshold decides its boundary as written, through ``mssr_cli.thresholds``: a fall of exactly
``val_drop`` (0.4 to 0.3, which floats make 0.10000000000000003) is not "more than" it, a rate exactly at
``format_rate_below`` is not below it; a value within 1e-6 of its threshold counts as on it.

Each rule raises one ``Alarm`` when it becomes true and stays quiet while it stays true; it
can raise again only after it has cleared. A metric that is missing (or None, for the
threshold rules) from a line is no evidence either way: counters and bests stay as they are.

Each alarm also says where its evidence begins (``Alarm.evidence_from``): the first RL step whose
*policy* (the state a checkpoint of that step holds) the evidence implicates, so a checkpoint at step
s predates the trouble iff s < evidence_from (``train.on_collapse=rollback`` restores the newest such).
A step's rollouts are sampled from the policy after the step before, so a streak of low format or
entropy that begins at line e implicates the policy of step e - 1; validation at step b measures the
policy after step b, so a drop from the best validation at b implicates step b + 1; a non-finite loss
at step n is the update of step n going wrong (the policy of step n - 1 was still finite).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields

from mssr_cli.thresholds import above, below

ENTROPY_RULE = "entropy_collapse"
VAL_DROP_RULE = "val_drop"
FORMAT_RULE = "format_collapse"
NONFINITE_RULE = "nonfinite"
RULES = (ENTROPY_RULE, VAL_DROP_RULE, FORMAT_RULE, NONFINITE_RULE)

# Metric names read from a line (README: Metrics)
ENTROPY_RATIO_KEY = "collapse/entropy_ratio"
FORMAT_RATE_KEY = "train/format_rate"
TRAIN_ACCURACY_KEY = "train/accuracy"
VAL_ACCURACY_KEY = "val/accuracy"
NONFINITE_KEYS = ("train/loss", "collapse/grad_norm")
SKIPPED_KEY = "train/skipped_updates"  # updates skipped on a non-finite gradient norm this step

STATE_VERSION = 1


@dataclass
class CollapseRules:
    """Thresholds of the collapse detector; validated on construction (ValueError names the field)."""

    entropy_ratio_below: float = 0.2  # entropy / entropy of the first steps; alarm side is below
    entropy_patience: int = 5  # consecutive low-entropy steps before the entropy rule holds
    val_drop: float = 0.10  # absolute fall from the best accuracy (val, and smoothed train as evidence)
    format_rate_below: float = 0.5  # share of completions with a boxed answer
    format_patience: int = 3  # consecutive low-format steps before the format rule holds
    nonfinite_loss: bool = True  # alarm on a None/NaN/inf loss or grad norm
    require_degradation: bool = True  # low entropy alarms only with degradation; else it is "converged"
    accuracy_window: int = 5  # steps in the moving mean of train accuracy (one batch is noisy)

    def __post_init__(self):
        for name in ("entropy_ratio_below", "format_rate_below"):
            _check_fraction(name, getattr(self, name), upper_inclusive=True)
        _check_fraction("val_drop", self.val_drop, upper_inclusive=False)
        for name in ("entropy_patience", "format_patience", "accuracy_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CollapseRules.{name} must be an integer >= 1, got {value!r}")
        for name in ("nonfinite_loss", "require_degradation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"CollapseRules.{name} must be true or false, got {getattr(self, name)!r}")


def _check_fraction(name: str, value, upper_inclusive: bool) -> None:
    ok = _finite(value) is not None and 0 < value and (value <= 1 if upper_inclusive else value < 1)
    if not ok:
        bound = "0 < x <= 1" if upper_inclusive else "0 < x < 1"
        raise ValueError(f"CollapseRules.{name} must be a number with {bound}, got {value!r}")


@dataclass
class Alarm:
    """One raised alarm: which rule, at which RL step, and a one-line message for a human."""

    rule: str
    step: int
    message: str
    value: float | None = None  # the metric that tripped the rule (None: it was non-finite)
    threshold: float | None = None
    evidence_from: int | None = None  # first RL step whose policy the evidence implicates (module docstring)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(value) -> float | None:
    """The value as a float when it is a finite real number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _streak_start(streak: int, start: int | None, step: int) -> int | None:
    """The step a streak of ``streak`` consecutive lines began at, after this line (``step``) was counted."""
    if streak == 0:
        return None
    if streak == 1:
        return step
    return start if start is not None else step - streak + 1  # a state saved before starts were kept


def _policy_of(first_line: int | None) -> int | None:
    """The policy that sampled a line's rollouts: the one after the step before (never before step 0)."""
    return None if first_line is None else max(first_line - 1, 0)


class CollapseDetector:
    """Watches the per-step metrics lines; ``observe(line)`` returns the alarms newly raised.

    After each ``observe``: ``alarm_active`` (some rule holds at this step), ``converged``
    (low entropy without degradation), ``active_rules``, ``alarms`` (every alarm raised so
    far) and ``metric_value()`` (``collapse/alarm``: 1.0 while any rule holds, else 0.0).
    """

    def __init__(self, rules: CollapseRules | None = None):
        self.rules = rules or CollapseRules()
        self.alarms: list[Alarm] = []
        self.step: int | None = None
        self.converged = False
        self._active = dict.fromkeys(RULES, False)
        self._entropy_streak = 0
        self._entropy_streak_start: int | None = None  # step of the current low-entropy streak's first line
        self._last_entropy_ratio: float | None = None
        self._format_streak = 0
        self._format_streak_start: int | None = None
        self._last_format_rate: float | None = None
        self._train_acc: deque[float] = deque(maxlen=self.rules.accuracy_window)
        self._best_train_acc: float | None = None  # best moving mean over a full window
        self._best_train_step: int | None = None  # the step that window ends at
        self._best_val: float | None = None
        self._best_val_step: int | None = None
        self._last_val: float | None = None

    # ---- per step -------------------------------------------------------------------------
    def observe(self, line: dict) -> list[Alarm]:
        """Update counters and bests from one metrics line; return the alarms raised at this step."""
        step = line.get("step")
        self.step = step if isinstance(step, int) and not isinstance(step, bool) else (
            0 if self.step is None else self.step + 1)
        self._update_state(line)

        holds = {  # each rule: (holds now, message, value, threshold); None = no evidence this step
            NONFINITE_RULE: self._nonfinite(line),
            VAL_DROP_RULE: self._val_drop(),
            FORMAT_RULE: self._format_collapse(),
            ENTROPY_RULE: self._entropy_collapse(),
        }
        raised = []
        for rule in RULES:
            verdict = holds[rule]
            if verdict is None:
                continue  # unknown: keep the rule's state
            on, message, value, threshold = verdict
            if on and not self._active[rule]:
                raised.append(Alarm(rule, self.step, message, value, threshold, self.evidence_from(rule)))
            self._active[rule] = on
        self.converged = self._entropy_low() and not self._active[ENTROPY_RULE] and not self._degradation() \
            and (self._best_train_acc is not None or self._best_val is not None)
        self.alarms.extend(raised)
        return raised

    def observe_all(self, lines) -> list[Alarm]:
        """Observe a whole recorded run (e.g. the lines of metrics.jsonl); return every alarm raised.
        Lines of an abandoned attempt (``"abandoned": true``, left by a collapse rollback) are not the
        run's trajectory and are skipped."""
        return [alarm for line in lines if not line.get("abandoned") for alarm in self.observe(line)]

    def evidence_from(self, rule: str) -> int | None:
        """The first RL step whose policy the rule's current evidence implicates (see the module docstring):
        a checkpoint at step s predates it iff s < evidence_from. None when the rule has no evidence now."""
        if rule == NONFINITE_RULE:
            return self.step
        if rule == VAL_DROP_RULE:
            return None if self._best_val_step is None else self._best_val_step + 1
        if rule == FORMAT_RULE:
            return _policy_of(self._format_streak_start)
        if rule == ENTROPY_RULE:
            low = _policy_of(self._entropy_streak_start)
            if low is None or not self.rules.require_degradation:
                return low
            starts = self._degradation_starts()  # low entropy is convergence until output degrades too
            return max(low, min(starts)) if starts else low
        raise ValueError(f"unknown collapse rule {rule!r}; valid: {', '.join(RULES)}")

    def healthy_before(self) -> int:
        """A checkpoint at RL step s < this is healthy: no alarm raised from here on can have evidence that
        begins at or before s. A lower bound of every rule's future ``evidence_from``: a low format or entropy
        streak under way begins where it began (a new one at the next line: the policy of this step); a val
        drop begins after the best validation, which can only move later; non-finite values at a later step.
        ``train.on_collapse=rollback`` keeps the newest checkpoint below it (runs.checkpoints.drop_old)."""
        bounds = [self.step, _policy_of(self._format_streak_start if self._format_streak else None),
                  _policy_of(self._entropy_streak_start if self._entropy_streak else None),
                  None if self._best_val_step is None else self._best_val_step + 1]
        return min((b for b in bounds if b is not None), default=0)  # nothing observed yet: only checkpoint-0

    @property
    def alarm_active(self) -> bool:
        return any(self._active.values())

    @property
    def active_rules(self) -> list[str]:
        return [rule for rule in RULES if self._active[rule]]

    def metric_value(self) -> float:
        """``collapse/alarm``: 1.0 while any rule holds at the latest step, else 0.0."""
        return 1.0 if self.alarm_active else 0.0

    def status(self) -> dict:
        """A JSON-able snapshot for the summary or the progress bar."""
        return {"step": self.step, "alarm_active": self.alarm_active, "converged": self.converged,
                "active_rules": self.active_rules, "alarms": len(self.alarms)}

    # ---- state ----------------------------------------------------------------------------
    def _update_state(self, line: dict) -> None:
        ratio = _finite(line.get(ENTROPY_RATIO_KEY))
        if ratio is not None:
            self._last_entropy_ratio = ratio
            self._entropy_streak = self._entropy_streak + 1 if below(ratio, self.rules.entropy_ratio_below) else 0
            self._entropy_streak_start = _streak_start(self._entropy_streak, self._entropy_streak_start, self.step)
        fmt = _finite(line.get(FORMAT_RATE_KEY))
        if fmt is not None:
            self._last_format_rate = fmt
            self._format_streak = self._format_streak + 1 if below(fmt, self.rules.format_rate_below) else 0
            self._format_streak_start = _streak_start(self._format_streak, self._format_streak_start, self.step)
        acc = _finite(line.get(TRAIN_ACCURACY_KEY))
        if acc is not None:
            self._train_acc.append(acc)
            smoothed = self._smoothed_train_acc()
            if smoothed is not None and (self._best_train_acc is None or above(smoothed, self._best_train_acc)):
                self._best_train_acc, self._best_train_step = smoothed, self.step
        val = _finite(line.get(VAL_ACCURACY_KEY))
        if val is not None:
            self._last_val = val
            if self._best_val is None or above(val, self._best_val):  # ties keep the earlier step
                self._best_val, self._best_val_step = val, self.step

    def _smoothed_train_acc(self) -> float | None:
        # Only full windows: a best set by one lucky early batch would make later noise look like a drop.
        if len(self._train_acc) < self.rules.accuracy_window:
            return None
        return sum(self._train_acc) / len(self._train_acc)

    # ---- rules ----------------------------------------------------------------------------
    def _nonfinite(self, line: dict):
        """A loss/grad norm that is present but not a finite number; absent keys are no evidence."""
        if not self.rules.nonfinite_loss:
            return False, "", None, None
        present = [key for key in NONFINITE_KEYS if key in line]
        skipped = line.get(SKIPPED_KEY)
        if not present and skipped is None:
            return None
        bad = [f"{key}={line[key]!r}" for key in present if _finite(line[key]) is None]
        if _finite(skipped) is not None and skipped > 0:
            bad.append(f"{SKIPPED_KEY}={skipped:g} (optimizer updates skipped on a non-finite gradient norm)")
        if not bad:
            return False, "", None, None
        shown = ", ".join(bad)
        return True, f"non-finite {shown} at step {self.step}", None, None

    def _val_drop(self):
        if self._last_val is None:
            return None
        drop = self._best_val - self._last_val
        message = (f"val accuracy {_fmt(self._last_val)} is {_fmt(drop)} below its best {_fmt(self._best_val)}"
                   f" (> {_fmt(self.rules.val_drop)})")
        return above(drop, self.rules.val_drop), message, self._last_val, self.rules.val_drop

    def _format_collapse(self):
        if self._last_format_rate is None:
            return None
        rules = self.rules
        message = (f"format rate {_fmt(self._last_format_rate)} < {_fmt(rules.format_rate_below)}"
                   f" for {self._format_streak} steps")
        return self._format_streak >= rules.format_patience, message, self._last_format_rate, rules.format_rate_below

    def _entropy_low(self) -> bool:
        return self._entropy_streak >= self.rules.entropy_patience

    def _degradation(self) -> list[str]:
        """Evidence that output is getting worse, one phrase each; empty when there is none."""
        rules, evidence = self.rules, []
        if self._last_format_rate is not None and below(self._last_format_rate, rules.format_rate_below):
            evidence.append(f"format rate fell to {_fmt(self._last_format_rate)} (< {_fmt(rules.format_rate_below)})")
        smoothed = self._smoothed_train_acc()
        if smoothed is not None and above(self._best_train_acc - smoothed, rules.val_drop):
            evidence.append(f"train accuracy (mean of {rules.accuracy_window} steps) fell to {_fmt(smoothed)}"
                            f" from its best {_fmt(self._best_train_acc)}")
        if self._last_val is not None and above(self._best_val - self._last_val, rules.val_drop):
            evidence.append(f"val accuracy fell to {_fmt(self._last_val)} from its best {_fmt(self._best_val)}")
        return evidence

    def _degradation_starts(self) -> list[int]:
        """Where each piece of degradation evidence (``_degradation``) begins, as evidence_from steps."""
        rules, starts = self.rules, []
        if self._last_format_rate is not None and below(self._last_format_rate, rules.format_rate_below):
            starts.append(_policy_of(self._format_streak_start))
        smoothed = self._smoothed_train_acc()
        if smoothed is not None and above(self._best_train_acc - smoothed, rules.val_drop) and self._best_train_step is not None:
            starts.append(self._best_train_step)  # the policy after the best window sampled the first worse line
        if self._last_val is not None and above(self._best_val - self._last_val, rules.val_drop) and self._best_val_step is not None:
            starts.append(self._best_val_step + 1)
        return [s for s in starts if s is not None]

    def _entropy_collapse(self):
        if self._last_entropy_ratio is None:
            return None
        rules = self.rules
        message = (f"entropy ratio {_fmt(self._last_entropy_ratio)} < {_fmt(rules.entropy_ratio_below)}"
                   f" for {self._entropy_streak} steps")
        on = self._entropy_low()
        if rules.require_degradation:
            evidence = self._degradation()
            on = on and bool(evidence)
            if evidence:
                message += " while " + "; ".join(evidence)
        return on, message, self._last_entropy_ratio, rules.entropy_ratio_below

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters, bests, active rules and alarm history; JSON-serialisable (rules are config, not state)."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "converged": self.converged,
            "active": dict(self._active),
            "alarms": [alarm.to_dict() for alarm in self.alarms],
            "entropy_streak": self._entropy_streak,
            "entropy_streak_start": self._entropy_streak_start,
            "last_entropy_ratio": self._last_entropy_ratio,
            "format_streak": self._format_streak,
            "format_streak_start": self._format_streak_start,
            "last_format_rate": self._last_format_rate,
            "train_acc": list(self._train_acc),
            "best_train_acc": self._best_train_acc,
            "best_train_step": self._best_train_step,
            "best_val": self._best_val,
            "best_val_step": self._best_val_step,
            "last_val": self._last_val,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"collapse detector state version {state.get('version')!r}, expected {STATE_VERSION}")
        alarm_fields = {f.name for f in fields(Alarm)}
        self.step = state["step"]
        self.converged = bool(state["converged"])
        self._active = {rule: bool(state["active"].get(rule, False)) for rule in RULES}
        self.alarms = [Alarm(**{k: v for k, v in a.items() if k in alarm_fields}) for a in state["alarms"]]
        self._entropy_streak = int(state["entropy_streak"])
        self._last_entropy_ratio = state["last_entropy_ratio"]
        self._format_streak = int(state["format_streak"])
        self._last_format_rate = state["last_format_rate"]
        self._train_acc = deque(state["train_acc"], maxlen=self.rules.accuracy_window)
        self._best_train_acc = state["best_train_acc"]
        self._best_val = state["best_val"]
        self._last_val = state["last_val"]
        # where evidence begins: absent from states saved before evidence_from existed (unknown: None)
        self._entropy_streak_start = state.get("entropy_streak_start")
        self._format_streak_start = state.get("format_streak_start")
        self._best_train_step = state.get("best_train_step")
        self._best_val_step = state.get("best_val_step")
