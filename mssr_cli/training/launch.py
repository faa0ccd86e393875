"""``mssr train launcher=ddp|zero2|zero3``: the same command again, on several processes, under ``accelerate launch``.

The parent process composes and checks the config, decides the run folder once (every rank must
write into the same one), prints the exact ``accelerate launch`` command and runs it. The children
are ``python -m mssr_cli train <same overrides> --run-dir <that folder>``; they find ``MSSR_LAUNCHED``
(or torchrun's ``LOCAL_RANK``, when the printed command is run by hand) in their environment and
train instead of launching again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

CHILD_ENV = "MSSR_LAUNCHED"  # set for the processes `accelerate launch` starts: they train, never relaunch


def launched() -> bool:
    """True inside a process started by a launcher (ours, or the printed command run by hand)."""
    return os.environ.get(CHILD_ENV) == "1" or "LOCAL_RANK" in os.environ


class LaunchError(ValueError):
    """The launch cannot be planned (e.g. no GPU to count); the message is meant for the user."""


def _accelerate_executable() -> str:
    beside = Path(sys.executable).with_name("accelerate")  # this environment's, even when not on PATH
    return str(beside) if beside.exists() else "accelerate"


def _mixed_precision(bf16: str) -> str:
    """train.bf16 decides (the config file's mixed_precision would otherwise win over TrainingArguments)."""
    from mssr_cli.training.trl_args import use_bf16

    return "bf16" if use_bf16(bf16) else "no"


def plan(cfg, overrides: list[str], run_dir: Path, extra_args: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(environment additions, argv) of the ``accelerate launch`` command for this config."""
    import torch

    from mssr_cli.config.paths import accelerate_config_path

    launcher = cfg.launcher
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    num_processes = launcher.num_processes or gpus
    if not num_processes:
        raise LaunchError(f"launcher={launcher.name}: launcher.num_processes is null (every GPU) but this machine has "
                          "no GPU; give a number (without GPUs the processes run on CPU and talk over gloo)")
    env = {CHILD_ENV: "1"}
    if not gpus:
        env["ACCELERATE_USE_CPU"] = "true"  # CPU processes (tests, laptops): gloo instead of NCCL
    argv = [_accelerate_executable(), "launch", "--config_file", str(accelerate_config_path(launcher.accelerate_config)),
            "--num_processes", str(num_processes), "--mixed_precision", _mixed_precision(cfg.train.bf16)]
    if launcher.main_process_port is not None:
        argv += ["--main_process_port", str(launcher.main_process_port)]
    argv += ["-m", "mssr_cli", "train", *overrides, *(extra_args or ["--run-dir", str(run_dir)])]
    return env, argv


def relaunch(cfg, overrides: list[str], run_dir: Path | None, dry_run: bool, console, extra_args: list[str] | None = None) -> int:
    """Print the ``accelerate launch`` command and (unless ``dry_run``) run it; returns its exit status.

    ``extra_args`` replaces ``--run-dir <folder>`` when the parent was given another way to name the
    folder (e.g. ``--resume <folder>``)."""
    from mssr_cli.runs.folder import run_name

    folder = Path(run_dir) if run_dir else Path(cfg.logging.runs_root) / run_name(cfg)  # decided once, for every rank
    env, argv = plan(cfg, overrides, folder, extra_args)
    command = shlex.join([f"{k}={v}" for k, v in env.items()] + argv)
    console.print(command, markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        return 0
    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode


def launch_if_asked(cfg, overrides: list[str], run_dir: Path | None, resume: Path | None, dry_run: bool, console) -> None:
    """``mssr train``'s hook: with a launcher, start the processes and exit with their status; inside a
    launched process (or with launcher=none), return and let this process train."""
    import typer

    from mssr_cli.console import fail
    from mssr_cli.training.distributed import world_size

    if launched():
        if world_size() > 1 and run_dir is None:  # each rank would name its own folder after its own clock
            fail("several processes need one run folder: give --run-dir (`mssr train launcher=...` decides it for you)")
        return
    if cfg.launcher.name == "none":
        return
    try:
        code = relaunch(cfg, overrides, run_dir, dry_run, console, ["--resume", str(resume)] if resume else None)
    except LaunchError as err:
        fail(str(err))
    raise typer.Exit(code)
