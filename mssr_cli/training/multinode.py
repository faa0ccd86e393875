"""Several machines (``launcher.num_machines > 1``): every machine's ``accelerate launch`` line, and a SLURM script.

Pure text from a ``launch.Launch`` (no torch, nothing run), so ``mssr train ... --dry-run`` can print them on a
login node and tests can read them. Each machine runs the same command but for its ``--machine_rank``; all of
them name the same ``--run-dir``, which must be one folder on a filesystem every machine shares: global rank 0
(on machine 0) alone writes the run folder, but every process writes its own part of each checkpoint (its RNG
state; under DeepSpeed its shards) and every process reads the checkpoint it resumes from.
"""

from __future__ import annotations

import shlex
from pathlib import Path

RANK_KEY = "launcher.machine_rank"
IP_KEY = "launcher.main_process_ip"
# SLURM: the node's index in the job (one task per node, so SLURM_PROCID is the same number), and the first host of
# the allocation, which is node 0, as rank 0's address; both are expanded on each node, not when the script starts
SLURM_RANK = '"$SLURM_NODEID"'
SLURM_IP = '"$MAIN_IP"'
_RANK_MARK, _IP_MARK = "@MSSR_MACHINE_RANK@", "@MSSR_MAIN_IP@"  # stand-ins that shlex leaves unquoted


def node_overrides(overrides: list[str], machine_rank: int | str, main_process_ip: str | None) -> list[str]:
    """``overrides`` with this machine's rank and rank 0's address, so each machine's config says what it ran."""
    def key(override: str) -> str:
        return override.partition("=")[0].lstrip("+~")

    kept = [o for o in overrides if key(o) not in (RANK_KEY, IP_KEY)]
    return [*kept, f"{RANK_KEY}={machine_rank}", f"{IP_KEY}={main_process_ip}"]


def node_commands(launch) -> list[str]:
    """One shell line per machine, machine rank 0 first."""
    return [launch.command(rank) for rank in range(launch.num_machines)]


def sbatch_script(launch, job_name: str, workdir: Path) -> str:
    """A SLURM batch script: one task per node, each running ``accelerate launch`` with the node's rank.

    ``sbatch`` runs it on the first node; ``srun`` starts one ``bash -c`` per node, in which ``$SLURM_NODEID``
    (0 .. nodes - 1) is that node's machine rank and ``$MAIN_IP`` is the first host of the allocation (node 0)."""
    argv = launch.argv(_RANK_MARK, _IP_MARK)
    command = shlex.join(argv).replace(_RANK_MARK, SLURM_RANK).replace(_IP_MARK, SLURM_IP)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch.env if k != "ACCELERATE_USE_CPU")  # nodes with GPUs
    nodes = launch.num_machines
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "# one task per node: its `accelerate launch` starts that node's processes",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={launch.per_machine}",
        f"#SBATCH --chdir={shlex.quote(str(workdir))}",
        "set -euo pipefail",
        "# machine rank 0 is the first host of the allocation (node 0); every node reaches its rendezvous there",
        'HOSTS=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))  # no pipe into head: its SIGPIPE fails pipefail',
        "MAIN_IP=${HOSTS[0]}",
        f"export MAIN_IP {env}",
        f"srun --nodes={nodes} --ntasks-per-node=1 bash -c {shlex.quote(command)}",
        "",
    ])


def describe_launch(launch, cwd: Path) -> list[str]:
    """What ``mssr train ... --dry-run`` prints for several machines: each machine's command, then a SLURM script."""
    port = launch.argv(0)[launch.argv(0).index("--main_process_port") + 1]
    folder = launch.tail[-1]
    lines = [f"# {launch.num_machines} machines x {launch.per_machine} process(es) = {launch.world} processes; run each "
             f"line on its machine, every one with the same folder {folder} (a filesystem they share)"]
    for rank, command in enumerate(node_commands(launch)):
        where = f" (rendezvous at {launch.main_process_ip}:{port}; writes the run folder)" if rank == 0 else ""
        lines += [f"# machine {rank}{where}", command]
    job = Path(folder).name
    lines += [f"# or on SLURM: save the script below as {job}.sbatch, then `sbatch {job}.sbatch` (rank 0's address "
              "comes from the allocation, not from launcher.main_process_ip)"]
    return lines + sbatch_script(launch, job, cwd).rstrip("\n").splitlines()
