"""Run a batch of ``mssr train`` runs (an ablation's, a sweep's), each in its own process and run folder, on the
executor the runs' config names (``executor=local`` here, ``executor=slurm`` as jobs of the cluster).

A run whose folder already holds ``summary.json`` is skipped: running the same command again continues where it
stopped, and an unfinished run resumes from its newest checkpoint. A folder holding a run of other settings is
refused before anything runs, naming the keys: its results are never reported as this command's (the executor's
keys say where a run runs, not what it computes, and are not compared). Locally, a run another process is running
is left to it; on SLURM, a run whose recorded job is queued or running is left to that job, and a failed, cancelled,
preempted or timed-out one is resubmitted (it resumes from its newest checkpoint).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

from mssr_cli.executors.planned import PlannedRun, steps_done  # noqa: F401 (PlannedRun: also imported from here)

WAIT_POLL_S = 3.0


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


def run_batch(runs: list[PlannedRun], out: Path, console) -> list[PlannedRun]:
    """Run every planned run here, one after another (``executor=local``, ``max_parallel`` 1)."""
    from mssr_cli.executors.local import run_local

    return run_local(runs, out, console, max_parallel=1)


def print_outcome(runs: list[PlannedRun], console) -> None:
    done = sum(r.status in ("done", "skipped") for r in runs)
    failed = [r for r in runs if r.status not in ("done", "skipped", "busy", "queued")]
    busy = [r for r in runs if r.status == "busy"]
    console.print(f"{done}/{len(runs)} runs finished" + (f", {len(busy)} running elsewhere (not compared)" if busy else "")
                  + (f", {len(failed)} did not finish:" if failed else ""))
    for r in failed:
        console.print(f"  {r.name}: {r.status}" + (f": {r.error}" if r.error else ""))


def run_plan(runs: list[PlannedRun], out: Path, title: str, dry_run: bool, console, metric: str = "val/accuracy",
             reference: str | None = None, wait: bool = True) -> Path:
    """Print the planned runs; unless ``dry_run``, run (or submit) them and compare the finished ones."""
    from rich.table import Table

    from mssr_cli.config.compose import compose

    check_existing(runs, out)  # before anything runs: never report another settings' results as these
    configs = [compose(r.overrides) for r in runs]
    executors = {cfg.executor.name for cfg in configs}
    if len(executors) > 1:
        from mssr_cli.config.compose import ConfigError

        raise ConfigError(f"one batch, one executor: the runs name {', '.join(sorted(executors))}")
    executor = executors.pop()
    table = Table(title=f"{title}: {len(runs)} runs into {out} (executor={executor})")
    table.add_column("run")
    table.add_column("overrides")
    for r in runs:
        table.add_row(r.name, " ".join(r.overrides))
    console.print(table)
    if dry_run:
        if executor == "slurm":
            print_batch_scripts(runs, configs, out, console)
        return out

    if executor == "slurm":
        submitted = submit_to_slurm(runs, configs, out, console)
        if not wait:
            console.print(f"{'Submitted' if submitted else 'Nothing new submitted'}; not waiting (--no-wait). Watch with "
                          f"`mssr status {out}`, cancel with `mssr cancel {out}`, and compare the finished runs with "
                          f"`mssr compare {out}` (or run this command again: it waits, then compares).", soft_wrap=True)
            return out
        if not wait_for_slurm(runs, out, console):
            return out
    else:
        from mssr_cli.executors.local import run_local

        cfg = configs[0]
        run_local(runs, out, console, max_parallel=cfg.executor.max_parallel, gpus_per_run=cfg.launcher.num_processes)
    print_outcome(runs, console)
    if any(r.status in ("done", "skipped") for r in runs):
        from mssr_cli.reporting.compare import run_compare

        run_compare([out], metric=metric, reference=reference, out=out, console=console)
    return out


def _add_to_group(groups: dict, run: PlannedRun, cfg, name: str) -> None:
    """Runs of equal job parameters share one job array, named ``name``."""
    from mssr_cli.executors import slurm

    params = slurm.job_parameters(cfg.executor, cfg.launcher, name)
    groups.setdefault(json.dumps(params, sort_keys=True), (params, []))[1].append(run)


def _job_name(runs: list[PlannedRun], out: Path) -> str:
    return f"mssr-{runs[0].name if len(runs) == 1 else out.name}"


def print_batch_scripts(runs: list[PlannedRun], configs, out: Path, console) -> None:
    """--dry-run with executor=slurm: the sbatch script of each job array that would be submitted, and the
    ``mssr train`` each of its tasks runs. Submits nothing; needs no cluster."""
    from mssr_cli.executors import slurm

    groups: dict[str, tuple[dict, list[PlannedRun]]] = {}
    for run, cfg in zip(runs, configs, strict=True):
        _add_to_group(groups, run, cfg, _job_name(runs, out))
    for params, members in groups.values():
        what = f"a job array of {len(members)} tasks" if len(members) > 1 else "one job"
        console.print(f"\nBatch script ({what}; not submitted):", markup=False, highlight=False)
        console.print(slurm.batch_script(out, params, len(members)), markup=False, highlight=False, soft_wrap=True)
        for i, run in enumerate(members):
            task = f"task {i}" if len(members) > 1 else "the job"
            command = " ".join(shlex.quote(a) for a in slurm.job_command(run, out))
            console.print(f"{task} runs: {command}", markup=False, highlight=False, soft_wrap=True)


def submit_to_slurm(runs: list[PlannedRun], configs, out: Path, console, skip_finished: bool = True) -> int:
    """Submit every run that needs a job; returns how many were submitted. A finished run is skipped (unless
    ``skip_finished`` is False: a --resume that extends it), one whose job is queued or running is left to it, any other (never submitted, failed, cancelled, preempted, timed out) is
    submitted, resuming its newest checkpoint. Runs of equal job parameters go as one job array."""
    from mssr_cli.executors import slurm
    from mssr_cli.executors.records import read_jobs, write_jobs

    slurm.require_sbatch()
    records = read_jobs(out)
    known = slurm.states(out, {r.name: records[r.name] for r in runs if r.name in records})
    groups: dict[str, tuple[dict, list[PlannedRun]]] = {}
    for run, cfg in zip(runs, configs, strict=True):
        run.folder = out / run.name
        if skip_finished and (run.folder / "summary.json").exists():
            run.status = "skipped"
            console.print(f"[dim]{run.name}: finished earlier, skipped[/dim]")
            continue
        if known.get(run.name) in slurm.ACTIVE:
            run.status = "queued"
            console.print(f"[dim]{run.name}: job {records[run.name].job_id} is {known[run.name].lower()}, left to it[/dim]")
            continue
        _add_to_group(groups, run, cfg, _job_name(runs, out))
    if not groups:
        console.print("Nothing to submit: every run is finished, queued or running.")
        return 0
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        new = slurm.submit(out, list(groups.values()))
    except slurm.SlurmError:
        if not existed:  # nothing recorded: not even the folder this command made
            shutil.rmtree(out, ignore_errors=True)
        raise
    for name, rec in new.items():
        if name in records:
            rec.submissions = records[name].submissions + 1
    write_jobs(out, records | new)
    for run in runs:
        if run.name in new:
            run.status = "queued"
            again = f" (submission {new[run.name].submissions}: resumes its newest checkpoint)" if new[run.name].submissions > 1 else ""
            console.print(f"{run.name}: submitted as job {new[run.name].job_id}{again}")
    return len(new)


def wait_for_slurm(runs: list[PlannedRun], out: Path, console) -> bool:
    """Follow the batch's jobs until none is queued or running; True when it got there, False on Ctrl-C (the jobs
    keep running, and the message says how to watch, cancel and compare them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mssr_cli.executors import slurm
    from mssr_cli.executors.planned import ERROR_LOG, last_line
    from mssr_cli.executors.records import read_jobs

    records = read_jobs(out)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            overall = progress.add_task(f"{len(runs)} SLURM jobs", total=sum(r.max_steps for r in runs))
            while True:
                known = slurm.states(out, {r.name: records[r.name] for r in runs if r.name in records})
                active = [r for r in runs if known.get(r.name) in slurm.ACTIVE]
                running = sum(known.get(r.name) == "RUNNING" for r in runs)
                progress.update(overall, description=f"SLURM: {running} running, {len(active) - running} queued",
                                completed=sum(r.max_steps if (out / r.name / "summary.json").exists()
                                              else min(steps_done(out / r.name), r.max_steps) for r in runs))
                if not active:
                    break
                time.sleep(WAIT_POLL_S)
    except KeyboardInterrupt:
        console.print(f"[yellow]Stopped waiting; the jobs keep running. Watch with `mssr status {out}`, cancel with "
                      f"`mssr cancel {out}`, compare with `mssr compare {out}`.[/yellow]", soft_wrap=True)
        return False
    for run in runs:
        if (out / run.name / "summary.json").exists():
            run.status = "done" if run.status != "skipped" else "skipped"
        else:
            run.status = slurm.STATUS_OF.get(known.get(run.name, "UNKNOWN"), "failed")
            log = out / run.name / ERROR_LOG
            run.error = last_line(log) if log.exists() else f"job {records[run.name].job_id}: {known.get(run.name)}" \
                if run.name in records else None
    return True


def submit_train(cfg, overrides: list[str], run_dir: Path | None, resume: Path | None, dry_run: bool, console) -> None:
    """``mssr train ... executor=slurm``: the run as one SLURM job (``--dry-run``: its batch script), recorded in
    the jobs.json of the folder that holds the run folder, so ``mssr status`` and ``mssr cancel`` find it there."""
    from mssr_cli.runs.folder import run_name
    from mssr_cli.runs.wandb_run import folder_name

    folder = Path(resume or run_dir or Path(cfg.logging.runs_root) / folder_name(run_name(cfg)))
    run = PlannedRun(folder.name, list(overrides), int(cfg.train.max_steps), resume=resume is not None)
    out = folder.parent
    if dry_run:
        print_batch_scripts([run], [cfg], out, console)
        return
    if resume is None:
        check_existing([run], out)  # a folder of other settings: refused before anything is queued
    # --resume of a finished run extends it (train.max_steps): submitted even though summary.json exists
    if submit_to_slurm([run], [cfg], out, console, skip_finished=resume is None):
        console.print(f"The run trains in {folder}. Watch with `mssr status {out}`, cancel with `mssr cancel {out}`.",
                      soft_wrap=True)
