"""``executor=local``: the runs of a batch as processes on this machine, ``executor.max_parallel`` at once.

A run whose folder already holds ``summary.json`` is skipped (the same command again continues where it stopped; an
unfinished run resumes from its newest checkpoint). A run another process is running (the same command in a second
terminal) is left to it. A failed run is reported, its stderr kept in ``error.log`` beside it, and the rest go on.

On a machine with GPUs each run gets its own: ``CUDA_VISIBLE_DEVICES`` holds the GPUs of its slot
(``launcher.num_processes`` of them), so 8 one-GPU runs on 8 GPUs run at once. On CPU the default is one at a time.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import deque
from pathlib import Path

from mssr_cli.executors.planned import PlannedRun, record_failure, steps_done, train_command

POLL_S = 1.0


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU torch sees (none on CPU)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(max_parallel: int | None, gpus_per_run: int | None, gpus: list[str]) -> list[str | None]:
    """One entry per run that may run at once: its CUDA_VISIBLE_DEVICES, or None (no GPU: leave the environment).

    ``gpus_per_run`` None means every GPU (``launcher.num_processes: null``). With GPUs, slots never share one:
    ``max_parallel`` is capped at the number of whole groups. Without, ``max_parallel`` (null: 1) CPU runs."""
    if not gpus:
        return [None] * (max_parallel or 1)
    per = len(gpus) if gpus_per_run is None else gpus_per_run
    groups = [",".join(gpus[i:i + per]) for i in range(0, len(gpus) - per + 1, per)] if per <= len(gpus) else []
    if not groups:  # a run wants more GPUs than there are: give it all of them, one at a time
        return [",".join(gpus)]
    return groups[: max_parallel or len(groups)]


def _busy(folder: Path) -> str | None:
    from mssr_cli.runs.lock import busy_holder, describe

    holder = busy_holder(folder)
    return None if holder is None else describe(holder)


def run_local(runs: list[PlannedRun], out: Path, console, max_parallel: int | None = 1,
              gpus_per_run: int | None = 1, gpus: list[str] | None = None) -> list[PlannedRun]:
    """Run every planned run into ``out/<name>``, up to ``len(gpu_slots(...))`` at once; returns them with their
    status. One overall progress display follows every run's ``metrics.jsonl``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out.mkdir(parents=True, exist_ok=True)
    slots = gpu_slots(max_parallel, gpus_per_run, visible_gpus() if gpus is None else gpus)
    free = deque(range(len(slots)))
    pending: deque[PlannedRun] = deque()
    finished_steps = 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        overall = progress.add_task(f"{len(runs)} runs", total=sum(r.max_steps for r in runs))
        for run in runs:
            run.folder = out / run.name
            if (run.folder / "summary.json").exists():
                run.status = "skipped"
                finished_steps += run.max_steps
                console.print(f"[dim]{run.name}: finished earlier, skipped[/dim]")
            elif holder := _busy(run.folder):  # the same command in another terminal: it runs this one
                run.status, run.error = "busy", f"running in another process ({holder})"
                finished_steps += run.max_steps
                console.print(f"[dim]{run.name}: {run.error}, skipped here[/dim]")
            else:
                pending.append(run)
        active: dict[int, tuple[PlannedRun, subprocess.Popen, Path]] = {}
        while pending or active:
            while pending and free:
                slot, run = free.popleft(), pending.popleft()
                env = dict(os.environ) if slots[slot] is None else os.environ | {"CUDA_VISIBLE_DEVICES": slots[slot]}
                stderr_path = out / f".{run.name}.stderr"
                with stderr_path.open("w") as err:
                    proc = subprocess.Popen(train_command(run, run.folder), stdout=subprocess.DEVNULL, stderr=err, env=env)
                active[slot] = (run, proc, stderr_path)
            names = ", ".join(run.name for run, _, _ in active.values())
            progress.update(overall, description=f"running {names}", completed=finished_steps + sum(
                min(steps_done(run.folder), run.max_steps) for run, _, _ in active.values()))
            time.sleep(POLL_S)
            for slot, (run, proc, stderr_path) in list(active.items()):
                if proc.poll() is None:
                    continue
                _settle(run, proc.returncode, stderr_path, console)
                finished_steps += run.max_steps
                del active[slot]
                free.append(slot)
        progress.update(overall, completed=finished_steps)
    return runs


def _settle(run: PlannedRun, returncode: int, stderr_path: Path, console) -> None:
    if returncode == 0:
        run.status = "done"
    elif holder := _busy(run.folder):  # another process took the folder first
        run.status, run.error = "busy", f"running in another process ({holder})"
        console.print(f"[dim]{run.name}: {run.error}, skipped here[/dim]")
    else:
        run.status = "failed"
        run.error = record_failure(run.folder, stderr_path.read_text(errors="replace"), returncode)
        console.print(f"[bold red]{run.name} failed[/bold red]: {run.error}")
    stderr_path.unlink(missing_ok=True)


def evaluate_local(runs: list[PlannedRun], benchmarks: list[str], limit: int | None, console) -> None:
    """``--eval`` here: each finished run not yet evaluated on ``benchmarks`` (with this ``limit``), one after
    another, into ``<run>/eval/``. A failed evaluation is reported (stderr in ``<run>/eval/error.log``) and the
    rest go on; its run stays finished."""
    from mssr_cli.executors.planned import eval_command, eval_done

    for run in runs:
        if eval_done(run.folder, benchmarks, limit):
            console.print(f"[dim]{run.name}: evaluated earlier on {', '.join(benchmarks)}, skipped[/dim]")
            continue
        console.print(f"{run.name}: evaluating on {', '.join(benchmarks)}")
        proc = subprocess.run(eval_command(run.folder, benchmarks, limit), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            error = record_failure(run.folder / "eval", proc.stderr, proc.returncode)
            console.print(f"[bold red]{run.name}: evaluation failed[/bold red]: {error}")
