"""The batch folder's record of submitted jobs (``jobs.json``): which job runs which run, on which executor, since
when. Written whole (temporary file, then rename) after every submission succeeded, so a refused submission leaves
no half-recorded batch."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mssr_cli.fileio import write_json_atomic

JOBS_FILE = "jobs.json"


@dataclass
class JobRecord:
    run: str  # the run folder's name in the batch folder
    executor: str  # slurm
    job_id: str  # the scheduler's id ("123" or, in an array, "123_4")
    submitted: str  # ISO time of the (latest) submission
    submissions: int = 1  # 2 and more: resubmitted (as a resume of its newest checkpoint)
    stage: str = "train"  # train | eval (`--eval`: the run's evaluation, after its training job succeeded)

    @property
    def key(self) -> str:
        """How jobs.json names it: the run for its training job, ``<run>:eval`` for its evaluation job."""
        return self.run if self.stage == "train" else f"{self.run}:{self.stage}"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_jobs(out: Path) -> dict[str, JobRecord]:
    """The recorded jobs of a batch folder, by run name (empty when nothing was submitted)."""
    path = Path(out) / JOBS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    records = [JobRecord(**row) for row in data["jobs"]]
    return {record.key: record for record in records}


def write_jobs(out: Path, records: dict[str, JobRecord]) -> None:
    write_json_atomic(Path(out) / JOBS_FILE, {"jobs": [asdict(r) for r in records.values()]})
