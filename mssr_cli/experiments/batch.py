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

from mssr_cli.executors.planned import PlannedRun, eval_command, steps_done  # noqa: F401 (PlannedRun: also imported from here)

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
             reference: str | None = None, wait: bool = True, evals: list[str] | None = None,
             eval_limit: int | None = None) -> Path:
    """Print the planned runs; unless ``dry_run``, run (or submit) them and compare the finished ones."""
    from rich.table import Table

    from mssr_cli.config.compose import compose

    check_existing(runs, out)  # before anything runs: never report another settings' results as these
    evals = checked_evals(evals, eval_limit)  # an unknown benchmark: one line before anything runs
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
            print_batch_scripts(runs, configs, out, console, evals, eval_limit)
        return out

    if executor == "slurm":
        submitted = submit_to_slurm(runs, configs, out, console, evals=evals, eval_limit=eval_limit)
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
        if evals:
            from mssr_cli.executors.local import evaluate_local

            evaluate_local([r for r in runs if r.status in ("done", "skipped")], evals, eval_limit, console)
    print_outcome(runs, console)
    if any(r.status in ("done", "skipped") for r in runs):
        from mssr_cli.reporting.compare import run_compare

        run_compare([out], metric=metric, reference=reference, out=out, console=console)
    return out


def checked_evals(evals: list[str] | None, limit: int | None) -> list[str] | None:
    """``--eval`` and ``--eval-limit`` checked (ConfigError, one line): known benchmarks, a limit >= 1 and only with
    ``--eval``."""
    from mssr_cli.config.compose import ConfigError

    if limit is not None and (not evals or limit < 1):
        raise ConfigError(f"--eval-limit {limit}: " + ("give a number of items >= 1" if evals else "it needs --eval LIST"))
    if not evals:
        return None
    from mssr_cli.evaluation.benchmarks import parse_benchmarks
    from mssr_cli.evaluation.errors import EvalError

    try:
        return parse_benchmarks(",".join(evals))
    except EvalError as err:
        raise ConfigError(f"--eval: {err}") from err


def _add_to_group(groups: dict, run: PlannedRun, params: dict) -> None:
    """Runs of equal job parameters share one job array."""
    groups.setdefault(json.dumps(params, sort_keys=True), (params, []))[1].append(run)


def _job_name(runs: list[PlannedRun], out: Path) -> str:
    return f"mssr-{runs[0].name if len(runs) == 1 else out.name}"


def print_batch_scripts(runs: list[PlannedRun], configs, out: Path, console, evals: list[str] | None = None,
                        eval_limit: int | None = None) -> None:
    """--dry-run with executor=slurm: the sbatch script of each job array that would be submitted, and the
    ``mssr train`` each of its tasks runs; with ``evals``, each run's evaluation job too (held by afterok on its
    training job when submitted). Submits nothing; needs no cluster."""
    from mssr_cli.executors import slurm

    groups: dict[str, tuple[dict, list[PlannedRun]]] = {}
    for run, cfg in zip(runs, configs, strict=True):
        _add_to_group(groups, run, slurm.job_parameters(cfg.executor, cfg.launcher, _job_name(runs, out)))
    for params, members in groups.values():
        what = f"a job array of {len(members)} tasks" if len(members) > 1 else "one job"
        nodes = params["nodes"]
        if nodes > 1:
            what += f", each over {nodes} nodes"
        console.print(f"\nBatch script ({what}; not submitted):", markup=False, highlight=False)
        console.print(slurm.batch_script(out, params, len(members)), markup=False, highlight=False, soft_wrap=True)
        for i, run in enumerate(members):
            task = f"task {i}" if len(members) > 1 else "the job"
            command = " ".join(shlex.quote(a) for a in slurm.job_command(run, out))
            if nodes > 1:  # what TrainJob adds on each node (train_job.node_overrides)
                task += f" runs on each of its {nodes} nodes"
                command += " launcher.machine_rank=<the node's SLURM_NODEID> launcher.main_process_ip=<the job's first host>"
            else:
                task += " runs"
            console.print(f"{task}: {command}", markup=False, highlight=False, soft_wrap=True)
    if not evals:
        return
    for params, members in groups.values():
        for run in members:
            console.print(f"\nBatch script of {run.name}'s evaluation (one job, held until its training job succeeds: "
                          "--dependency=afterok:<that job>; not submitted):", markup=False, highlight=False)
            console.print(slurm.batch_script(out, slurm.eval_parameters(params), 1), markup=False, highlight=False,
                          soft_wrap=True)
            command = " ".join(shlex.quote(a) for a in eval_command(out / run.name, evals, eval_limit))
            console.print(f"the job runs: {command}", markup=False, highlight=False, soft_wrap=True)


def submit_to_slurm(runs: list[PlannedRun], configs, out: Path, console, skip_finished: bool = True,
                    evals: list[str] | None = None, eval_limit: int | None = None) -> int:
    """Submit every run that needs a job; returns how many jobs were submitted. A finished run is skipped (unless
    ``skip_finished`` is False: a --resume that extends it), one whose job is queued or running is left to it, any
    other (never submitted, failed, cancelled, preempted, timed out) is submitted, resuming its newest checkpoint.
    Runs of equal job parameters go as one job array. With ``evals``, each run not yet evaluated on them also gets
    an evaluation job, held until its training job succeeds (a finished run's starts at once)."""
    from mssr_cli.executors import slurm
    from mssr_cli.executors.planned import eval_done
    from mssr_cli.executors.records import read_jobs, write_jobs

    slurm.require_sbatch()
    records = read_jobs(out)
    keys = [k for r in runs for k in (r.name, f"{r.name}:eval")]
    known = slurm.states(out, {k: records[k] for k in keys if k in records})
    groups: dict[str, tuple[dict, list[PlannedRun]]] = {}
    evaluations: list[tuple[PlannedRun, dict, str | None]] = []  # run, job parameters, the training it waits for
    stale: dict = {}  # evaluation jobs waiting for a training job that is being replaced
    for run, cfg in zip(runs, configs, strict=True):
        run.folder = out / run.name
        params = slurm.job_parameters(cfg.executor, cfg.launcher, _job_name(runs, out))
        if known.get(run.name) in slurm.ACTIVE:
            run.status, after = "queued", records[run.name].job_id
            console.print(f"[dim]{run.name}: job {after} is {known[run.name].lower()}, left to it[/dim]")
        elif skip_finished and (run.folder / "summary.json").exists():
            run.status, after = "skipped", None
            console.print(f"[dim]{run.name}: finished earlier, skipped[/dim]")
        else:
            _add_to_group(groups, run, params)
            after = run.name  # the training job submitted below
        if not evals:
            continue
        key = f"{run.name}:eval"
        if known.get(key) in slurm.ACTIVE:
            if after != run.name:
                console.print(f"[dim]{key}: job {records[key].job_id} is {known[key].lower()}, left to it[/dim]")
                continue
            stale[key] = records[key]  # it waits for the training job being replaced: cancelled, submitted anew
        elif after is None and eval_done(run.folder, evals, eval_limit):
            continue
        evaluations.append((run, slurm.eval_parameters(params), after))
    batches = [(params, [slurm.train_submission(run, out, params["nodes"]) for run in members])
               for params, members in groups.values()]
    batches += [(params, [slurm.eval_submission(run, out, evals, eval_limit, after)])
                for run, params, after in evaluations]
    if not batches:
        console.print("Nothing to submit: every run is finished, queued or running.")
        return 0
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        new = slurm.submit(out, batches)
    except slurm.SlurmError:
        if not existed:  # nothing recorded: not even the folder this command made
            shutil.rmtree(out, ignore_errors=True)
        raise
    slurm.cancel(stale)
    for key, rec in new.items():
        if key in records:
            rec.submissions = records[key].submissions + 1
    write_jobs(out, records | new)
    for key, rec in new.items():
        again = f" (submission {rec.submissions}: resumes its newest checkpoint)" if rec.submissions > 1 and rec.stage == "train" else ""
        waits = f", after job {new[rec.run].job_id if rec.run in new else records[rec.run].job_id}" \
            if rec.stage == "eval" and (rec.run in new or known.get(rec.run) in slurm.ACTIVE) else ""
        console.print(f"{key}: submitted as job {rec.job_id}{again}{waits}")
    for run in runs:
        if run.name in new:
            run.status = "queued"
    return len(new)


def wait_for_slurm(runs: list[PlannedRun], out: Path, console) -> bool:
    """Follow the batch's jobs until none is queued or running; True when it got there, False on Ctrl-C (the jobs
    keep running, and the message says how to watch, cancel and compare them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mssr_cli.executors import slurm
    from mssr_cli.executors.planned import ERROR_LOG, last_line
    from mssr_cli.executors.records import read_jobs

    records = read_jobs(out)
    ours = {key: rec for key, rec in records.items() if rec.run in {r.name for r in runs}}
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            overall = progress.add_task(f"{len(runs)} SLURM jobs", total=sum(r.max_steps for r in runs))
            while True:
                known = slurm.states(out, ours)
                drop_orphaned_evaluations(out, ours, known, console)
                active = [key for key in ours if known.get(key) in slurm.ACTIVE]
                running = sum(known.get(key) == "RUNNING" for key in ours)
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


def drop_orphaned_evaluations(out: Path, records: dict, known: dict, console) -> None:
    """An evaluation job waits (afterok) for its run's training job; once that ended otherwise than COMPLETED it
    would wait forever (DependencyNeverSatisfied): cancel it, and say so. Rerunning the command resubmits both."""
    from mssr_cli.executors import slurm

    for key, rec in records.items():
        if rec.stage != "eval" or known.get(key) not in ("PENDING",):
            continue
        train = known.get(rec.run)
        if train is not None and train not in slurm.ACTIVE and train != "COMPLETED":
            slurm.cancel({key: rec})
            known[key] = "CANCELLED"
            console.print(f"[yellow]{key}: cancelled job {rec.job_id}, its training ended {train}[/yellow]")


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
