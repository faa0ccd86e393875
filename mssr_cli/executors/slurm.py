"""``executor=slurm``: a batch's runs as jobs of the SLURM cluster, through submitit (what Hydra's SLURM launcher
uses): it writes the batch scripts, submits them (runs that share their resources as one job array), and reads the
jobs' states from sacct. The scheduler owns the queue; the batch folder's ``jobs.json`` records which job runs which
run, so ``mssr status``, ``mssr cancel`` and a rerun of the same command can find them.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mssr_cli.executors.planned import PlannedRun, eval_command, train_command
from mssr_cli.executors.records import JobRecord, now

SUBMITIT_DIR = ".slurm"  # in the batch folder: submitit's pickles and the jobs' logs
MAX_REQUEUES = 1000  # time limits a run may checkpoint and requeue at

# sacct states of a job that is not over (a rerun leaves such a run to its job)
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
# sacct state -> what `mssr status` calls it (a finished run is "done" by its summary.json, whatever the job says)
STATUS_OF = {"PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
             "CANCELLED": "failed", "PREEMPTED": "preempted", "TIMEOUT": "timed out", "DEADLINE": "timed out",
             "FAILED": "failed", "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
             "COMPLETED": "failed"}  # a job that completed without the run's summary.json did not finish the run


class SlurmError(Exception):
    """Submission or a scheduler query went wrong; one line, the scheduler's own message where it gave one."""


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise SlurmError("executor=slurm: `sbatch` not found on PATH; run on a machine of the SLURM cluster (a login "
                         "node), or use executor=local")


def sbatch_extra(lines) -> dict:
    """``executor.sbatch_extra`` lines (``--exclusive``, ``--mail-type=END``) as submitit's additional_parameters."""
    out = {}
    for line in lines:
        text = str(line).strip().removeprefix("#SBATCH").strip()
        if not text.startswith("--"):
            raise SlurmError(f"executor.sbatch_extra: {line!r} is not an sbatch option; give it as '--name' or "
                             "'--name=value' (e.g. '--exclusive', '--mail-type=END')")
        name, sep, value = text[2:].partition("=")
        out[name] = value if sep else True
    return out


def job_parameters(executor_cfg, launcher_cfg, name: str) -> dict:
    """submitit.SlurmExecutor parameters of one job: the executor's keys, GPUs and nodes from the run's launcher."""
    gpus = executor_cfg.gpus_per_node if executor_cfg.gpus_per_node is not None else launcher_cfg.num_processes
    if gpus is None:
        raise SlurmError("executor=slurm with launcher.num_processes=null (every GPU of the machine): say how many "
                         "GPUs a job gets with executor.gpus_per_node=N")
    nodes = int(launcher_cfg.num_machines)  # a run over several machines is one job over as many nodes
    if executor_cfg.nodes is not None and int(executor_cfg.nodes) != nodes:
        raise SlurmError(f"executor.nodes={executor_cfg.nodes} but launcher.num_machines={nodes}: a job's nodes are its "
                         f"run's machines; set launcher.num_machines={executor_cfg.nodes} (and launcher=ddp|zero2|zero3), "
                         "or leave executor.nodes=null")
    params: dict = {"job_name": name, "time": int(executor_cfg.time_min), "nodes": nodes, "ntasks_per_node": 1,
                    "signal_delay_s": int(executor_cfg.signal_delay_s),
                    "array_parallelism": int(executor_cfg.array_parallelism),
                    "additional_parameters": sbatch_extra(executor_cfg.sbatch_extra)}
    if executor_cfg.setup:
        params["setup"] = [str(line) for line in executor_cfg.setup]
    if gpus:
        params["gpus_per_node"] = int(gpus)
    for key in ("partition", "account", "qos", "constraint", "cpus_per_task"):
        if executor_cfg[key] is not None:
            params[key] = executor_cfg[key]
    if executor_cfg.mem_gb is not None:
        params["mem"] = f"{int(float(executor_cfg.mem_gb) * 1024)}MB"
    return params


def _refusal(err: Exception, captured: str = "") -> str:
    """The scheduler's own words from a failed sbatch: its stderr (captured), else what the exception carries."""
    text = captured or getattr(err, "stderr", None) or getattr(err, "output", None) or str(err)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip().removeprefix("sbatch: error: ").strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "invalid" in line.lower()] or lines[-1:]
    return "; ".join(dict.fromkeys(errors)) or type(err).__name__


@contextlib.contextmanager
def _stderr_captured():
    """Whatever a child process (sbatch, run by submitit) writes to fd 2 goes into the yielded list's one string,
    not to the terminal: a refusal is then said once, in our one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        text: list[str] = []
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


@dataclass
class Submission:
    """One job to submit: its jobs.json record's run and stage, the picklable callable, and what must succeed first
    (``after``: the key of a submission earlier in the same call, or the id of a job already queued)."""

    run: str
    stage: str
    job: object
    after: str | None = None

    @property
    def key(self) -> str:
        return self.run if self.stage == "train" else f"{self.run}:{self.stage}"


def submit(out: Path, batches: list[tuple[dict, list[Submission]]]) -> dict[str, JobRecord]:
    """Submit each batch (submissions of equal job parameters) as one job array, in order; returns the new records
    by key. A submission with ``after`` is its own job, held by SLURM until that job succeeds (afterok). All or
    nothing: when sbatch refuses one, the jobs submitted before it are cancelled and SlurmError says why."""
    import submitit

    require_sbatch()
    folder = Path(out) / SUBMITIT_DIR
    submitted: list[tuple[Submission, object]] = []
    ids: dict[str, str] = {}
    captured: list[str] = []
    try:
        with _stderr_captured() as captured:
            for params, members in batches:
                after = {m.after for m in members}
                if len(members) > 1 and after != {None}:
                    raise ValueError("a job array cannot hold submissions with their own dependencies")
                params = dict(params)
                if members[0].after is not None:
                    params["dependency"] = f"afterok:{ids.get(members[0].after, members[0].after)}"
                # each time limit checkpoints and requeues the run, which goes on from there: no cap but a sanity one
                executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
                executor.update_parameters(**params)
                with executor.batch():
                    jobs = [executor.submit(m.job) for m in members]
                for member, job in zip(members, jobs, strict=True):
                    submitted.append((member, job))
                    ids[member.key] = str(job.job_id)
    except Exception as err:  # noqa: BLE001 - any refusal: undo what was submitted, then say why in one line
        for _, job in submitted:
            job.cancel(check=False)
        if isinstance(err, SlurmError):
            raise
        raise SlurmError(f"sbatch refused the job: {_refusal(err, ''.join(captured))}") from err
    when = now()
    return {m.key: JobRecord(m.run, "slurm", ids[m.key], when, stage=m.stage) for m, _ in submitted}


def job_command(run: PlannedRun, out: Path) -> list[str]:
    """The ``mssr train`` a job runs: the run's own command, trained inside the job (never submitted again)."""
    return train_command(run, Path(out) / run.name, extra=["executor.name=local"])


def train_submission(run: PlannedRun, out: Path, machines: int = 1) -> Submission:
    """``machines`` > 1: one task per node, each with its node's machine rank (TrainJob.node_overrides)."""
    from mssr_cli.executors.train_job import TrainJob

    folder = Path(out) / run.name
    job = TrainJob(job_command(run, out), str(folder), str(Path(out) / SUBMITIT_DIR / f"{run.name}.stderr"), machines)
    return Submission(run.name, "train", job)


def eval_submission(run: PlannedRun, out: Path, benchmarks: list[str], limit: int | None,
                    after: str | None) -> Submission:
    """The run's evaluation as a job, held until ``after`` (its training job) succeeds; its failure's stderr goes to
    ``<run>/eval/error.log``."""
    from mssr_cli.executors.train_job import CommandJob

    folder = Path(out) / run.name
    job = CommandJob(eval_command(folder, benchmarks, limit), str(folder / "eval"),
                     str(Path(out) / SUBMITIT_DIR / f"{run.name}.eval.stderr"))
    return Submission(run.name, "eval", job, after)


def eval_parameters(train_params: dict) -> dict:
    """An evaluation job asks for what its run's training job asks for, but one node and at most one GPU (one
    process)."""
    params = {**train_params, "job_name": f"{train_params['job_name']}-eval", "nodes": 1}
    if params.get("gpus_per_node"):
        params["gpus_per_node"] = 1
    return params


def batch_script(out: Path, params: dict, count: int) -> str:
    """The sbatch script submitit would submit for ``count`` runs of these parameters (a job array when count > 1),
    from submitit's own script writer; nothing is submitted and no cluster is needed (submitit's executor itself
    wants srun on PATH). Each task runs submitit's loader of its pickled TrainJob."""
    import sys

    from submitit.slurm.slurm import _make_sbatch_string

    folder = (Path(out) / SUBMITIT_DIR).absolute()  # as submitit's executor makes it
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=count if count > 1 else None, **params)


def states(out: Path, records: dict[str, JobRecord]) -> dict[str, str]:
    """The state of each recorded job, by its jobs.json key: sacct's, through submitit's watcher (one sacct call for all);
    for a job sacct does not list yet (accounting lags a fresh submission by a few seconds), squeue's; "UNKNOWN"
    when neither knows it."""
    import submitit

    if not records:
        return {}
    folder = Path(out) / SUBMITIT_DIR
    jobs = {name: submitit.SlurmJob(folder=folder, job_id=rec.job_id) for name, rec in records.items()}
    watcher = next(iter(jobs.values())).watcher
    watcher.update()
    found = {name: watcher.get_state(job.job_id, mode="cache").split()[0].rstrip("+").upper() for name, job in jobs.items()}
    unknown = {name: records[name].job_id for name, state in found.items() if state == "UNKNOWN"}
    if unknown:
        queued = _squeue({job_id.split("_")[0] for job_id in unknown.values()})
        found |= {name: queued[job_id] for name, job_id in unknown.items() if job_id in queued}
    return found


def _squeue(job_ids: set[str]) -> dict[str, str]:
    """squeue's state of the jobs it holds (queued or running), array tasks one per line: ``{"12_3": "PENDING"}``."""
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(job_ids))],
                          capture_output=True, text=True)
    if proc.returncode != 0:  # squeue refuses ids it no longer holds: nothing queued among them
        return {}
    rows = (line.strip().split("|", 1) for line in proc.stdout.splitlines() if "|" in line)
    return {job_id: state.upper() for job_id, state in rows}


def cancel(records: dict[str, JobRecord]) -> None:
    """scancel every recorded job (finished ones are ignored by the scheduler)."""
    if not records:
        return
    proc = subprocess.run(["scancel", *[rec.job_id for rec in records.values()]], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"scancel: {_refusal(subprocess.CalledProcessError(proc.returncode, 'scancel', proc.stderr))}")
