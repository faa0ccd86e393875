"""``mssr train``: one RL run from a composed config into a run folder."""

from __future__ import annotations

import time
from pathlib import Path

from mssr_cli.cpu_threads import configure_cpu_threads


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _init_wandb(cfg, run_folder, overrides=None, wandb_plan=None):
    """The run's W&B run (None: disabled). Under `wandb agent`, the agent's run (runs/wandb_run.py)."""
    from mssr_cli.runs import wandb_run

    wandb_plan = wandb_plan or _wandb_plan(cfg, run_folder, overrides)
    if not wandb_plan.enabled:
        return None
    import os

    import wandb
    from omegaconf import OmegaConf

    from mssr_cli.secrets import redact_data

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        **wandb_plan.init,  # mode, and outside an agent id (fixed by the folder: --resume continues it) and project
        name=run_folder.name,
        dir=str(run_folder.path),
        config=redact_data(OmegaConf.to_container(cfg, resolve=True)),  # W&B shows it to everyone on the project
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    if run_folder.writes:
        wandb_run.write_record(run_folder.path, run, wandb_plan.sweep_id)
    return run


def _wandb_plan(cfg, run_folder, overrides):
    from mssr_cli.runs import wandb_run
    from mssr_cli.runs.folder import wandb_id

    return wandb_run.plan(cfg.logging.wandb, overrides, cfg.logging.project, cfg.logging.entity, run_folder.path,
                          wandb_id(run_folder.name))


def _warm_start_tracker(cfg, trainer, processor, train_set, progress, console) -> None:
    from mssr_cli.training.tracker_warm_start import sample_outcomes

    started = time.time()
    outcomes = sample_outcomes(
        trainer.model, processor, train_set, cfg.algo.tracker.warm_start_rollouts, cfg.train.val_batch_size,
        cfg.train.max_completion_length, cfg.train.temperature, cfg.train.top_p, progress, cfg.train.block_image_token,
        cfg.reward.grader,
    )
    trainer.warm_start_tracker(outcomes)
    mean = sum(sum(o) / len(o) for o in outcomes.values()) / max(len(outcomes), 1)
    console.print(f"Tracker warm start: {len(outcomes)} prompts, mean value {mean:.3f} ({time.time() - started:.0f} s)")


def run_training(cfg, overrides: list[str], run_dir: Path | None) -> dict:
    """Train, validate, checkpoint and save one run; returns its summary (also in summary.json)."""
    from mssr_cli.console import stdout_console
    from mssr_cli.training.distributed import is_main_process

    main = is_main_process()  # several processes (launcher=ddp|zero2|zero3): rank 0 alone prints and writes
    console = stdout_console()
    console.quiet = not main
    import warnings

    # transformers 5 renamed gradient checkpointing; TRL 1.16 still calls the old names on every
    # step. The rename is theirs to finish, and the warning would otherwise bury the progress bar.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    threads = configure_cpu_threads(cfg.train.num_threads)
    started = time.time()

    from transformers.utils import logging as hf_logging

    from mssr_cli.runs.folder import RunFolder, RunFolderError, run_name
    from mssr_cli.runs.lock import acquire

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from mssr_cli.runs.wandb_run import folder_name

    # under `wandb agent` the default folder carries the agent's run id (runs/wandb_run.py)
    folder = RunFolder(Path(run_dir) if run_dir else Path(cfg.logging.runs_root) / folder_name(run_name(cfg)), writes=main)

    def warn(message: str) -> None:
        console.print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)

    if folder.path.exists() and not folder.path.is_dir():
        raise RunFolderError(f"run folder {folder.path} is a file, not a folder: give another --run-dir")
    lock = acquire(folder.path, warn) if main else None  # one writer per folder; rank 0 writes for all
    try:
        return _train_in_folder(cfg, overrides, folder, main, console, warn, threads, started)
    finally:
        if lock is not None:
            lock.release()


def _train_in_folder(cfg, overrides, folder, main, console, warn, threads, started) -> dict:
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import steps_layout
    from mssr_cli.data.registry import load_split
    from mssr_cli.models.loading import load_policy
    from mssr_cli.runs.checkpoints import step_of
    from mssr_cli.training.collapse import CollapseDetector, CollapseRules
    from mssr_cli.training.callbacks import (InterruptCallback, MetricsCallback, OnTrainBegin, ProgressCallback, RunLogger,
                                             ValidationCallback)
    from mssr_cli.training.distributed import broadcast_from_main
    from mssr_cli.rewards.functions import check_columns, from_config
    from mssr_cli.runs.folder import summarize
    from mssr_cli.training.rollback import RollbackHistory, RunSettings
    from mssr_cli.training.trl_args import grpo_args, rollout_generation_kwargs

    layout = steps_layout(cfg)
    # the folder holds this run (or none), the newest checkpoint that verifies, the start written
    resume = folder.prepare(cfg, overrides, warn, layout["updates_per_step"]) if main else None
    console.print(f"Run folder: [bold]{folder.path}[/bold]  ({threads} CPU thread{'s' if threads != 1 else ''})")
    wandb_plan = _wandb_plan(cfg, folder, overrides) if main else None
    if wandb_plan is not None and wandb_plan.note:
        console.print(wandb_plan.note, markup=False, highlight=False, soft_wrap=True)
    if wandb_plan is not None and wandb_plan.warning:
        warn(wandb_plan.warning)

    with _progress(cfg.logging.progress and main) as progress:
        # data first: a bad row or path should fail in seconds, not after a 7B model has loaded
        # images resized into the model's bounds now, so vLLM (which never gets them) and the loss see the same pixels
        pixels = cfg.model.min_pixels, cfg.model.max_pixels
        train_set = load_split(cfg.data, "train", *pixels)
        val_set = load_split(cfg.data, "validation", *pixels)
        reward_functions, _ = from_config(cfg.reward)
        check_columns(reward_functions, train_set.column_names)  # an argument no column provides: now, not at step 1
        model, processor = load_policy(cfg.model, cfg.data, progress=progress, console=console)
        from mssr_cli.training.prompt_length import drop_long_prompts
        train_set = drop_long_prompts(train_set, processor, cfg.data.max_prompt_tokens, "training", console)
        val_set = drop_long_prompts(val_set, processor, cfg.data.max_prompt_tokens, "validation", console)
        wandb_run = _init_wandb(cfg, folder, overrides, wandb_plan) if main else None
        detector = CollapseDetector(CollapseRules(**OmegaConf.to_container(cfg.collapse)))
        logger = RunLogger(folder, layout["updates_per_step"], cfg.train.rollouts_per_step, wandb_run,
                           detector=detector, console=console, on_collapse=cfg.train.on_collapse)
        interrupt = InterruptCallback(layout["updates_per_step"])
        callbacks = [
            ValidationCallback.from_config(cfg, logger, processor, val_set),
            MetricsCallback(logger),
            ProgressCallback(logger, progress, cfg.train.max_steps),
            interrupt,
        ]
        # torch.distributed starts with the training arguments' device (as the trainer would start it): the
        # broadcasts below are collectives, and before it starts each rank would just keep its own value
        grpo_args(cfg, str(folder.checkpoints)).device
        # rank 0 chose (and verified) the checkpoint; every process resumes from the same one
        chosen = broadcast_from_main(resume.name if resume is not None else None)
        resume = folder.checkpoints / chosen if chosen else None
        # the collapse rollbacks made so far (train.on_collapse=rollback): the run folder's record, or the checkpoint's
        history = RollbackHistory(RunSettings(cfg.train.lr, cfg.algo.kl_coef, cfg.seed),
                                  broadcast_from_main((folder.read_rollbacks() or []) if main and resume else []))
        replay_rollback = False  # the checkpoint predates the latest rollback: resume as that rollback did
        if resume is not None:
            saved = _rollbacks_in(resume)
            replay_rollback = len(history) > len(saved)
            history.load_state_dict({"rollbacks": saved})  # the longer history wins
            done = logger.rl_step(step_of(resume))
            logger.resume(folder.read_metrics(), done)  # as rank 0 restored them
            console.print(f"Resuming from {resume.name} (RL step {done})", soft_wrap=True)
        while True:  # one attempt per rollback (train.on_collapse=rollback); otherwise once
            trainer = _build_trainer(cfg, folder, model, processor, train_set, reward_functions, callbacks, logger,
                                     {"entropy_ratio": logger.entropy_ratio, "collapse_detector": detector,
                                      "rollbacks": history}, history)
            if resume is not None:
                trainer.load_mssr_state(str(resume))
                if replay_rollback:  # the rollback's seed, and train/tokens counting the abandoned steps' tokens
                    trainer.reseed = history.settings.seed
                    trainer.completion_tokens = history.entries[-1].tokens
            else:
                if hasattr(trainer.estimator, "tracker") and cfg.algo.tracker.warm_start:
                    # when train() starts: DeepSpeed puts the model on its GPU (ZeRO-3: sharded) only then
                    trainer.add_callback(OnTrainBegin(lambda: _warm_start_tracker(cfg, trainer, processor, train_set, progress, console)))
                if cfg.train.on_collapse == "rollback":  # the policy before RL, warm-started tracker included
                    trainer.add_callback(OnTrainBegin(lambda: trainer._save_checkpoint(trainer.model, None)))
            with _checkpoint_errors(folder):
                try:
                    with interrupt.catching_sigint():  # Ctrl-C: checkpoint at the end of the RL step, then stop
                        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
                except KeyboardInterrupt:
                    console.print(f"[yellow]Interrupted: `mssr train --resume {folder.path}` continues from the last checkpoint[/yellow]")
                    raise
            if interrupt.requested:
                console.print(f"[yellow]Interrupted: checkpoint at RL step {logger.rl_step(trainer.state.global_step)}; "
                              f"`mssr train --resume {folder.path}` continues from it[/yellow]")
                raise KeyboardInterrupt
            alarm, logger.rollback_alarm = logger.rollback_alarm, None
            if alarm is None:
                break
            target = broadcast_from_main(_rollback_target(folder, logger, alarm, warn) if main else None)
            if target is None:  # nothing healthy to go back to: stop as on_collapse=stop does, with a checkpoint
                logger.stop_reason = (f"{alarm.rule} at step {alarm.step}: {alarm.message} (no checkpoint before step "
                                      f"{alarm.evidence_from}, where its evidence begins, to roll back to)")
                with _checkpoint_errors(folder):
                    trainer._save_checkpoint(trainer.model, None)
                break
            entry = history.add(alarm, logger.rl_step(step_of(folder.checkpoints / target)), target,
                                trainer.completion_tokens, cfg.train.rollback.lr_factor, cfg.train.rollback.kl_factor)
            if main:
                _abandon(folder, entry, history)
            trainer.accelerator.wait_for_everyone()
            text = (f"rollback {entry.number}: {alarm.rule} at step {alarm.step} (evidence from step "
                    f"{alarm.evidence_from}); restored {target} (RL step {entry.restored_step}); lr {entry.lr:g}, "
                    f"KL {entry.kl_coef:g}, seed {entry.seed}")
            console.print(f"[bold yellow]collapse rollback[/bold yellow] {text}", soft_wrap=True)
            logger.alert(f"mssr collapse rollback ({alarm.rule})", text)
            logger.last_step = entry.restored_step
            resume, replay_rollback = folder.checkpoints / target, True
            del trainer  # a fresh trainer for the next attempt: free this one's model first (GPU memory)
            model = None
            _free_memory()
            model, _ = load_policy(cfg.model, cfg.data, progress=progress, console=console)
        _save_final_model(trainer, processor, folder, main)

    summary = summarize(
        folder.read_metrics(),
        time.time() - started,
        {"run": folder.name, "variant": cfg.logging.variant or cfg.algo.name, "algo": cfg.algo.name, "model": cfg.model.preset, "data": cfg.data.name,
         "seed": cfg.seed, "rollouts": (cfg.train.max_steps + history.abandoned_steps) * cfg.train.rollouts_per_step,
         "collapse_alarms": [a.to_dict() for a in detector.alarms], "stopped": logger.stop_reason,
         "rollbacks": history.to_list()},
    )
    folder.write_summary(summary)
    if wandb_run is not None:
        from mssr_cli.runs.wandb_run import final_summary

        wandb_run.summary.update(final_summary(summary))  # val/accuracy included: what a sweep ranks on
        wandb_run.finish()
    _print_summary(console, folder, summary)
    return summary


def _build_trainer(cfg, folder, model, processor, train_set, reward_functions, callbacks, logger, extra_state, history):
    """The RL trainer of one attempt, at the settings the run's rollbacks left (none: the configured ones)."""
    from transformers.trainer_callback import PrinterCallback

    from mssr_cli.models.loading import lora_config
    from mssr_cli.rewards.functions import trl_callable
    from mssr_cli.training.trainer import RLTrainer
    from mssr_cli.training.trl_args import grpo_args, rollout_generation_kwargs

    settings = history.settings
    args = grpo_args(cfg, str(folder.checkpoints))
    args.learning_rate, args.beta = settings.lr, settings.kl_coef  # TRL's loss reads its beta from args.beta
    args.seed = args.data_seed = settings.seed  # data order; the rollouts' RNG: RLTrainer.reseed
    args.generation_kwargs = rollout_generation_kwargs(cfg.train, model)
    trainer = RLTrainer(
        model=model,
        reward_funcs=[trl_callable(f) for f in reward_functions],
        args=args,
        train_dataset=train_set,
        processing_class=processor,
        callbacks=callbacks,
        algo_cfg=cfg.algo,
        keep_checkpoints=cfg.train.keep_checkpoints,
        peft_config=lora_config(cfg.model),
        extra_state=extra_state,
        run_dir=str(folder.path),
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its dict dumps
    trainer.skip_nonfinite = bool(cfg.train.skip_nonfinite_updates)  # read when train() builds the optimizer
    if cfg.train.log_samples_every:  # what the policy writes: samples.jsonl and a W&B table
        trainer.sample_count = cfg.train.log_samples
        logger.samples_every, logger.samples_source = cfg.train.log_samples_every, trainer.pop_samples
    rolling = cfg.train.on_collapse == "rollback"
    trainer.keep_initial_checkpoint = rolling
    if rolling:  # the newest healthy checkpoint stays too: a val_drop's evidence can reach back past the newest few
        detector, updates = extra_state["collapse_detector"], logger.updates_per_step
        trainer.healthy_before = lambda: detector.healthy_before() * updates
    trainer.rollback_lr = settings.lr if len(history) else None  # optimizer.pt/scheduler.pt hold the old lr
    logger.rollbacks = len(history) if rolling or len(history) else None
    logger.rollbacks_left = max(cfg.train.rollback.max_times - len(history), 0) if rolling else 0
    logger.abandoned_steps = history.abandoned_steps
    return trainer


def _rollbacks_in(checkpoint: Path) -> list[dict]:
    """The rollbacks a checkpoint's mssr_state.json knows (it verified against its manifest)."""
    import json

    from mssr_cli.runs.checkpoints import STATE_FILE

    state = json.loads((checkpoint / STATE_FILE).read_text())
    return state.get("rollbacks", {}).get("rollbacks", [])


def _rollback_target(folder, logger, alarm, warn) -> str | None:
    """The checkpoint a rollback restores: the newest before the alarm's evidence that verifies (rank 0)."""
    from mssr_cli.runs import checkpoints
    from mssr_cli.training.rollback import rollback_step

    found = {logger.rl_step(checkpoints.step_of(c)): c for c in checkpoints.listed(folder.checkpoints)}
    while (step := rollback_step(found, alarm.evidence_from)) is not None:
        problem = checkpoints.verify(found[step])
        if problem is None:
            return found[step].name
        warn(f"rollback: skipped {found[step].name}: {problem}")
        del found[step]
    return None


def _abandon(folder, entry, history) -> None:
    """On disk, a rollback (rank 0). The order matters to a kill halfway: first the newer checkpoints go (a resume
    must never continue an abandoned attempt), then the later lines are marked abandoned, last the record; a run
    killed before the record resumes from the restored checkpoint, replays the same steps and rolls back again."""
    from mssr_cli.runs import checkpoints

    checkpoints.drop_after(folder.checkpoints, checkpoints.step_of(folder.checkpoints / entry.checkpoint))
    folder.abandon_after(entry.restored_step, entry.number)
    folder.write_rollbacks(history.to_list())


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _checkpoint_errors(folder):
    """A checkpoint that cannot be written (disk full): one line saying which complete one remains."""
    import contextlib

    from mssr_cli.runs.folder import RunFolderError
    from mssr_cli.training.trainer import CheckpointWriteError

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except CheckpointWriteError as err:
            then = (f"`mssr train --resume {folder.path}` continues from {err.newest.name}" if err.newest
                    else "run the same command again to start over")
            raise RunFolderError(f"{err.strerror}; the run stopped: free space, then {then}") from err

    return guard()


def _save_final_model(trainer, processor, folder, main: bool) -> None:
    """The final policy into <run>/model, whole or not at all: written beside it, then renamed into place."""
    import shutil

    partial = folder.path / ".model.partial"
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))  # every process: ZeRO-3 gathers the shards, rank 0 writes
    trainer.accelerator.wait_for_everyone()
    if main:
        processor.save_pretrained(str(partial))
        shutil.rmtree(folder.model, ignore_errors=True)
        partial.rename(folder.model)


def _print_summary(console, folder, summary: dict) -> None:
    from rich.table import Table

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    table = Table(title=f"{folder.name}", show_header=False)
    table.add_row("validation accuracy (start -> final)", f"{pct(summary['start_val_accuracy'])} -> {pct(summary['final_val_accuracy'])}")
    table.add_row("best validation accuracy", f"{pct(summary['best_val_accuracy'])} at step {summary['best_step']}")
    table.add_row("RL steps / rollouts", f"{summary['steps']} / {summary['rollouts']}")
    table.add_row("wall time", f"{summary['wall_seconds']:.0f} s")
    if summary.get("collapse_alarms"):
        first = summary["collapse_alarms"][0]
        table.add_row("collapse alarms", f"{len(summary['collapse_alarms'])} (first: {first['rule']} at step {first['step']})")
    for rollback in summary.get("rollbacks") or []:
        table.add_row(f"rollback {rollback['number']}", f"{rollback['rule']} at step {rollback['alarm_step']}: back to step "
                      f"{rollback['restored_step']}, lr {rollback['lr']:g}, KL {rollback['kl_coef']:g}, seed {rollback['seed']}")
    if summary.get("stopped"):
        table.add_row("stopped early", summary["stopped"])
    table.add_row("run folder", str(folder.path))
    console.print(table)
