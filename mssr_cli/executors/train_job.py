"""What a SLURM job runs (submitit pickles it at submission and calls it on the node): ``mssr train`` for one run.

The command is the batch's own (``planned.train_command``), so a requeued or resubmitted job resumes its run folder
from the newest checkpoint. The child ignores submitit's pre-timeout signal (SIGUSR2, which SLURM sends to every
process of the job step): by default it would kill the run mid-step; at the time limit SLURM ends the job
(``timed out``) and the next `mssr ablate` / `mssr sweep` of the same command resubmits it as a resume.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from mssr_cli.executors.planned import record_failure


def _ignore_usr2() -> None:  # runs in the child between fork and exec; an ignored signal stays ignored across exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainFailed(RuntimeError):
    """The run's process exited non-zero; the message is the one-line error (also in the run's error.log)."""


class TrainJob:
    """Picklable: a command and the run folder it trains. Raises TrainFailed (the job then ends FAILED)."""

    def __init__(self, command: list[str], run_folder: str, stderr_path: str):
        self.command = list(command)
        self.run_folder = run_folder
        self.stderr_path = stderr_path

    def __call__(self) -> int:
        stderr = Path(self.stderr_path)
        stderr.parent.mkdir(parents=True, exist_ok=True)
        with stderr.open("w") as err:
            code = subprocess.call(self.command, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_ignore_usr2)
        if code != 0:
            raise TrainFailed(record_failure(Path(self.run_folder), stderr.read_text(errors="replace"), code))
        stderr.unlink(missing_ok=True)
        return code
