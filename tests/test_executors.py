"""Executors without a cluster: the job parameters a config gives, GPU slots of the local executor, the executor's keys
ignored by a run folder's settings check, two local runs at once, and the errors before anything is queued."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.executors.local import gpu_slots
from mssr_cli.executors.slurm import SlurmError, job_parameters, sbatch_extra


def _params(*overrides):
    cfg = compose(["executor=slurm", *overrides])
    return job_parameters(cfg.executor, cfg.launcher, "mssr-x")


def test_job_parameters_take_each_executor_key_and_the_launchers_gpus():
    params = _params("executor.partition=gpu", "executor.account=lab", "executor.qos=high", "executor.time_min=90",
                     "executor.cpus_per_task=8", "executor.mem_gb=64", "executor.constraint=a100",
                     "executor.array_parallelism=3", "executor.signal_delay_s=300",
                     "executor.sbatch_extra=['--exclusive','--mail-type=END']", "executor.setup=['module load cuda']",
                     "launcher=ddp", "launcher.num_processes=4")
    assert params == {"job_name": "mssr-x", "partition": "gpu", "account": "lab", "qos": "high", "time": 90,
                      "cpus_per_task": 8, "mem": "65536MB", "constraint": "a100", "array_parallelism": 3,
                      "signal_delay_s": 300, "additional_parameters": {"exclusive": True, "mail-type": "END"},
                      "setup": ["module load cuda"], "gpus_per_node": 4, "nodes": 1, "ntasks_per_node": 1}


def test_gpus_per_node_overrides_the_launcher_and_zero_asks_for_none():
    assert _params("launcher=ddp", "launcher.num_processes=2", "executor.gpus_per_node=8")["gpus_per_node"] == 8
    assert "gpus_per_node" not in _params("executor.gpus_per_node=0")  # a CPU job: no --gpus-per-node line
    assert _params()["gpus_per_node"] == 1  # launcher none: one process, one GPU


def test_a_job_needs_a_gpu_count():
    with pytest.raises(SlurmError, match="executor.gpus_per_node"):
        _params("launcher=ddp", "launcher.num_processes=null")


def test_a_run_over_several_machines_is_one_job_over_as_many_nodes_and_its_evaluation_one_node():
    from mssr_cli.executors.slurm import eval_parameters

    params = _params("launcher=zero3", "launcher.num_processes=8", "launcher.num_machines=4")
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (4, 1, 8)
    assert _params("launcher=ddp", "launcher.num_processes=2", "launcher.num_machines=4", "executor.nodes=4")["nodes"] == 4
    evaluation = eval_parameters(params)
    assert (evaluation["nodes"], evaluation["gpus_per_node"], evaluation["job_name"]) == (1, 1, "mssr-x-eval")
    with pytest.raises(SlurmError, match=r"executor.nodes=2 but launcher.num_machines=1: .*launcher.num_machines=2"):
        _params("executor.nodes=2")


def test_on_slurm_the_rendezvous_address_comes_from_the_allocation():
    """launcher.main_process_ip is the job's first host, found on each node: not needed when composing; a run over
    several machines outside SLURM still needs it."""
    from mssr_cli.config.compose import ConfigError

    two = ["launcher=ddp", "launcher.num_processes=1", "launcher.num_machines=2"]
    assert compose(["executor=slurm", *two]).launcher.main_process_ip is None
    with pytest.raises(ConfigError, match="needs launcher.main_process_ip"):
        compose(two)


@pytest.mark.parametrize("nodelist,node,expected", [("gpu[07-08]", "1", "gpu07"), ("a100-3,a100-9", "0", "a100-3")])
def test_each_node_of_a_job_runs_its_machine_of_the_run(monkeypatch, nodelist, node, expected):
    """What TrainJob adds on each node: the node's index as machine rank, the first host as rank 0's address."""
    from mssr_cli.executors.train_job import node_overrides

    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "12", "SLURM_NODEID": node, "SLURM_PROCID": node,
                       "SLURM_JOB_NODELIST": nodelist, "SLURM_JOB_NUM_NODES": "2"}.items():
        monkeypatch.setenv(key, value)
    assert node_overrides(2) == (int(node), [f"launcher.machine_rank={node}", f"launcher.main_process_ip={expected}"])
    assert node_overrides(1) == (0, [])


@pytest.mark.parametrize("line,expected", [("--exclusive", {"exclusive": True}), ("#SBATCH --mail-type=END", {"mail-type": "END"}),
                                           ("--comment=a=b", {"comment": "a=b"})])
def test_sbatch_extra_lines(line, expected):
    assert sbatch_extra([line]) == expected


def test_sbatch_extra_refuses_what_is_not_an_option():
    with pytest.raises(SlurmError, match="executor.sbatch_extra: 'exclusive'"):
        sbatch_extra(["exclusive"])


@pytest.mark.parametrize("max_parallel,per_run,gpus,expected", [
    (None, 1, [str(i) for i in range(8)], [str(i) for i in range(8)]),  # 8 one-GPU runs on 8 GPUs
    (None, 2, ["0", "1", "2", "3", "4"], ["0,1", "2,3"]),  # whole groups only: GPU 4 idles
    (3, 1, ["0", "1", "2", "3"], ["0", "1", "2"]),
    (8, 2, ["0", "1", "2", "3"], ["0,1", "2,3"]),  # never two runs on one GPU
    (None, None, ["0", "1", "2"], ["0,1,2"]),  # launcher.num_processes null: every GPU, one run at a time
    (None, 4, ["0", "1"], ["0,1"]),  # wants more than there are: all of them, one at a time
    (None, 1, [], [None]),  # CPU: one at a time by default
    (2, 1, [], [None, None]),
])
def test_gpu_slots(max_parallel, per_run, gpus, expected):
    assert gpu_slots(max_parallel, per_run, gpus) == expected


def test_the_executor_is_not_a_setting_of_the_run(tmp_path):
    """Moving a half-finished run from local to SLURM, or to another partition, is not 'other settings'."""
    from mssr_cli.experiments.batch import PlannedRun, check_existing
    from mssr_cli.runs.folder import RunFolder

    RunFolder(tmp_path / "r").write_start(compose(["train.max_steps=2"]), ["train.max_steps=2"])
    moved = ["train.max_steps=2", "executor=slurm", "executor.partition=other", "executor.time_min=5",
             "executor.sbatch_extra=['--exclusive']"]
    check_existing([PlannedRun("r", moved, 2)], tmp_path)  # no error
    from mssr_cli.config.compose import ConfigError

    with pytest.raises(ConfigError, match="train.lr"):
        check_existing([PlannedRun("r", [*moved, "train.lr=0.1"], 2)], tmp_path)


def test_sbatch_missing_is_one_line_and_records_nothing(tmp_path):
    from cli_helpers import one_line_error
    from distributed_runs import mssr

    out = tmp_path / "abl"
    result = mssr("ablate", "executor=slurm", "train.max_steps=2", "--variants", "no_shaping", "--out", str(out),
                  env={"PATH": str(tmp_path / "empty")})  # no sbatch on PATH
    one_line_error(result, "`sbatch` not found on PATH")
    assert not (out / "jobs.json").exists()


@pytest.mark.slow
def test_two_local_runs_at_once_each_in_its_own_folder(tmp_path, tiny_policy_path):
    """executor.max_parallel=2 on CPU: both runs are under way at the same time (each started before the other
    finished), each in its own folder, and both finish."""
    from rich.console import Console

    from mssr_cli.executors.local import run_local
    from mssr_cli.experiments.batch import PlannedRun

    short = ["train.max_steps=2", "train.rollouts_per_step=8", "train.eval_every=0", "train.save_every=0",
             "logging.wandb=disabled", "algo.tracker.warm_start=false", "train.num_threads=1"]
    runs = [PlannedRun("a", [*short, "seed=0"], 2), PlannedRun("b", [*short, "seed=1"], 2)]
    run_local(runs, tmp_path / "batch", Console(file=open(tmp_path / "console.txt", "w"), width=200), max_parallel=2,
              gpus=[])
    assert [r.status for r in runs] == ["done", "done"]
    spans = {}
    for run in runs:
        started = (tmp_path / "batch" / run.name / "config.yaml").stat().st_mtime
        ended = (tmp_path / "batch" / run.name / "summary.json").stat().st_mtime
        spans[run.name] = (started, ended)
        assert json.loads((tmp_path / "batch" / run.name / "summary.json").read_text())["steps"] == 2
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1, spans  # the two overlapped: neither waited for the other


def test_train_dry_run_prints_the_jobs_batch_script_without_a_cluster(tmp_path):
    from distributed_runs import mssr

    run = tmp_path / "runs" / "p7b"
    out = mssr("train", "experiment=paper_7b", "executor=slurm", "executor.partition=gpu", "executor.account=lab",
               "executor.time_min=1440", "executor.cpus_per_task=64", "--run-dir", str(run), "--dry-run",
               env={"PATH": str(tmp_path / "empty")})  # no sbatch: a dry run needs none
    assert out.returncode == 0, out.stderr[-3000:]
    script = out.stdout[out.stdout.index("#!/bin/bash"):]
    for line in ("#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=1440",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --nodes=1", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=mssr-p7b"):
        assert line in script, (line, script)
    assert "--array" not in script and "Launch (not run)" not in out.stdout
    job = next(line for line in out.stdout.splitlines() if line.startswith("the job runs:"))
    assert "experiment=paper_7b" in job and job.endswith(f"executor.name=local --run-dir {run}")
    assert not run.parent.exists()  # nothing written


def test_ablate_dry_run_prints_one_array_for_runs_that_share_their_resources(tmp_path):
    from distributed_runs import mssr

    out = tmp_path / "abl"
    result = mssr("ablate", "executor=slurm", "executor.gpus_per_node=0", "executor.setup=['module load cuda']",
                  "train.max_steps=2", "--variants", "no_shaping", "--seeds", "2", "--out", str(out), "--dry-run",
                  env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("#!/bin/bash") == 1 and "#SBATCH --array=0-3%4" in result.stdout
    assert "# setup\nmodule load cuda" in result.stdout and "--gpus-per-node" not in result.stdout
    tasks = [line for line in result.stdout.splitlines() if line.startswith("task ")]
    assert [t.split(" runs: ")[0] for t in tasks] == ["task 0", "task 1", "task 2", "task 3"]
    assert all("executor.name=local" in t for t in tasks) and tasks[3].endswith(f"--run-dir {out / 'no_shaping__s1'}")
    assert not out.exists()


def test_dry_run_prints_a_multi_node_job_and_each_runs_evaluation_job(tmp_path):
    """A run over 2 machines: one job of 2 nodes, one task per node, each node told its rank; with --eval, each run's
    evaluation job too (one node, held by afterok on its training job)."""
    from distributed_runs import mssr

    out = tmp_path / "abl"
    result = mssr("ablate", "executor=slurm", "launcher=ddp", "launcher.num_processes=4", "launcher.num_machines=2",
                  "train.max_steps=2", "--variants", "no_shaping", "--out", str(out), "--dry-run",
                  "--eval", "digits", "--eval-limit", "8", env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    train, *evals = text.split("\nBatch script")[1:]
    assert "a job array of 2 tasks, each over 2 nodes" in train
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4", "#SBATCH --array=0-1%2"):
        assert line in train, line
    tasks = [line for line in train.splitlines() if line.startswith("task ")]
    assert len(tasks) == 2 and all(" runs on each of its 2 nodes: " in t and t.endswith(
        "launcher.machine_rank=<the node's SLURM_NODEID> launcher.main_process_ip=<the job's first host>") for t in tasks)
    assert [e.split(" of ")[1].split("'s evaluation")[0] for e in evals] == ["mssr__s0", "no_shaping__s0"]
    for script in evals:
        assert "afterok" in script and "#SBATCH --nodes=1" in script and "#SBATCH --gpus-per-node=1" in script
        assert "--array" not in script and "#SBATCH --job-name=mssr-abl-eval" in script
        job = next(line for line in script.splitlines() if line.startswith("the job runs:"))
        assert job.split(" -m mssr_cli ")[1].startswith("eval --benchmarks digits --model ") and job.endswith("--limit 8")
    assert not out.exists()


def test_resume_takes_the_executor_group_and_refuses_an_unknown_one(tmp_path):
    from mssr_cli.config.compose import ConfigError
    from mssr_cli.runs.folder import RunFolder, resume_config

    run = tmp_path / "run"
    RunFolder(run).write_start(compose([]), [])
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    cfg, overrides = resume_config(run, ["executor=slurm", "executor.partition=other"])
    assert (cfg.executor.name, cfg.executor.partition, cfg.executor.time_min) == ("slurm", "other", 240)
    assert overrides[-2:] == ["executor=slurm", "executor.partition=other"]
    with pytest.raises(ConfigError, match="executor=nosuch: unknown executor option; valid choices: local, slurm"):
        resume_config(run, ["executor=nosuch"])


def test_agents_dry_run_and_refusals_without_a_cluster(tmp_path):
    from cli_helpers import one_line_error
    from distributed_runs import mssr

    env = {"PATH": str(tmp_path / "empty")}
    dry = mssr("agents", "lab/mssr/abc", "executor=slurm", "executor.gpus_per_node=0", "--jobs", "3", "--count", "2",
               "--out", str(tmp_path / "ag"), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "#SBATCH --array=0-2%3" in dry.stdout and "#SBATCH --job-name=mssr-agent-abc" in dry.stdout
    assert dry.stdout.strip().splitlines()[-1].endswith("-m wandb agent --count 2 lab/mssr/abc")
    assert not (tmp_path / "ag").exists()
    one_line_error(mssr("agents", "lab/mssr/abc", "--jobs", "2", env=env), "give executor=slurm")
    one_line_error(mssr("agents", "lab/mssr/abc", "executor=slurm", "--jobs", "0", env=env), "--jobs 0")
    one_line_error(mssr("agents", "lab/mssr/abc", "executor=slurm", env=env), "`sbatch` not found")


@pytest.mark.slow
def test_local_ablation_with_eval_evaluates_each_run_once_and_compares_per_benchmark(tmp_path, tiny_policy_path):
    import csv

    from distributed_runs import mssr

    out = tmp_path / "abl"
    args = ["ablate", "train.max_steps=1", "train.rollouts_per_step=8", "train.eval_every=1", "train.save_every=0",
            "data.val_limit=8", "logging.wandb=disabled", "algo.tracker.warm_start=false", "--variants", "no_shaping",
            "--out", str(out), "--eval", "digits", "--eval-limit", "4"]
    first = mssr(*args, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("mssr__s0", "no_shaping__s0"):
        summary = json.loads((out / name / "eval" / "summary.json").read_text())
        assert summary["limit"] == 4 and summary["benchmarks"]["digits"]["n"] == 4
    with (out / "compare.csv").open() as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    for variant in ("mssr", "no_shaping"):
        got = json.loads((out / f"{variant}__s0" / "eval" / "summary.json").read_text())["benchmarks"]["digits"]
        assert float(rows[variant]["digits_mean"]) == pytest.approx(got["accuracy"])
    stamp = (out / "mssr__s0" / "eval" / "summary.json").stat().st_mtime
    again = mssr(*args, timeout=900)  # finished and evaluated: neither trained nor evaluated again
    assert again.returncode == 0 and "evaluated earlier on digits, skipped" in again.stdout, again.stdout
    assert (out / "mssr__s0" / "eval" / "summary.json").stat().st_mtime == stamp


@pytest.mark.parametrize("args,words", [
    (["--eval-limit", "4"], ["--eval-limit 4", "needs --eval"]),
    (["--eval", "digits", "--eval-limit", "0"], ["--eval-limit 0", ">= 1"]),
    (["--eval", "digits,nosuch"], ["--eval", "nosuch"]),
])
def test_eval_options_are_checked_before_anything_runs(tmp_path, args, words):
    from cli_helpers import one_line_error
    from distributed_runs import mssr

    out = tmp_path / "abl"
    one_line_error(mssr("ablate", "train.max_steps=1", "--variants", "no_shaping", "--out", str(out), "--dry-run", *args),
                   *words)
    assert not out.exists()


def test_a_sweep_with_a_slurm_executor_needs_no_local_flag(tmp_path):
    from distributed_runs import mssr

    root = Path(__file__).resolve().parents[1]
    result = mssr("sweep", str(root / "sweeps" / "mssr_shaping.yaml"), "executor.name=slurm", "executor.gpus_per_node=0",
                  "--max-runs", "2", "--out", str(tmp_path / "sw"), "--dry-run", env={"PATH": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "#SBATCH --array=0-1%2" in result.stdout
