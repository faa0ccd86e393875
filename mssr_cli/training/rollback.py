"""Self-healing runs (``train.on_collapse=rollback``): where a collapse alarm sends the run back to, and
what changes after it. Pure Python (no torch, TRL or file access); the runner does the rest (runner.py).

A rollback restores the newest checkpoint saved before the alarm's evidence began (``Alarm.evidence_from``:
a checkpoint at RL step s predates it iff s < evidence_from; checkpoint-0, the policy before RL with the
tracker's warm start, counts), multiplies the learning rate by ``train.rollback.lr_factor`` and the KL
coefficient by ``train.rollback.kl_factor``, and moves the seed of the data order and of the rollouts to
``seed + 1000 x rollbacks``, so the abandoned rollouts are not drawn again. After ``train.rollback.max_times``
rollbacks the next alarm stops the run as ``train.on_collapse=stop`` does.

The history of rollbacks is saved in every checkpoint (``mssr_state.json``) and in the run folder
(``rollbacks.json``, written before the run goes on), so ``--resume`` keeps the lowered lr, the KL and the
seed: a checkpoint saved after a rollback holds them; one saved before it (the restored one, when the run was
killed before its next checkpoint) is resumed exactly as the rollback resumed it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SEED_STRIDE = 1000  # rollback k samples with seed + 1000 k: far from the seeds of neighbouring runs (0, 1, 2, ...)


@dataclass(frozen=True)
class RunSettings:
    """What a rollback changes: the learning rate, the KL coefficient (TRL's beta) and the sampling seed."""

    lr: float
    kl_coef: float
    seed: int


def rollback_step(checkpoint_steps, evidence_from: int | None) -> int | None:
    """The RL step of the checkpoint to restore: the newest one before the evidence (s < evidence_from);
    None when none predates it (or the alarm says nothing about where its evidence began)."""
    if evidence_from is None:
        return None
    usable = [step for step in checkpoint_steps if step < evidence_from]
    return max(usable) if usable else None


def earliest_evidence(alarms):
    """Of the alarms raised at one step, the one whose evidence begins first (a rollback must predate them all)."""
    return min(alarms, key=lambda a: (a.evidence_from is None, a.evidence_from if a.evidence_from is not None else 0))


def settings_after(current: RunSettings, base_seed: int, number: int, lr_factor: float, kl_factor: float) -> RunSettings:
    """The settings after rollback number ``number`` (1, 2, ...), from those in use before it."""
    return RunSettings(lr=current.lr * lr_factor, kl_coef=current.kl_coef * kl_factor,
                       seed=base_seed + SEED_STRIDE * number)


@dataclass
class Rollback:
    """One rollback, as summary.json's ``rollbacks`` and rollbacks.json list it."""

    number: int  # 1 for the first rollback of the run
    alarm_step: int  # the RL step whose alarm caused it
    rule: str
    message: str
    evidence_from: int
    restored_step: int  # the RL step of the checkpoint restored
    checkpoint: str  # that checkpoint's folder name
    lr: float  # the settings from then on
    kl_coef: float
    seed: int
    tokens: int  # completion tokens generated up to the alarm: train/tokens goes on from there

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Rollback:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def settings(self) -> RunSettings:
        return RunSettings(self.lr, self.kl_coef, self.seed)


class RollbackHistory:
    """The rollbacks of a run, oldest first; saved in each checkpoint's mssr_state.json (``state_dict``)."""

    def __init__(self, base: RunSettings, entries=()):
        self.base = base
        self.entries: list[Rollback] = [e if isinstance(e, Rollback) else Rollback.from_dict(e) for e in entries]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def settings(self) -> RunSettings:
        """The settings in use now: the configured ones, or those of the latest rollback."""
        return self.entries[-1].settings if self.entries else self.base

    @property
    def abandoned_steps(self) -> int:
        """RL steps trained and then abandoned: the rollouts they used still count as cost."""
        return sum(e.alarm_step - e.restored_step for e in self.entries)

    def add(self, alarm, restored_step: int, checkpoint: str, tokens: int, lr_factor: float, kl_factor: float) -> Rollback:
        number = len(self.entries) + 1
        new = settings_after(self.settings, self.base.seed, number, lr_factor, kl_factor)
        entry = Rollback(number, alarm.step, alarm.rule, alarm.message, alarm.evidence_from, restored_step,
                         checkpoint, new.lr, new.kl_coef, new.seed, int(tokens))
        self.entries.append(entry)
        return entry

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.entries]

    def state_dict(self) -> dict:
        return {"rollbacks": self.to_list()}

    def load_state_dict(self, state: dict) -> None:
        """A checkpoint's history. The longer history wins: a checkpoint saved before the latest rollback (the
        one that rollback restored) knows fewer than the run folder's record, never more."""
        entries = [Rollback.from_dict(e) for e in state.get("rollbacks", [])]
        if len(entries) > len(self.entries):
            self.entries = entries
