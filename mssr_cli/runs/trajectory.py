"""Which lines of metrics.jsonl and samples.jsonl are the run's trajectory, and which an abandoned attempt's.

A collapse rollback (``train.on_collapse=rollback``) restores an earlier checkpoint and trains the steps
after it again. The lines of the steps it abandons stay in the files, so nothing is lost, marked
``"abandoned": true`` (and ``"abandoned_by": k``, the k-th rollback). Whatever summarises a run (summary.json,
``mssr compare``, the collapse detector's replay, resuming) reads only the kept lines: one line per step.
Pure functions on lists of dicts: no file, torch or TRL here.
"""

from __future__ import annotations

ABANDONED = "abandoned"
ABANDONED_BY = "abandoned_by"


def is_abandoned(line: dict) -> bool:
    return line.get(ABANDONED) is True


def kept(lines: list[dict]) -> list[dict]:
    """The lines of the run's final trajectory (every line of a run that never rolled back)."""
    return [line for line in lines if not is_abandoned(line)]


def mark_abandoned(lines: list[dict], after_step: int, rollback: int) -> tuple[list[dict], int]:
    """A rollback to the checkpoint of ``after_step``: every kept line of a later step becomes abandoned by
    rollback number ``rollback``; lines already abandoned keep their mark. Returns (lines, how many newly marked)."""
    out, marked = [], 0
    for line in lines:
        if not is_abandoned(line) and line["step"] > after_step:
            line = {**line, ABANDONED: True, ABANDONED_BY: rollback}
            marked += 1
        out.append(line)
    return out, marked


def restored(copy: list[dict] | None, live: list[dict], step: int) -> list[dict]:
    """The lines a run resumed at ``step`` keeps: its kept lines up to ``step`` and every abandoned line.

    ``copy`` is the checkpoint's own copy of the file (None for a checkpoint without one): it is trusted for
    the lines it holds (the live file may have lost or torn some since). Lines a rollback marked after that
    checkpoint was saved are only in ``live``; they were written after every line of the copy, so they follow it.
    """
    if copy is None:
        return [line for line in live if is_abandoned(line) or line["step"] <= step]
    out = [line for line in copy if is_abandoned(line) or line["step"] <= step]
    seen = {_key(line) for line in out}
    out += [line for line in live if is_abandoned(line) and _key(line) not in seen]
    return out


def _key(line: dict):
    import json

    return json.dumps(line, sort_keys=True)
