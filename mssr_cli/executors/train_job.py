"""What a SLURM job runs (submitit pickles it at submission and calls it on the node): ``mssr train`` for one run.

The command is the batch's own (``planned.train_command``), so a requeued or resubmitted job resumes its run folder
from the newest checkpoint. Before the time limit (``executor.signal_delay_s``) SLURM sends SIGUSR2 to the job;
submitit's handler then calls ``TrainJob.checkpoint``, which asks the run to save a checkpoint at the end of its RL
step (SIGINT to its training processes, as Ctrl-C does), waits for it, and hands submitit the same job to requeue:
the next start resumes there. The run's processes ignore SIGUSR2 (SLURM signals every process of the step, and by
default they would die mid-step). A preemption or ``scontrol requeue`` kills the job (SIGTERM, then SIGKILL); the
requeued job resumes from the newest checkpoint, so at most the steps since it are trained again.

A run over several machines (``launcher.num_machines`` > 1) is one job over as many nodes, one task per node. Each
task runs the same command with its node's ``launcher.machine_rank`` (``SLURM_NODEID``) and the allocation's first
host as ``launcher.main_process_ip``. Only node 0's task checkpoints on the signal (submitit calls it there alone):
its rank 0 decides when every process stops (``InterruptCallback``), so every node saves the same step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mssr_cli.executors.planned import last_line, record_failure

POLL_S = 0.5
# the job's one training process: a module global, not an attribute, so that TrainJob stays picklable (submitit
# pickles the job again when it requeues it)
_CHILD: subprocess.Popen | None = None


def _ignore_usr2() -> None:  # runs in the child between fork and exec; an ignored signal stays ignored across exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _wait_gone(pid: int) -> None:
    """Until the process has exited. psutil, not Popen.wait: this runs inside a signal handler, possibly while the
    main code holds the Popen's wait lock."""
    import psutil

    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


class TrainFailed(RuntimeError):
    """The command exited non-zero; the message is the one-line error (also in the folder's error.log)."""


def node_overrides(machines: int) -> tuple[int, list[str]]:
    """(this node's index, the overrides that make its ``mssr train`` that machine of the run): inside a job of
    ``machines`` nodes, machine rank = ``SLURM_NODEID`` and rank 0's address = the allocation's first host (node 0).
    One machine: (0, [])."""
    if machines <= 1:
        return 0, []
    import submitit

    env = submitit.JobEnvironment()
    return env.node, [f"launcher.machine_rank={env.node}", f"launcher.main_process_ip={env.hostnames[0]}"]


class CommandJob:
    """Picklable: a command, the folder whose error.log keeps its stderr on failure, and where stderr goes while it
    runs. Raises TrainFailed (the job then ends FAILED). Not checkpointable: an evaluation starts over.

    ``machines`` > 1: the job has one task per node, each running the command as its machine of the run. Node 0's
    failure goes to the folder's error.log; another node's stderr stays in ``<stderr_path>.node<N>``."""

    def __init__(self, command: list[str], run_folder: str, stderr_path: str, machines: int = 1):
        self.command = list(command)
        self.run_folder = run_folder
        self.stderr_path = stderr_path
        self.machines = int(machines)

    def __call__(self) -> int:
        global _CHILD
        node, extra = node_overrides(self.machines)
        stderr = Path(self.stderr_path if node == 0 else f"{self.stderr_path}.node{node}")
        stderr.parent.mkdir(parents=True, exist_ok=True)
        with stderr.open("w") as err:
            _CHILD = subprocess.Popen([*self.command, *extra], stdout=subprocess.DEVNULL, stderr=err,
                                      preexec_fn=_ignore_usr2)
            while (code := _CHILD.poll()) is None:  # polled, not wait(): checkpoint() may run meanwhile (a signal)
                time.sleep(POLL_S)
        if code != 0:
            if node != 0:  # node 0's log is the run's: one error.log, not one per node racing for it
                raise TrainFailed(f"node {node}: exit {code}: {last_line(stderr)} (full log: {stderr})")
            raise TrainFailed(record_failure(Path(self.run_folder), stderr.read_text(errors="replace"), code))
        stderr.unlink(missing_ok=True)
        return code


class TrainJob(CommandJob):
    """``mssr train`` of one run: checkpointable, so the signal before the time limit requeues it (module doc)."""

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on SLURM's signal before the time limit (or a preemption signal): the run checkpoints
        at the end of its RL step and exits; the returned submission (this same job) is what submitit requeues."""
        from submitit.helpers import DelayedSubmission

        child = _CHILD
        if child is not None and child.returncode is None:
            for pid in _trainers(child.pid):
                try:
                    os.kill(pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            _wait_gone(child.pid)
        return DelayedSubmission(TrainJob(self.command, self.run_folder, self.stderr_path, self.machines))


def _trainers(pid: int) -> list[int]:
    """The processes that train under ``pid``: with a launcher, ``accelerate launch``'s workers (torchrun gives each
    LOCAL_RANK; they run in sessions of their own). SIGINT goes to them alone: ``mssr train``'s parent would kill the
    launcher, and torchrun's agent would pass a second SIGINT on, which stops a worker at once, mid-step. Without a
    launcher, ``pid`` itself trains."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for proc in below:
        try:
            if "LOCAL_RANK" in proc.environ():
                workers.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return workers or [pid]
