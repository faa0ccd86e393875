"""Finished runs under a runs folder: what ``mssr eval`` evaluates when no ``--model`` is given.

A run is finished when its folder holds the final model (``model/`` with ``config.json``, or a LoRA run's
``adapter_config.json``) and a readable ``summary.json``, and no live process holds its lock. A crashed
run has no ``summary.json``; a resumed one loses it until it finishes again (``folder.write_resume``); a
run being written holds ``.lock``. It finished when ``summary.json`` was written (its modification time).
Run folders are found at any depth (ablation and sweep folders hold theirs one level down).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mssr_cli.runs.lock import busy_holder

# Files only `mssr train` writes at a run folder's top level: below such a folder there are no runs.
_RUN_FILES = ("metrics.jsonl", "summary.json", "meta.json")


@dataclass(frozen=True)
class FinishedRun:
    path: Path
    finished: float  # seconds since the epoch: when summary.json was written


def finished_run(folder: Path) -> FinishedRun | None:
    """``folder`` as a FinishedRun, or None when it is no finished run (see the module's docstring)."""
    folder = Path(folder)
    model, summary = folder / "model", folder / "summary.json"
    if not ((model / "config.json").is_file() or (model / "adapter_config.json").is_file()):
        return None
    try:
        finished = summary.stat().st_mtime
        if not isinstance(json.loads(summary.read_text()), dict):
            return None
    except (OSError, ValueError):
        return None
    if busy_holder(folder) is not None:  # being written: resumed or extended right now
        return None
    return FinishedRun(folder, finished)


def finished_runs(root: Path) -> list[FinishedRun]:
    """Every finished run at or under ``root``, newest first (ties: by path); [] when ``root`` is no folder."""
    root = Path(root)
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if any(name in files for name in _RUN_FILES):
            dirs[:] = []  # a run's checkpoints/, model/ and wandb/ hold no runs
            if (run := finished_run(Path(here))) is not None:
                found.append(run)
    return sorted(found, key=lambda r: (-r.finished, str(r.path)))


def newest_finished_run(root: Path) -> FinishedRun | None:
    """The run under ``root`` that finished last, or None when none has."""
    runs = finished_runs(root)
    return runs[0] if runs else None
