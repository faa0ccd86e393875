"""Several machines: `mssr train launcher=ddp launcher.num_machines=2 launcher.machine_rank=R ...` on each.

This host plays both machines: two `mssr train` commands started together, machine ranks 0 and 1, rank 0's
address 127.0.0.1, each starting one CPU process (gloo). Together they must train exactly like one process at
the same global batch. The per-machine commands and the SLURM script are pure text, checked directly (the
script is also run, against stand-ins for srun, scontrol and accelerate).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distributed_runs import COMMON, assert_trains_like_one, finish, free_port, metrics, mssr, start_mssr
from mssr_cli.cli import app
from mssr_cli.training.launch import CHILD_ENV, Launch
from mssr_cli.training.multinode import node_commands, sbatch_script

RUNNER = CliRunner()
TINY_LR = 5e-4  # conf/recipe/tiny.yaml: each Adam update moves a weight by about this much


def _machines(port: int) -> list[str]:
    return ["launcher=ddp", "launcher.num_processes=1", "launcher.num_machines=2", "launcher.main_process_ip=127.0.0.1",
            f"launcher.main_process_port={port}"]


def _train_on_two_machines(run_dirs: tuple[Path, Path]) -> list[subprocess.CompletedProcess]:
    """Machine ranks 0 and 1 started together (as two nodes would be), each with its own --run-dir."""
    shared = _machines(free_port())
    procs = [start_mssr("train", *COMMON, *shared, f"launcher.machine_rank={rank}", "--run-dir", str(run_dirs[rank]))
             for rank in (0, 1)]
    done = finish(procs, timeout=400)
    for rank, result in enumerate(done):
        assert result.returncode == 0, (rank, result.stderr[-3000:])
    return done


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    (file,) = folder.glob("*.safetensors")
    return load_file(str(file))


@pytest.mark.slow
def test_two_machines_train_like_one_process(tmp_path, tiny_policy_path, one_process_run):
    """2 machines x 1 process vs 1 process, same global batch and seed: the same metrics, tracker and weights.

    Both machines name the same run folder (a shared filesystem): global rank 0 writes it, and each process
    adds its own RNG state to every checkpoint."""
    two = tmp_path / "two"
    rank0, rank1 = _train_on_two_machines((two, two))

    for rank, result in enumerate((rank0, rank1)):
        command = result.stdout.lstrip().splitlines()[0]  # each machine prints the line it runs, first
        assert f"--num_processes 2 --mixed_precision no --num_machines 2 --machine_rank {rank} " \
               "--main_process_ip 127.0.0.1 --main_process_port" in command, command
        assert command.endswith(f"launcher.machine_rank={rank} launcher.main_process_ip=127.0.0.1 --run-dir {two}")
    assert rank0.stdout.count("Run folder:") == 1 and "Run folder:" not in rank1.stdout, "global rank 0 alone prints"

    assert_trains_like_one(one_process_run, two)

    # the weights: every element equal up to float noise, which Adam turns into at most a fraction of one step
    start, alone, together = (_weights(p) for p in (Path(tiny_policy_path), one_process_run / "model", two / "model"))
    assert alone.keys() == together.keys() == start.keys()
    differ = max((alone[k] - together[k]).abs().max().item() for k in alone)
    moved = max((alone[k] - start[k]).abs().max().item() for k in alone)
    assert moved > 2 * TINY_LR, "3 updates must have moved the weights"
    assert differ < 0.1 * TINY_LR, f"1 process vs 2 machines: weights differ by up to {differ:.2e}"

    checkpoint = two / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert not list((two / "checkpoints").glob(".staging/checkpoint-*")) and not (two / ".lock").exists()
    saved = (two / "config.yaml").read_text()
    assert "num_machines: 2" in saved and "machine_rank: 0" in saved  # written by machine 0's config


@pytest.mark.slow
def test_without_a_shared_filesystem_machine_0_holds_the_run(tmp_path, tiny_policy_path, one_process_run):
    """Each machine's --run-dir on its own disk: training is the same, machine 0's folder holds the whole run but
    for the other machine's RNG state, which stays behind in that machine's checkpoints/.staging/ (README:
    Several nodes: such a run cannot be resumed as it is)."""
    mine, theirs = tmp_path / "machine0", tmp_path / "machine1"
    _train_on_two_machines((mine, theirs))

    assert_trains_like_one(one_process_run, mine)
    assert (mine / "summary.json").exists() and (mine / "model" / "config.json").exists()
    checkpoint = mine / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "rng_state_0.pth").exists() and not (checkpoint / "rng_state_1.pth").exists()
    left = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*") if p.is_file())
    assert left == ["checkpoints/.staging/checkpoint-3/rng_state_1.pth"]
    assert [m["step"] for m in metrics(mine)] == [0, 1, 2, 3]


# ---- the per-machine commands and the SLURM script, as pure text -------------------------------------------

def _launch(**changes) -> Launch:
    given = dict(accelerate="/venv/bin/accelerate", config_file="/repo/conf/accelerate/zero3.yaml", per_machine=4,
                 mixed_precision="bf16",
                 overrides=("launcher=zero3", "launcher.num_processes=4", "launcher.num_machines=2",
                            "launcher.machine_rank=0", "launcher.main_process_ip=10.1.2.3"),
                 tail=("--run-dir", "/shared/runs/x"), env=((CHILD_ENV, "1"), ("ACCELERATE_USE_CPU", "true")),
                 num_machines=2, main_process_ip="10.1.2.3", main_process_port=29555)
    return Launch(**{**given, **changes})


def _flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


def test_each_machine_runs_accelerate_with_its_rank_and_rank_0s_address():
    launch = _launch()
    for rank in (0, 1):
        argv = launch.argv(rank)
        assert argv[:2] == ["/venv/bin/accelerate", "launch"]
        assert _flag(argv, "--num_processes") == "8", "accelerate's --num_processes is the total over all machines"
        assert _flag(argv, "--num_machines") == "2"
        assert _flag(argv, "--machine_rank") == str(rank)
        assert _flag(argv, "--main_process_ip") == "10.1.2.3"
        assert _flag(argv, "--main_process_port") == "29555"
        assert _flag(argv, "--config_file") == "/repo/conf/accelerate/zero3.yaml"
        train = argv[argv.index("-m"):]
        assert train[:3] == ["-m", "mssr_cli", "train"] and train[-2:] == ["--run-dir", "/shared/runs/x"]
        assert [o for o in train if o.startswith("launcher.machine_rank")] == [f"launcher.machine_rank={rank}"]
        assert [o for o in train if o.startswith("launcher.main_process_ip")] == ["launcher.main_process_ip=10.1.2.3"]
    lines = node_commands(launch)
    assert len(lines) == 2 and all(line.startswith("MSSR_LAUNCHED=1 ACCELERATE_USE_CPU=true ") for line in lines)
    assert " --machine_rank 0 " in lines[0] and " --machine_rank 1 " in lines[1]


def test_defaults_a_resume_and_one_machine():
    port = _launch(main_process_port=None).argv(1)
    assert _flag(port, "--main_process_port") == "29500"  # accelerate's default, spelled out for every machine

    resumed = _launch(overrides=("train.max_steps=9",), tail=("--resume", "/shared/runs/x")).argv(1)
    assert _flag(resumed, "--machine_rank") == "1"  # --resume keeps the saved config: the rank goes to accelerate only
    assert resumed[resumed.index("-m"):] == ["-m", "mssr_cli", "train", "train.max_steps=9", "--resume", "/shared/runs/x"]

    one = _launch(num_machines=1, overrides=("launcher=ddp",), main_process_port=None).argv(0)
    assert one == ["/venv/bin/accelerate", "launch", "--config_file", "/repo/conf/accelerate/zero3.yaml",
                   "--num_processes", "4", "--mixed_precision", "bf16",
                   "-m", "mssr_cli", "train", "launcher=ddp", "--run-dir", "/shared/runs/x"]


def test_the_sbatch_script_text():
    script = sbatch_script(_launch(), "x", Path("/repo"))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("#SBATCH --job-name=x", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --chdir=/repo", 'MAIN_IP=${HOSTS[0]}'):
        assert line in lines, line
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert all(not lines[i].startswith(("set ", "MAIN_IP", "srun")) for i in range(directives[-1])), "directives first"
    hosts = lines[lines.index("MAIN_IP=${HOSTS[0]}") - 1]
    assert hosts.startswith('HOSTS=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))')
    (srun,) = [line for line in lines if line.startswith("srun ")]
    assert srun.startswith("srun --nodes=2 --ntasks-per-node=1 bash -c '")
    assert '--machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" --main_process_port 29555' in srun
    assert "ACCELERATE_USE_CPU" not in script  # the nodes have GPUs


def test_the_sbatch_script_starts_every_node_with_its_rank(tmp_path):
    """Run the script with stand-ins: srun starts its command once per node (SLURM_NODEID 0, 1), scontrol names
    the allocation's hosts, and 'accelerate' writes down the arguments and environment it got."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    stand_ins = {
        "srun": '#!/bin/bash\nn=1\nwhile [[ $1 == -* ]]; do [[ $1 == --nodes=* ]] && n=${1#--nodes=}; shift; done\n'
                'for ((i = 0; i < n; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & done\nwait\n',
        "scontrol": '#!/bin/bash\n[[ "$1 $2" == "show hostnames" ]] && echo "$3" > "$OUT/nodelist"'
                    ' && printf "gpu07\\ngpu08\\n"\n',
        "accelerate": '#!/bin/bash\nprintf "%s\\n" "$@" > "$OUT/args_$SLURM_NODEID"\n'
                      'echo "$MSSR_LAUNCHED ${ACCELERATE_USE_CPU:-unset}" > "$OUT/env_$SLURM_NODEID"\n',
    }
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(_launch(accelerate=str(bin_dir / "accelerate")), "job", tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MSSR_LAUNCHED", "ACCELERATE_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", OUT=str(out), SLURM_JOB_NODELIST="gpu[07-08]")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    assert (out / "nodelist").read_text().strip() == "gpu[07-08]"
    for rank in (0, 1):
        argv = (out / f"args_{rank}").read_text().splitlines()
        assert _flag(argv, "--machine_rank") == str(rank)
        assert _flag(argv, "--main_process_ip") == "gpu07"  # the first host: node 0, machine rank 0
        assert _flag(argv, "--main_process_port") == "29555" and _flag(argv, "--num_processes") == "8"
        assert f"launcher.machine_rank={rank}" in argv and "launcher.main_process_ip=gpu07" in argv
        assert argv[-2:] == ["--run-dir", "/shared/runs/x"]
        assert (out / f"env_{rank}").read_text().split() == ["1", "unset"]  # the processes train; GPUs, not CPU


# ---- through the command line -------------------------------------------------------------------------------

def _one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, (words, result.exit_code, result.output[-500:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


TWO_MACHINES = ["launcher=ddp", "launcher.num_machines=2", "launcher.num_processes=2", "launcher.main_process_ip=10.0.0.1"]


@pytest.mark.parametrize(("overrides", "words"), [
    (["launcher=ddp", "launcher.num_machines=2", "launcher.machine_rank=2"],
     ["launcher.machine_rank=2", "launcher.num_machines=2"]),
    (["launcher.machine_rank=1"], ["launcher.machine_rank=1", "launcher.num_machines=1"]),
    (["launcher.num_machines=2"], ["launcher.num_machines=2", "launcher=none"]),
    (["launcher=ddp", "launcher.num_machines=2", "launcher.num_processes=2"],
     ["launcher.num_machines=2", "launcher.main_process_ip"]),
    ([*TWO_MACHINES, "launcher.main_process_port=0"], ["launcher.main_process_port=0", "launcher.num_machines=2"]),
    (["launcher=ddp", "launcher.num_machines=2", "launcher.main_process_ip=10.0.0.1"],
     ["launcher.num_processes=null", "launcher.num_machines=2"]),
    ([*TWO_MACHINES, "launcher.num_processes=3"], ["launcher.num_processes=3", "launcher.num_machines=2", "6 processes"]),
    (["launcher=ddp", "launcher.num_machines=-1"], ["launcher.num_machines=-1"]),
    (["launcher=ddp", "launcher.machine_rank=-1"], ["launcher.machine_rank=-1"]),
], ids=["rank-too-high", "rank-one-machine", "no-launcher", "no-ip", "free-port", "null-processes", "indivisible",
        "machines-negative", "rank-negative"])
def test_bad_combinations_are_one_line_errors(overrides, words):
    _one_line_error(RUNNER.invoke(app, ["train", *overrides, "--dry-run"]), *words)


def test_the_issue_example_through_the_installed_command():
    out = mssr("train", "launcher.name=ddp", "launcher.num_machines=2", "launcher.machine_rank=2", "--dry-run", timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stdout[-300:]
    (line,) = out.stderr.strip().splitlines()
    assert line == "error: launcher.machine_rank=2 must be below launcher.num_machines=2 (machine ranks run 0 .. 1)"


def test_dry_run_prints_every_machine_and_a_slurm_script(tmp_path):
    run = tmp_path / "run"
    result = RUNNER.invoke(app, ["train", *TWO_MACHINES, "launcher.main_process_port=29555", "train.micro_batch_size=8",
                                 "--run-dir", str(run), "--dry-run"])
    assert result.exit_code == 0, result.output[-2000:]
    out = result.stdout
    assert "processes: 4 (ddp, 2 machines x 2); per device: micro-batch 2 rollouts" in out  # 8 over the world of 4
    commands = [line for line in out.splitlines() if " launch --config_file " in line and not line.startswith("srun")]
    assert len(commands) == 2
    for rank, command in enumerate(commands):
        assert f"--num_processes 4 --mixed_precision no --num_machines 2 --machine_rank {rank} --main_process_ip " \
               "10.0.0.1 --main_process_port 29555 -m mssr_cli train" in command
        assert command.endswith(f"launcher.machine_rank={rank} launcher.main_process_ip=10.0.0.1 --run-dir {run}")
    assert "#SBATCH --nodes=2" in out and "#SBATCH --gpus-per-node=2" in out and f"--run-dir {run}'" in out
    assert not run.exists()


def test_a_real_launch_on_several_machines_needs_the_run_folder_named():
    """Each machine would otherwise name its folder after its own clock; refused before anything starts."""
    (out,) = finish([start_mssr("train", *TWO_MACHINES)], timeout=120)  # were it to launch: stopped, not left waiting
    assert out.returncode == 2 and "accelerate launch" not in out.stdout, out.stdout[-300:]
    (line,) = out.stderr.strip().splitlines()
    assert "launcher.num_machines=2: give --run-dir" in line


def test_resume_dry_run_keeps_the_saved_config_and_passes_each_rank_to_accelerate(tmp_path):
    """`mssr train --resume RUN --dry-run` on a 2-machine run: each machine's line resumes the same folder."""
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import compose

    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    cfg = compose([*TWO_MACHINES, "launcher.main_process_port=29555"])
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create([*TWO_MACHINES])))
    result = RUNNER.invoke(app, ["train", "--resume", str(run), "train.max_steps=9", "--dry-run"])
    assert result.exit_code == 0, result.output[-2000:]
    commands = [line for line in result.stdout.splitlines()
                if " launch --config_file " in line and not line.startswith("srun")]
    assert len(commands) == 2
    for rank, command in enumerate(commands):
        assert f"--machine_rank {rank} --main_process_ip 10.0.0.1 --main_process_port 29555" in command
        assert command.endswith(f"-m mssr_cli train train.max_steps=9 --resume {run}")


def test_a_machine_may_resume_with_its_own_rank_and_a_new_rank_0(tmp_path):
    """Each machine resumes the same run with its own rank (and, after a restart, maybe another rank-0 host)."""
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import ConfigError, compose
    from mssr_cli.runs.folder import resume_config

    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose([*TWO_MACHINES])))
    (run / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create([*TWO_MACHINES])))
    cfg, _ = resume_config(run, ["launcher.machine_rank=1", "launcher.main_process_ip=10.0.0.9",
                                 "launcher.main_process_port=29600"])
    assert (cfg.launcher.machine_rank, cfg.launcher.main_process_ip, cfg.launcher.main_process_port) == (1, "10.0.0.9", 29600)
    with pytest.raises(ConfigError, match="launcher.num_machines"):  # the world size changes the run: refused
        resume_config(run, ["launcher.num_machines=3"])


def test_launcher_yaml_files_list_the_multi_machine_keys():
    from mssr_cli.config.paths import conf_dir

    for path in sorted((conf_dir() / "launcher").glob("*.yaml")):
        text = path.read_text()
        for line in ("num_machines: 1 ", "machine_rank: 0 ", "main_process_ip: null "):
            assert line in text, (path.name, line)
