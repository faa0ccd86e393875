"""The ``mssr`` command line. Commands are thin: compose the config, call one function, print.

Nothing heavy is imported at module level: ``mssr --help`` must not load torch or transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mssr_cli.config.compose import GROUPS
from mssr_cli.config.paths import group_options
from mssr_cli.config.schema import COMMON_KEYS, field_help


def _groups_help() -> str:
    lines = ["Config groups (group=option):"]
    lines += [f"  {g}: {', '.join(group_options(g))}" for g in GROUPS]
    lines += ["", "Common keys (key=value):"]
    lines += [f"  {k}: {field_help(k)}" for k in COMMON_KEYS]
    lines += ["", "Every key: see README.md (Configuration) or `mssr train --dry-run`."]
    # Typer/rich re-wraps paragraphs; a blank line per entry keeps one entry per line.
    return "\n\n".join(lines)


app = typer.Typer(
    name="mssr",
    help="Single-rollout RL (MSSR, MVSR) vs GRPO for multimodal LLMs, on TRL.\n\n" + _groups_help(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _benchmarks(given: str | None) -> list[str] | None:
    return [b.strip() for b in given.split(",") if b.strip()] if given else None


@app.callback()
def main() -> None:
    """Single-rollout RL (MSSR, MVSR) vs GRPO for multimodal LLMs, on TRL."""


@app.command(epilog=_groups_help())
def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="Hydra overrides: group=option or key=value.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run folder (default: runs/<name>).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this folder from its newest checkpoint, with its saved config (overrides: only when to stop, save, validate and how to log).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Train a policy with RL on the composed config (default: MSSR on the tiny model and digits)."""
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.config.compose import ConfigError, compose

    overrides = list(overrides or [])
    typed = list(overrides)  # as given: a launcher passes these on to the processes it starts
    if resume is not None and run_dir is not None:
        fail("--resume and --run-dir: give one of them (--resume RUN_DIR continues that folder)")
    try:
        if resume is not None:
            from mssr_cli.runs.folder import resume_config

            cfg, overrides = resume_config(resume, overrides)
            run_dir = resume
        else:
            cfg = compose(overrides)
    except ConfigError as err:
        fail(str(err))
    launch_overrides = typed if resume else overrides
    if cfg.executor.name == "slurm":  # submit the run as a SLURM job (or print its batch script) and return
        from mssr_cli.executors.slurm import SlurmError
        from mssr_cli.experiments.batch import submit_train

        if dry_run:
            from mssr_cli.training.plan import print_dry_run

            print_dry_run(cfg, launch_overrides, run_dir, resume, stdout_console(), launch=False)
        try:
            submit_train(cfg, launch_overrides, run_dir, resume, dry_run, stdout_console())
        except (ConfigError, SlurmError) as err:
            fail(str(err))
        return
    if dry_run:  # the resolved config, the plan (downloads, layout, memory) and any launch command
        from mssr_cli.training.plan import print_dry_run

        print_dry_run(cfg, launch_overrides, run_dir, resume, stdout_console())
        return
    from mssr_cli.training.launch import launch_if_asked

    # launcher=ddp|zero2|zero3: re-run this command under `accelerate launch` and exit with its status
    launch_if_asked(cfg, launch_overrides, run_dir, resume, False, stdout_console())
    from mssr_cli.data.sources import DataSourceError
    from mssr_cli.fileio import describe_os_error
    from mssr_cli.runs.folder import RunFolderError
    from mssr_cli.rewards.functions import RewardFunctionError
    from mssr_cli.runs.lock import RunFolderBusy
    from mssr_cli.training.runner import run_training

    try:
        run_training(cfg, overrides, run_dir)
    except (DataSourceError, RunFolderError, RunFolderBusy, RewardFunctionError) as err:  # bad data, a folder in use or of another run
        fail(str(err))
    except OSError as err:  # disk full, a read-only folder: what and where, one line
        fail(describe_os_error(err))


@app.command(epilog=_groups_help())
def ablate(
    overrides: Annotated[list[str] | None, typer.Argument(help="Hydra overrides of the base run (default base: algo=mssr).")] = None,
    no_shaping: Annotated[bool, typer.Option("--no-shaping", help="Short for --variants no_shaping.")] = False,
    variants: Annotated[str | None, typer.Option("--variants", help="Comma-separated conf/ablation variants (default: no_shaping,grpo).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per variant (0..N-1).")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Ablation folder (default: runs/ablate__<algo>__<overrides hash>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned runs and exit.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="executor=slurm: submit and return at once (watch with `mssr status DIR`).")] = False,
    evals: Annotated[str | None, typer.Option("--eval", help="Also evaluate every finished run on these benchmarks (comma-separated, as mssr eval --benchmarks) into <run>/eval/; compare adds a column per benchmark. On SLURM each is a job after its run's training job.")] = None,
    eval_limit: Annotated[int | None, typer.Option("--eval-limit", help="With --eval: only the first N items of each benchmark.")] = None,
) -> None:
    """Run the base config and each ablation variant with identical settings and seeds, then compare.

    Variants: no_shaping (= MVSR), entropy_loss, cross_modal_kl, no_clip_high, per_prompt_rho,
    sampled_entropy, monotone_schedule, grpo. Each run is an ordinary run folder inside the
    ablation folder; running the same command again skips finished runs (and, with executor=slurm,
    runs whose job is queued or running, and resubmits the others as resumes)."""
    from mssr_cli.config.compose import ConfigError
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.executors.slurm import SlurmError
    from mssr_cli.experiments.ablate import run_ablation
    from mssr_cli.reporting.compare import CompareError

    if no_shaping and variants:
        fail("--no-shaping and --variants: give one of them")
    chosen = ["no_shaping"] if no_shaping else [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    try:
        run_ablation(list(overrides or []), chosen, seeds, out, dry_run, stdout_console(), wait=not no_wait,
                     evals=_benchmarks(evals), eval_limit=eval_limit)
    except (ConfigError, SlurmError) as err:
        fail(str(err))
    except CompareError as err:  # the runs are on disk; only the comparison had nothing to compare
        fail(f"compare after the runs: {err}")


@app.command("eval")
def evaluate(
    benchmarks: Annotated[str, typer.Option("--benchmarks", help="Comma-separated: digits, mathvista, mathverse, mathvision, mmk12, r1_onevision_bench, hallusionbench, wemath, logicvista, toy_noise, toy_thick, toy_rotate, toy_small, toy_invert; toy_suite is the five toy_* ones.")],
    model: Annotated[str | None, typer.Option("--model", help="A run folder, a local HF model folder, a Hub id, or a preset (tiny); default: the newest finished run under --runs-root.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N items of each benchmark.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Local copies: benchmark NAME is read from DIR/NAME.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Generation batch size.")] = 16,
    backend: Annotated[str, typer.Option("--backend", help="hf (default) or vllm (GPU, needs the vllm extra).")] = "hf",
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: <run>/eval/ for a run folder).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer in tokens.")] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible endpoint that extracts answers the rules cannot (off by default).")] = None,
    judge_timeout: Annotated[float, typer.Option("--judge-timeout", help="Seconds one judge call may take; a failed call leaves the item to the rules, and 3 failures in a row stop asking the judge.")] = 30.0,
    runs_root: Annotated[Path | None, typer.Option("--runs-root", help="Without --model: where to look for the newest finished run (default: runs, as logging.runs_root).")] = None,
    grader: Annotated[str, typer.Option("--grader", help="math_verify (default: each benchmark's rules, math-verify equivalence) or mathruler (the paper recipes' reward: the last \\boxed{} alone, mathruler's grade_answer); recorded in summary.json.")] = "math_verify",
) -> None:
    """Evaluate a model on multimodal math benchmarks (lm-eval tasks), judge-free.

    Writes a table, summary.json and one samples_<benchmark>.jsonl per benchmark (id, prompt,
    response, extracted answer, gold, correct). Offline: --data-dir with local copies made by
    `hf download <id> --repo-type dataset --local-dir DIR/NAME`. Without --model: the newest finished
    run (model/ and summary.json, not locked) under --runs-root."""
    from mssr_cli.console import fail
    from mssr_cli.evaluation import EvalError, run_eval

    if model is not None and runs_root is not None:
        fail("--model and --runs-root: give one of them (--runs-root picks the newest finished run when --model is not given)")
    try:
        run_eval([b.strip() for b in benchmarks.split(",") if b.strip()], model, limit=limit, data_dir=data_dir,
                 batch_size=batch_size, backend=backend, out=out, max_new_tokens=max_new_tokens,
                 temperature=temperature, judge_url=judge_url, judge_timeout=judge_timeout, runs_root=runs_root,
                 grader=grader)
    except (EvalError, ValueError) as err:
        fail(str(err))


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Run folders, or folders holding runs (an ablation or sweep folder).")],
    metric: Annotated[str, typer.Option("--metric", help="Metric to compare (any metrics.jsonl key).")] = "val/accuracy",
    reference: Annotated[str | None, typer.Option("--reference", help="Reference variant (default: grpo if present, else the first).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for compare.md, compare.csv and the plots.")] = None,
    target: Annotated[float | None, typer.Option("--target", help="Measure the cost of reaching this value (default: the reference's final mean).")] = None,
) -> None:
    """Compare runs grouped by variant (seeds together): final and best metric, steps and rollouts to
    reach the reference's final value, lowest entropy ratio, collapse alarms, time per step.

    Reads run folders only (works offline); writes compare.md, compare.csv and PNG plots."""
    from mssr_cli.console import fail
    from mssr_cli.reporting.compare import CompareError, run_compare

    try:
        run_compare(list(paths), metric=metric, reference=reference, out=out, target=target)
    except CompareError as err:
        fail(str(err))


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="A W&B sweep file (sweeps/*.yaml).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Extra Hydra overrides for every run (e.g. train.max_steps=20).")] = None,
    local: Annotated[bool, typer.Option("--local", help="Expand grid/random parameters and run them here.")] = False,
    max_runs: Annotated[int | None, typer.Option("--max-runs", help="Run at most N parameter sets.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Sweep folder (default: runs/sweep__<name>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned runs and exit.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="executor=slurm: submit and return at once (watch with `mssr status DIR`).")] = False,
    evals: Annotated[str | None, typer.Option("--eval", help="Also evaluate every finished run on these benchmarks (comma-separated, as mssr eval --benchmarks) into <run>/eval/; compare adds a column per benchmark. On SLURM each is a job after its run's training job.")] = None,
    eval_limit: Annotated[int | None, typer.Option("--eval-limit", help="With --eval: only the first N items of each benchmark.")] = None,
) -> None:
    """Run a W&B sweep file locally (--local), or as SLURM jobs (executor=slurm), as ordinary runs, then compare them.

    With a W&B server use W&B's own agent instead: `wandb login` (or WANDB_API_KEY), `wandb sweep FILE`,
    then `wandb agent <entity/project/sweep_id>`; the file's command (`mssr train ${args_no_hyphens}`) is
    the same either way, and under the agent each run logs online to the sweep (not offline)."""
    from mssr_cli.config.compose import ConfigError, compose
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.executors.slurm import SlurmError
    from mssr_cli.experiments.sweep import load_sweep, run_local_sweep
    from mssr_cli.reporting.compare import CompareError

    overrides = list(overrides or [])
    try:
        if not local and compose(overrides).executor.name != "slurm":
            load_sweep(file)  # still check the file
            fail(f"{file}: on a W&B server run `wandb login` (or set WANDB_API_KEY), `wandb sweep {file}`, then "
                 "`wandb agent <entity/project/sweep_id>` (its runs log online to the sweep); "
                 "add --local to run it here without one (or executor=slurm to run it as SLURM jobs)")
        run_local_sweep(file, max_runs, out, dry_run, stdout_console(), overrides, wait=not no_wait,
                        evals=_benchmarks(evals), eval_limit=eval_limit)
    except (ConfigError, SlurmError) as err:
        fail(str(err))
    except CompareError as err:  # the runs are on disk; only the comparison had nothing to compare
        fail(f"compare after the runs: {err}")


@app.command()
def agents(
    sweep_id: Annotated[str, typer.Argument(help="The sweep, as `wandb sweep FILE` printed it: entity/project/id.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="executor=slurm and its keys (partition, account, time_min, ...); launcher keys for the GPUs per job.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Agent jobs to submit (one job array).")] = 1,
    count: Annotated[int | None, typer.Option("--count", help="Runs each agent takes before it stops (wandb agent --count; default: until the sweep ends).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder recording the jobs (default: runs/agents__<sweep id>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the batch script and exit.")] = False,
) -> None:
    """Submit W&B sweep agents as SLURM jobs: each runs `wandb agent SWEEP_ID`, which trains the sweep's runs
    (`mssr train ${args_no_hyphens}`) one after another inside the job, logging online to the sweep. The jobs get
    this shell's environment: set WANDB_API_KEY here (it is never written to disk)."""
    from mssr_cli.config.compose import ConfigError
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.executors.slurm import SlurmError
    from mssr_cli.experiments.agents import submit_agents

    try:
        submit_agents(sweep_id, jobs, count, list(overrides or []), out, dry_run, stdout_console())
    except (ConfigError, SlurmError) as err:
        fail(str(err))


@app.command()
def status(
    folder: Annotated[Path, typer.Argument(help="A batch folder (an ablation or sweep folder).")],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place every few seconds until every run is done (Ctrl-C stops watching).")] = False,
) -> None:
    """One line per run of a batch: done, queued, running (step N of M, last val/accuracy), failed (its error, or
    where a cancelled job stopped), preempted, timed out, or stopped; and one per --eval or agent job. Reads the run folders and, for SLURM jobs, sacct.
    Exit code 0 when every run is done, 1 otherwise."""
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.executors.slurm import SlurmError
    from mssr_cli.experiments.status import StatusError, batch_status, print_status, watch_status

    try:
        rows = watch_status(folder, stdout_console()) if watch else batch_status(folder)
    except (StatusError, SlurmError) as err:
        fail(str(err))
    if rows is None:  # Ctrl-C while watching
        raise typer.Exit(1)
    if not watch:
        print_status(rows, stdout_console())
    raise typer.Exit(0 if all(r.status == "done" for r in rows) else 1)


@app.command()
def cancel(
    folder: Annotated[Path, typer.Argument(help="A batch folder whose runs were submitted with executor=slurm.")],
) -> None:
    """Cancel a batch's queued and running SLURM jobs (scancel). Their run folders stay: the batch's command,
    run again, resubmits them as resumes of their newest checkpoints."""
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.executors.slurm import SlurmError
    from mssr_cli.experiments.status import StatusError, cancel_batch

    try:
        cancelled = cancel_batch(folder)
    except (StatusError, SlurmError) as err:
        fail(str(err))
    stdout_console().print(f"cancelled {len(cancelled)} job(s)" + (f": {', '.join(cancelled)}" if cancelled else
                                                                     " (none was queued or running)"), markup=False)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/<run>).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write: new, empty, or a previous export (replaced).")],
    merge_lora: Annotated[bool, typer.Option("--merge-lora", help="Merge a LoRA run's adapter into its base model (required for LoRA runs).")] = False,
) -> None:
    """Write a run's policy as a standalone Hugging Face model folder (a LoRA adapter merged into its base).

    Exports <run>/model/, or the newest checkpoint that verifies for a run stopped before its end. The
    folder loads with AutoModelForImageTextToText.from_pretrained and `mssr eval --model DIR`, and holds
    mssr_export.json (run, source, merged, base model)."""
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.export import ExportError, export_run
    from mssr_cli.fileio import describe_os_error

    try:
        export_run(run, out, merge_lora, stdout_console())
    except ExportError as err:
        fail(str(err))
    except OSError as err:
        fail(describe_os_error(err))


if __name__ == "__main__":
    app()
