"""Run a list of ``mssr train`` runs one after another, each in its own process and run folder.

A run whose folder already holds ``summary.json`` is skipped (re-running the same command
continues where it stopped; an unfinished run resumes from its last checkpoint). A folder holding a
run of other settings is refused before anything runs, naming the keys: its results are never reported
as this command's. A run another process is running (the same command in a second terminal) is left
to it. A failed run is reported, its stderr kept in ``error.log`` beside it, and the rest go on. One
overall progress display follows every run's ``metrics.jsonl``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.fileio import write_text_atomic
from mssr_cli.secrets import redact


@dataclass
class PlannedRun:
    name: str  # the run folder's name inside the batch folder
    overrides: list[str]
    max_steps: int
    status: str = "pending"  # pending | skipped | done | failed | busy (running in another process)
    error: str | None = None
    folder: Path | None = field(default=None, repr=False)


def _steps_done(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        return 0
    with metrics.open() as f:  # line 0 is the validation before training; a rollback's abandoned lines do not count
        return max(sum(1 for line in f if '"abandoned": true' not in line) - 1, 0)


def check_existing(runs: list[PlannedRun], out: Path) -> None:
    """ConfigError when a planned run's folder already holds a run made with other settings."""
    from mssr_cli.config.compose import ConfigError, compose
    from mssr_cli.runs.folder import HOW_IT_RUNS, RunFolder, RunFolderError, config_diff

    clashes = []
    for run in runs:
        try:
            saved = RunFolder(out / run.name, writes=False).saved_config()
        except RunFolderError as err:
            raise ConfigError(f"{out / run.name}: {err}") from err
        if saved is not None:
            differing = config_diff(saved[0], compose(run.overrides), ignore=HOW_IT_RUNS)
            if differing:
                clashes.append(f"{run.name} ({'; '.join(differing[:3])}{'; ...' if len(differing) > 3 else ''})")
    if clashes:
        raise ConfigError(f"{out} holds runs made with other settings: {', '.join(clashes)}; "
                          f"give another --out (or delete those run folders)")


def _busy(folder: Path) -> str | None:
    from mssr_cli.runs.lock import busy_holder, describe

    holder = busy_holder(folder)
    return None if holder is None else describe(holder)


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
            if holder := _busy(run.folder):  # the same command in another terminal: it runs this one
                run.status, run.error = "busy", f"running in another process ({holder})"
                finished_steps += run.max_steps
                console.print(f"[dim]{run.name}: {run.error}, skipped here[/dim]")
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
            elif holder := _busy(run.folder):  # another process took the folder first
                run.status, run.error = "busy", f"running in another process ({holder})"
                stderr_path.unlink(missing_ok=True)
                console.print(f"[dim]{run.name}: {run.error}, skipped here[/dim]")
            else:
                run.status = "failed"
                run.folder.mkdir(parents=True, exist_ok=True)
                log = run.folder / "error.log"
                # a traceback can quote a URL or a key from the environment: error.log keeps neither
                write_text_atomic(log, redact(stderr_path.read_text(errors="replace")))
                stderr_path.unlink(missing_ok=True)
                tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
                run.error = f"exit {proc.returncode}: {tail[0] if tail else 'no output'} (full log: {log})"
                console.print(f"[bold red]{run.name} failed[/bold red]: {run.error}")
            finished_steps += run.max_steps
            progress.update(overall, completed=finished_steps)
    return runs


def print_outcome(runs: list[PlannedRun], console) -> None:
    done = sum(r.status in ("done", "skipped") for r in runs)
    failed = [r for r in runs if r.status == "failed"]
    busy = [r for r in runs if r.status == "busy"]
    console.print(f"{done}/{len(runs)} runs finished" + (f", {len(busy)} running elsewhere (not compared)" if busy else "")
                  + (f", {len(failed)} failed:" if failed else ""))
    for r in failed:
        console.print(f"  {r.name}: {r.error}")


def run_plan(runs: list[PlannedRun], out: Path, title: str, dry_run: bool, console, metric: str = "val/accuracy",
             reference: str | None = None) -> Path:
    """Print the planned runs; unless ``dry_run``, run them and compare the finished ones."""
    from rich.table import Table

    check_existing(runs, out)  # before anything runs: never report another settings' results as these
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
