"""What a SLURM job runs (submitit pickles it at submission and calls it on the node): ``mssr train`` for one run.

The command is the batch's own (``planned.train_command``), so a requeued or resubmitted job resumes its run folder
from the newest checkpoint. Before the time limit (``executor.signal_delay_s``) SLURM sends SIGUSR2 to the job;
submitit's handler then calls ``TrainJob.checkpoint``, which asks the run to save a checkpoint at the end of its RL
step (SIGINT, as Ctrl-C does), waits for it, and hands submitit the same job to requeue: the next start resumes
there. The run's process itself ignores SIGUSR2 (SLURM signals every process of the step, and by default it would
die mid-step). A preemption or ``scontrol requeue`` kills the job (SIGTERM, then SIGKILL); the requeued job resumes
from the newest checkpoint, so at most the steps since it are trained again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mssr_cli.executors.planned import record_failure

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


class CommandJob:
    """Picklable: a command, the folder whose error.log keeps its stderr on failure, and where stderr goes while it
    runs. Raises TrainFailed (the job then ends FAILED). Not checkpointable: an evaluation starts over."""

    def __init__(self, command: list[str], run_folder: str, stderr_path: str):
        self.command = list(command)
        self.run_folder = run_folder
        self.stderr_path = stderr_path

    def __call__(self) -> int:
        global _CHILD
        stderr = Path(self.stderr_path)
        stderr.parent.mkdir(parents=True, exist_ok=True)
        with stderr.open("w") as err:
            _CHILD = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_ignore_usr2)
            while (code := _CHILD.poll()) is None:  # polled, not wait(): checkpoint() may run meanwhile (a signal)
                time.sleep(POLL_S)
        if code != 0:
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
            try:
                os.kill(child.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            _wait_gone(child.pid)
        return DelayedSubmission(TrainJob(self.command, self.run_folder, self.stderr_path))
