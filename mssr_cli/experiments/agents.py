"""``mssr agents SWEEP_ID --jobs N``: W&B sweep agents as SLURM jobs, the card's "wandb agent <sweep-id>" on a cluster.

One command submits N jobs (one job array) with the executor's keys; each runs ``wandb agent [--count K] SWEEP_ID``,
which asks the W&B server for parameter sets and runs the sweep file's command (``mssr train ${args_no_hyphens}``)
for each, inside the job, logging online to the sweep. A job gets the submitting shell's environment (sbatch's
default ``--export=ALL``): log in with ``WANDB_API_KEY`` there; the key is never written to the batch folder.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from mssr_cli.config.compose import ConfigError, compose


def agent_command(sweep_id: str, count: int | None) -> list[str]:
    """``wandb agent`` of this environment's wandb (``python -m wandb``: the one installed beside mssr, PATH or not)."""
    return [sys.executable, "-m", "wandb", "agent", *(["--count", str(count)] if count is not None else []), sweep_id]


def default_out(sweep_id: str) -> Path:
    return Path("runs") / f"agents__{re.sub(r'[^A-Za-z0-9._-]+', '-', sweep_id)}"


def submit_agents(sweep_id: str, jobs: int, count: int | None, overrides: list[str], out: Path | None, dry_run: bool,
                  console) -> Path:
    """Submit ``jobs`` agent jobs (one array) into ``out``'s jobs.json; ``dry_run``: print the script instead."""
    from mssr_cli.executors import slurm
    from mssr_cli.executors.records import read_jobs, write_jobs
    from mssr_cli.executors.train_job import CommandJob

    if not sweep_id.strip() or any(c.isspace() for c in sweep_id):
        raise ConfigError(f"sweep id {sweep_id!r}: give it as `wandb sweep` printed it (entity/project/id)")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: need at least 1 agent job")
    if count is not None and count < 1:
        raise ConfigError(f"--count {count}: need at least 1 run per agent (or leave it out: until the sweep ends)")
    cfg = compose(overrides)
    if cfg.executor.name != "slurm":
        raise ConfigError("mssr agents submits SLURM jobs: give executor=slurm (and its keys, e.g. executor.partition=gpu); "
                          "on this machine run `wandb agent <sweep id>` itself")
    out = Path(out) if out is not None else default_out(sweep_id)
    params = slurm.job_parameters(cfg.executor, cfg.launcher, f"mssr-agent-{sweep_id.rsplit('/', 1)[-1]}")
    command = agent_command(sweep_id, count)
    if dry_run:
        console.print(slurm.batch_script(out, params, jobs), markup=False, highlight=False, soft_wrap=True)
        console.print(f"each task runs: {' '.join(command)}", markup=False, highlight=False, soft_wrap=True)
        return out
    records = read_jobs(out)
    first = 1 + max((int(r.run.split("_")[-1]) for r in records.values() if r.stage == "agent"), default=-1)
    names = [f"agent_{first + i}" for i in range(jobs)]
    batch = [slurm.Submission(name, "agent", CommandJob(command, str(out / name),
                                                        str(out / slurm.SUBMITIT_DIR / f"{name}.stderr")))
             for name in names]
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        new = slurm.submit(out, [(params, batch)])
    except slurm.SlurmError:
        if not existed:  # nothing recorded: not even the folder this command made
            shutil.rmtree(out, ignore_errors=True)
        raise
    write_jobs(out, records | new)
    ids = ", ".join(rec.job_id for rec in new.values())
    console.print(f"Submitted {jobs} agent job(s) for sweep {sweep_id}: {ids}. Each runs `{' '.join(command)}`; watch "
                  f"with `squeue` or the sweep's W&B page, cancel with `mssr cancel {out}`.", markup=False,
                  highlight=False, soft_wrap=True)
    return out
