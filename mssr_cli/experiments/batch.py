"""Run a list of ``mssr train`` runs one after another, each in its own process and run folder.

A run whose folder already holds ``summary.json`` is skipped (re-running the same command
continues where it stopped; an unfinished run resumes from its last checkpoint). A failed run
is reported, its stderr kept in ``error.log`` beside it, and the rest go on. One overall progress
display follows every run's ``metrics.jsonl``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PlannedRun:
    name: str  # the run folder's name inside the batch folder
    overrides: list[str]
    max_steps: int
    status: str = "pending"  # pending | skipped | done | failed
    error: str | None = None
    folder: Path | None = field(default=None, repr=False)


def _steps_done(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        return 0
    with metrics.open() as f:
        return max(sum(1 for _ in f) - 1, 0)  # line 0 is the validation before training


def run_batch(runs: list[PlannedRun], out: Path, console) -> list[PlannedRun]:
    """Run every planned run into ``out/<name>``; returns them with their status."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out.mkdir(parents=True, exist_ok=True)
    total_steps = sum(r.max_steps for r in runs)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        overall = progress.add_task(f"{len(runs)} runs", total=total_steps)
        finished_steps = 0
        for i, run in enumerate(runs, 1):
            run.folder = out / run.name
            if (run.folder / "summary.json").exists():
                run.status = "skipped"
                finished_steps += run.max_steps
                progress.update(overall, completed=finished_steps)
                console.print(f"[dim]{run.name}: finished earlier, skipped[/dim]")
                continue
            progress.update(overall, description=f"run {i}/{len(runs)}: {run.name}")
            cmd = [sys.executable, "-m", "mssr_cli", "train", *run.overrides, "logging.progress=false",
                   "--run-dir", str(run.folder)]
            with (out / f".{run.name}.stderr").open("w") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
                while proc.poll() is None:
                    progress.update(overall, completed=finished_steps + min(_steps_done(run.folder), run.max_steps))
                    time.sleep(1.0)
            stderr_path = out / f".{run.name}.stderr"
            if proc.returncode == 0:
                run.status = "done"
                stderr_path.unlink(missing_ok=True)
            else:
                run.status = "failed"
                run.folder.mkdir(parents=True, exist_ok=True)
                log = run.folder / "error.log"
                stderr_path.replace(log)
                tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
                run.error = f"exit {proc.returncode}: {tail[0] if tail else 'no output'} (full log: {log})"
                console.print(f"[bold red]{run.name} failed[/bold red]: {run.error}")
            finished_steps += run.max_steps
            progress.update(overall, completed=finished_steps)
    return runs


def print_outcome(runs: list[PlannedRun], console) -> None:
    done = sum(r.status in ("done", "skipped") for r in runs)
    failed = [r for r in runs if r.status == "failed"]
    console.print(f"{done}/{len(runs)} runs finished" + (f", {len(failed)} failed:" if failed else ""))
    for r in failed:
        console.print(f"  {r.name}: {r.error}")


def run_plan(runs: list[PlannedRun], out: Path, title: str, dry_run: bool, console, metric: str = "val/accuracy",
             reference: str | None = None) -> Path:
    """Print the planned runs; unless ``dry_run``, run them and compare the finished ones."""
    from rich.table import Table

    table = Table(title=f"{title}: {len(runs)} runs into {out}")
    table.add_column("run")
    table.add_column("overrides")
    for r in runs:
        table.add_row(r.name, " ".join(r.overrides))
    console.print(table)
    if dry_run:
        return out

    from mssr_cli.reporting.compare import run_compare

    run_batch(runs, out, console)
    print_outcome(runs, console)
    if any(r.status in ("done", "skipped") for r in runs):
        run_compare([out], metric=metric, reference=reference, out=out, console=console)
    return out
