"""One run of a batch (an ablation's or a sweep's), and the command that trains it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.fileio import write_text_atomic
from mssr_cli.secrets import redact

ERROR_LOG = "error.log"  # in the run folder: a failed run's stderr, secrets masked


@dataclass
class PlannedRun:
    name: str  # the run folder's name inside the batch folder
    overrides: list[str]
    max_steps: int
    status: str = "pending"  # pending | skipped | done | failed | busy (running elsewhere) | queued (submitted, not finished)
    error: str | None = None
    folder: Path | None = field(default=None, repr=False)
    resume: bool = False  # the run folder exists: `mssr train --resume` with only the overrides --resume allows


def train_command(run: PlannedRun, folder: Path, extra: list[str] | tuple = ()) -> list[str]:
    """``mssr train`` for one run. The same command starts it, resumes it after a kill, a requeue or a
    resubmission (a run folder of the same settings resumes from its newest checkpoint) and refuses to wipe it."""
    head = [sys.executable, "-m", "mssr_cli", "train"]
    if run.resume:
        return [*head, "--resume", str(folder), *run.overrides, "logging.progress=false", *extra]
    return [*head, *run.overrides, "logging.progress=false", *extra, "--run-dir", str(folder)]


def eval_command(folder: Path, benchmarks: list[str], limit: int | None) -> list[str]:
    """``mssr eval`` of a finished run on the batch's benchmarks; it writes ``<run>/eval/``."""
    command = [sys.executable, "-m", "mssr_cli", "eval", "--benchmarks", ",".join(benchmarks), "--model", str(folder)]
    return command + (["--limit", str(limit)] if limit is not None else [])


def eval_done(folder: Path, benchmarks: list[str], limit: int | None) -> bool:
    """``<run>/eval/summary.json`` holds every one of ``benchmarks``, evaluated with this ``limit``."""
    import json

    try:
        summary = json.loads((folder / "eval" / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("limit") == limit and set(benchmarks) <= set(summary.get("benchmarks") or {})


def steps_done(folder: Path) -> int:
    """RL steps a run folder has logged (line 0 is the validation before training; abandoned lines do not count)."""
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        return 0
    with metrics.open() as f:
        return max(sum(1 for line in f if '"abandoned": true' not in line) - 1, 0)


def record_failure(folder: Path, stderr_text: str, returncode: int) -> str:
    """Keep a failed run's stderr as ``error.log`` in its folder (a traceback can quote a URL or a key from the
    environment: the log keeps neither); returns the one-line error: exit code, last line, where the log is."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / ERROR_LOG
    write_text_atomic(log, redact(stderr_text))
    return f"exit {returncode}: {last_line(log)} (full log: {log})"


def last_line(log: Path) -> str:
    """The last non-empty line of a log (a traceback's exception), or 'no output'."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"
