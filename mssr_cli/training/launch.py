"""``mssr train launcher=ddp|zero2|zero3``: the same command again, on several processes, under ``accelerate launch``.

The parent process composes and checks the config, decides the run folder once (every rank must
write into the same one), prints the exact ``accelerate launch`` command and runs it. The children
are ``python -m mssr_cli train <same overrides> --run-dir <that folder>``; they find ``MSSR_LAUNCHED``
(or torchrun's ``LOCAL_RANK``, when the printed command is run by hand) in their environment and
train instead of launching again.

Several machines (``launcher.num_machines``): the same command runs on each, with accelerate's own
``--num_machines --machine_rank --main_process_ip --main_process_port``; ``launcher.num_processes`` counts
the processes of one machine. Every machine gets the same ``--run-dir`` (README: Several nodes).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
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


DEFAULT_PORT = 29500  # accelerate's (torchrun's) rendezvous port when none is given


@dataclass(frozen=True)
class Launch:
    """The ``accelerate launch`` command of a run, for any of its machines: decided once, by the machine that plans
    it, from the config. Pure (no torch): ``argv(machine_rank)`` is what that machine runs.

    ``per_machine`` is ``launcher.num_processes`` resolved; accelerate's ``--num_processes`` is the TOTAL over all
    machines, so it is passed ``world`` = per_machine x num_machines."""

    accelerate: str  # the executable
    config_file: str
    per_machine: int
    mixed_precision: str
    overrides: tuple[str, ...]  # as typed; passed on to the processes
    tail: tuple[str, ...]  # ("--run-dir", folder) or ("--resume", folder): the one folder every machine uses
    env: tuple[tuple[str, str], ...] = ((CHILD_ENV, "1"),)
    num_machines: int = 1
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @property
    def world(self) -> int:
        """Training processes over all machines (the WORLD_SIZE every process sees)."""
        return self.per_machine * self.num_machines

    @property
    def resuming(self) -> bool:
        return self.tail[:1] == ("--resume",)

    def argv(self, machine_rank: int | str = 0, main_process_ip: str | None = None) -> list[str]:
        """The command machine ``machine_rank`` runs (``main_process_ip`` replaces the configured address: the
        SLURM script passes a shell variable for both)."""
        from mssr_cli.training.multinode import node_overrides

        argv = [self.accelerate, "launch", "--config_file", self.config_file, "--num_processes", str(self.world),
                "--mixed_precision", self.mixed_precision]
        overrides = list(self.overrides)
        if self.num_machines > 1:
            ip = main_process_ip or self.main_process_ip
            port = DEFAULT_PORT if self.main_process_port is None else self.main_process_port
            argv += ["--num_machines", str(self.num_machines), "--machine_rank", str(machine_rank),
                     "--main_process_ip", str(ip), "--main_process_port", str(port)]
            if not self.resuming:  # --resume takes the saved config: launcher keys there are refused
                overrides = node_overrides(overrides, machine_rank, ip)
        elif self.main_process_port is not None:
            argv += ["--main_process_port", str(self.main_process_port)]
        return [*argv, "-m", "mssr_cli", "train", *overrides, *self.tail]

    def command(self, machine_rank: int | str = 0) -> str:
        """``argv(machine_rank)`` with its environment, as one shell line ready to copy."""
        return shlex.join([f"{k}={v}" for k, v in self.env] + self.argv(machine_rank))


def run_folder(cfg, run_dir: Path | None) -> Path:
    """The one folder every process (on every machine) writes into: ``--run-dir``, else ``runs/<name>``."""
    from mssr_cli.runs.folder import run_name
    from mssr_cli.runs.wandb_run import folder_name

    folder = Path(run_dir) if run_dir else Path(cfg.logging.runs_root) / folder_name(run_name(cfg))  # under a sweep agent: its run id too
    # several machines: an absolute path, so the printed commands do not depend on each machine's working folder
    return folder.absolute() if cfg.launcher.num_machines > 1 else folder


def plan(cfg, overrides: list[str], run_dir: Path, extra_args: list[str] | None = None) -> Launch:
    """The ``accelerate launch`` command of this config (any machine's: ``Launch.argv(machine_rank)``)."""
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
    return Launch(
        accelerate=_accelerate_executable(),
        config_file=str(accelerate_config_path(launcher.accelerate_config)),
        per_machine=int(num_processes),
        mixed_precision=_mixed_precision(cfg.train.bf16),
        overrides=tuple(overrides),
        tail=tuple(extra_args or ["--run-dir", str(run_dir)]),
        env=tuple(env.items()),
        num_machines=int(launcher.num_machines),
        main_process_ip=launcher.main_process_ip,
        main_process_port=launcher.main_process_port,
    )


def relaunch(cfg, overrides: list[str], run_dir: Path | None, dry_run: bool, console, extra_args: list[str] | None = None) -> int:
    """Print this machine's ``accelerate launch`` command and (unless ``dry_run``) run it; returns its exit status.
    A dry run on several machines prints every machine's command and a SLURM batch script instead.

    ``extra_args`` replaces ``--run-dir <folder>`` when the parent was given another way to name the
    folder (e.g. ``--resume <folder>``)."""
    launch = plan(cfg, overrides, run_folder(cfg, run_dir), extra_args)  # the folder is decided once, for every rank
    if dry_run and launch.num_machines > 1:
        from mssr_cli.training.multinode import describe_launch

        console.print("\n".join(describe_launch(launch, cwd=Path.cwd())), markup=False, highlight=False, soft_wrap=True)
        return 0
    rank = cfg.launcher.machine_rank
    console.print(launch.command(rank), markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        return 0
    return subprocess.run(launch.argv(rank), env={**os.environ, **dict(launch.env)}, check=False).returncode


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
    if cfg.launcher.num_machines > 1 and run_dir is None:  # each machine would name its own folder after its own clock
        fail(f"launcher.num_machines={cfg.launcher.num_machines}: give --run-dir, the same folder on every machine "
             "(a shared filesystem; `mssr train ... --dry-run` prints every machine's command with one)")
    try:
        code = relaunch(cfg, overrides, run_dir, dry_run, console, ["--resume", str(resume)] if resume else None)
    except LaunchError as err:
        fail(str(err))
    raise typer.Exit(code)
