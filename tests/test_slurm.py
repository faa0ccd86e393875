"""`executor=slurm` against a real SLURM cluster, through the command line (issue 21).

CI starts a one-node cluster with accounting before the tests (`.ci/slurm/start.sh`, as root) and sets
MSSR_REQUIRE_SLURM=1, so these fail there when it is missing. Elsewhere they are skipped, saying how to start one.
The jobs run this checkout's Python on the same machine, so a resumed run equals an uninterrupted one exactly.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error
from distributed_runs import COMMON, free_port, mssr
from distributed_runs import COMPARED as DISTRIBUTED_COMPARED

pytestmark = pytest.mark.slow

# 2 RL steps of 8 rollouts, validation at both ends, a checkpoint every step; CPU-only jobs of one core
SHORT = ["train.max_steps=2", "train.rollouts_per_step=8", "data.train_limit=32", "data.val_limit=8",
         "train.eval_every=2", "train.save_every=1", "train.num_threads=1", "logging.wandb=disabled",
         "algo.tracker.warm_start=false"]
SLURM = ["executor=slurm", "executor.partition=debug", "executor.gpus_per_node=0", "executor.time_min=20"]


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not _cluster_answers():
        if os.environ.get("MSSR_REQUIRE_SLURM") == "1":
            pytest.fail("MSSR_REQUIRE_SLURM=1 but no SLURM cluster answers `sinfo`: .ci/slurm/start.sh starts one")
        pytest.skip("no SLURM cluster answers `sinfo`: `bash .ci/slurm/start.sh` (as root) starts a one-node cluster "
                    "on this machine, then `make test` runs these")


def _jobs(out: Path) -> dict:
    """The training jobs of jobs.json, by run."""
    return {row["run"]: row for row in json.loads((out / "jobs.json").read_text())["jobs"] if row["stage"] == "train"}


def _times(job_id: str) -> tuple[str, str]:
    """sacct's Start and End of a job (ISO times: they sort as strings)."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "Start,End", "-j", job_id], capture_output=True, text=True,
                         check=True).stdout.split()
    start, end = out[0].split("|")
    return start, end


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, tiny_policy_path):
    """2 variants (MSSR, MVSR) x 2 seeds submitted as one job array, each run evaluated on digits (8 items) by a job
    of its own after its training job, waited for and compared."""
    out = tmp_path_factory.mktemp("slurm") / "abl"
    args = ["ablate", *SLURM, *SHORT, "--variants", "no_shaping", "--seeds", "2", "--out", str(out),
            "--eval", "digits", "--eval-limit", "8"]
    started = time.time()
    first = mssr(*args, timeout=900)
    return args, out, first, time.time() - started


def test_an_ablation_runs_as_a_job_array_and_is_compared(ablation):
    _, out, first, seconds = ablation
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = json.loads((out / "jobs.json").read_text())["jobs"]
    jobs = {row["run"]: row for row in rows if row["stage"] == "train"}
    evals = {row["run"]: row for row in rows if row["stage"] == "eval"}
    assert sorted(jobs) == sorted(evals) == ["mssr__s0", "mssr__s1", "no_shaping__s0", "no_shaping__s1"]
    arrays = {row["job_id"].split("_")[0] for row in jobs.values()}
    assert len(arrays) == 1 and all("_" in row["job_id"] for row in jobs.values()), jobs  # one array of 4 tasks
    assert {row["executor"] for row in jobs.values()} == {"slurm"} and {row["submissions"] for row in jobs.values()} == {1}
    status = mssr("status", str(out))
    assert status.returncode == 0, status.stdout + status.stderr  # every run done
    lines = [line for line in status.stdout.splitlines() if line.split() and line.split()[0] in jobs]
    assert len(lines) == 4 and all(line.split()[1] == "done" for line in lines), status.stdout
    eval_lines = [line for line in status.stdout.splitlines() if line.split() and line.split()[0].endswith(":eval")]
    assert len(eval_lines) == 4 and all(line.split()[1] == "done" and "digits" in line for line in eval_lines)
    # each evaluation is its own job, started only after its run's training job ended
    for name, row in evals.items():
        assert "_" not in row["job_id"] and row["job_id"] != jobs[name]["job_id"]
        trained = _times(jobs[name]["job_id"])
        evaluated = _times(row["job_id"])
        assert evaluated[0] >= trained[1], (name, trained, evaluated)
        summary = json.loads((out / name / "eval" / "summary.json").read_text())
        assert summary["limit"] == 8 and summary["benchmarks"]["digits"]["n"] == 8
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {row["variant"]: int(row["seeds"]) for row in rows} == {"mssr": 2, "no_shaping": 2}, rows
    for row in rows:  # --eval's benchmark columns: the mean over the variant's two runs' digits accuracy
        accuracies = [json.loads((out / f"{row['variant']}__s{seed}" / "eval" / "summary.json").read_text())
                      ["benchmarks"]["digits"]["accuracy"] for seed in (0, 1)]
        assert float(row["digits_mean"]) == pytest.approx(sum(accuracies) / 2)
    for name in jobs:
        assert [m["step"] for m in _lines(out / name)] == [0, 1, 2]
    # --dry-run prints the very script that was submitted
    [submitted] = [text for p in (out / ".slurm").glob("*_submission.sh") if "--array" in (text := p.read_text())]
    dry = mssr(*ablation[0], "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    printed = dry.stdout[dry.stdout.index("#!/bin/bash"):dry.stdout.index("\ntask 0 runs:")]  # the array's
    assert printed.strip() == submitted.strip()
    print(f"\n4-run ablation under executor=slurm: {seconds:.0f} s")


def test_the_same_command_again_submits_nothing(ablation):
    args, out, _, _ = ablation
    before = (out / "jobs.json").read_text()
    again = mssr(*args, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Nothing to submit" in again.stdout
    assert (out / "jobs.json").read_text() == before


def test_a_bad_partition_exits_2_in_one_line_and_records_nothing(tmp_path, tiny_policy_path):
    out = tmp_path / "abl"
    result = mssr("ablate", *SLURM, "executor.partition=nosuch", *SHORT, "--variants", "no_shaping", "--out", str(out))
    line = one_line_error(result, "sbatch refused the job")
    assert "invalid partition" in line.lower(), line
    assert not out.exists()  # nothing recorded: no jobs.json, no run folder, not even the batch folder


def test_a_bad_account_exits_2_with_the_schedulers_words(tmp_path, tiny_policy_path):
    out = tmp_path / "abl"
    result = mssr("ablate", *SLURM, "executor.account=nosuch", *SHORT, "--variants", "no_shaping", "--out", str(out))
    line = one_line_error(result, "sbatch refused the job")
    assert "invalid account" in line.lower(), line
    assert not (out / "jobs.json").exists()


SIX = [*SHORT, "train.max_steps=6", "train.eval_every=3"]
COMPARED = ("train/reward", "train/loss", "collapse/entropy", "tracker/value_mean", "val/accuracy")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_policy_path) -> Path:
    """The batch's mssr__s0 run of SIX, trained here uninterrupted (same machine: exactly the same numbers)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    done = mssr("train", *SIX, "logging.variant=mssr", "seed=0", "--run-dir", str(run), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def _like_the_reference(run: Path, reference: Path) -> None:
    """Every step once, each the uninterrupted run's, and resumed once from a checkpoint of step 2 or later."""
    resumes = json.loads((run / "meta.json").read_text())["resumes"]  # resumed, not started again
    assert len(resumes) == 1 and int(resumes[0]["checkpoint"].split("-")[1]) >= 2, resumes
    ours, theirs = _lines(run), _lines(reference)
    assert [m["step"] for m in ours] == list(range(7))  # each step once
    for a, b in zip(ours, theirs, strict=True):
        for key in COMPARED:
            assert a.get(key) == (None if b.get(key) is None else pytest.approx(b[key], rel=1e-5)), (a["step"], key)


def _submit_and_wait_for_step(out: Path, args: list[str], run: Path, reached) -> str:
    """Submit with --no-wait; return the job id of ``run`` once ``reached()`` holds (the job mid-way)."""
    submitted = mssr(*args, "--no-wait")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    deadline = time.time() + 600
    while not reached():
        assert time.time() < deadline and not (run / "summary.json").exists(), "the job never got mid-way"
        time.sleep(0.2)
    return _jobs(out)[run.name]["job_id"]


def test_a_cancelled_run_is_failed_and_resubmitted_as_a_resume_that_ends_like_an_uninterrupted_run(tmp_path, reference):
    six = SIX
    out = tmp_path / "abl"
    args = ["ablate", *SLURM, *six, "--variants", "no_shaping", "--out", str(out)]
    submitted = mssr(*args, "--no-wait")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert f"mssr status {out}" in submitted.stdout  # says how to watch
    recorded = (out / "jobs.json").read_text()
    twice = mssr(*args, "--no-wait")  # while both are queued or running: no second job for either
    assert twice.returncode == 0 and "Nothing to submit" in twice.stdout, twice.stdout + twice.stderr
    assert (out / "jobs.json").read_text() == recorded
    run = out / "mssr__s0"
    deadline = time.time() + 600
    while not (run / "checkpoints" / "checkpoint-2").is_dir():  # mid-way: two steps checkpointed
        assert time.time() < deadline and not (run / "summary.json").exists(), "the job never got mid-way"
        time.sleep(0.2)
    job = _jobs(out)["mssr__s0"]["job_id"]
    subprocess.run(["scancel", job], check=True)
    deadline = time.time() + 120
    while True:
        status = mssr("status", str(out))
        line = next(line for line in status.stdout.splitlines() if line.startswith("mssr__s0"))
        if line.split()[1] == "failed":
            break
        assert time.time() < deadline, status.stdout
        time.sleep(1)
    assert status.returncode == 1 and "cancelled" in line, status.stdout

    again = mssr(*args, timeout=900)  # resubmits the cancelled run, waits, compares
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _jobs(out)["mssr__s0"]["submissions"] == 2 and _jobs(out)["mssr__s0"]["job_id"] != job
    _like_the_reference(run, reference)
    assert mssr("status", str(out)).returncode == 0


def _steps(run: Path) -> int:
    try:
        return len(_lines(run)) - 1
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_a_job_requeued_mid_run_resumes_itself_and_trains_every_step_once(tmp_path, reference):
    """`scontrol requeue` after the first checkpoints: SLURM kills the job and starts it again under the same id; it
    resumes from its newest checkpoint. The batch's command, run meanwhile, leaves it to its job and waits."""
    out = tmp_path / "abl"
    args = ["ablate", *SLURM, *SIX, "--variants", "no_shaping", "--out", str(out)]
    run = out / "mssr__s0"
    job = _submit_and_wait_for_step(out, args, run, lambda: (run / "checkpoints" / "checkpoint-2").is_dir())
    subprocess.run(["scontrol", "requeue", job], check=True)
    again = mssr(*args, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    record = _jobs(out)["mssr__s0"]
    assert record["job_id"] == job and record["submissions"] == 1  # it came back by itself, not resubmitted
    _like_the_reference(run, reference)


def test_the_signal_before_the_time_limit_checkpoints_and_requeues_the_run(tmp_path, reference):
    """SLURM's pre-timeout signal (SIGUSR2, what --signal asks for; sent here at once with `scancel --signal`): the
    run saves a checkpoint at the end of its step and the job requeues itself. No checkpoint but that one exists
    (train.save_every=0), so the resume from step 2 or later proves it was saved on the signal."""
    out = tmp_path / "abl"
    args = ["ablate", *SLURM, *SIX, "train.save_every=0", "--variants", "no_shaping", "--out", str(out)]
    run = out / "mssr__s0"
    job = _submit_and_wait_for_step(out, args, run, lambda: _steps(run) >= 2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    again = mssr(*args, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    record = _jobs(out)["mssr__s0"]
    assert record["job_id"] == job and record["submissions"] == 1  # requeued itself
    _like_the_reference(run, reference)


def _wait_done(out: Path, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    while True:
        status = mssr("status", str(out))
        if status.returncode == 0:
            return status.stdout
        assert time.time() < deadline and "failed" not in status.stdout, status.stdout + status.stderr
        time.sleep(1)


def test_train_submits_one_run_returns_and_a_resume_extends_it_as_a_job(tmp_path, tiny_policy_path):
    runs = tmp_path / "runs"
    run = runs / "one"
    started = time.time()
    submitted = mssr("train", *SLURM, *SHORT, "--run-dir", str(run))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert time.time() - started < 60 and f"mssr status {runs}" in submitted.stdout  # returned at once
    assert list(_jobs(runs)) == ["one"]
    assert "one" in _wait_done(runs) and [m["step"] for m in _lines(run)] == [0, 1, 2]
    # moved on: the finished run, resumed as a SLURM job on another partition, trains two more steps
    more = mssr("train", "--resume", str(run), *SLURM, "executor.partition=other", "train.max_steps=4")
    assert more.returncode == 0, more.stderr[-3000:]
    assert _jobs(runs)["one"]["submissions"] == 2
    _wait_done(runs)
    assert [m["step"] for m in _lines(run)] == [0, 1, 2, 3, 4]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_a_run_over_two_machines_is_one_job_over_two_nodes_and_checkpoints_on_the_signal(tmp_path, one_process_run):
    """launcher.num_machines=2 on SLURM: one job over both nodes of the CI cluster, one task per node, each running
    its machine of the run (rank = SLURM_NODEID, rank 0's address = the first host), one process each (gloo).
    Mid-run, the signal before the time limit reaches node 0's task, which stops every process at the end of the
    same step with a checkpoint and requeues the job; the job resumes there. Its first 3 steps equal the same run on
    one process (distributed_runs.COMMON: same global batch, greedy sampling)."""
    runs = tmp_path / "runs"
    run = runs / "two"
    machines = ["launcher=ddp", "launcher.num_processes=1", "launcher.num_machines=2",
                f"launcher.main_process_port={free_port()}"]
    submitted = mssr("train", *COMMON, "train.max_steps=6", "train.save_every=0", *machines, *SLURM, "--run-dir", str(run))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job = _jobs(runs)["two"]["job_id"]
    deadline = time.time() + 600
    while _steps(run) < 2:
        assert time.time() < deadline and not (run / "summary.json").exists(), "the job never got mid-way"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _wait_done(runs)

    row = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "NNodes,NodeList", "-j", job], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    nodes, nodelist = row.split("|")
    first = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True).stdout.split()
    assert nodes == "2" and len(first) == 2, row
    assert _jobs(runs)["two"]["submissions"] == 1  # requeued itself
    resumes = json.loads((run / "meta.json").read_text()).get("resumes", [])
    assert len(resumes) == 1 and 2 <= int(resumes[0]["checkpoint"].split("-")[1]) < 6, resumes  # saved on the signal
    checkpoint = run / "checkpoints" / resumes[0]["checkpoint"]
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()  # both processes
    saved = (run / "config.yaml").read_text()  # written by machine 0
    assert "num_machines: 2" in saved and "machine_rank: 0" in saved and f"main_process_ip: {first[0]}" in saved

    ours, alone = _lines(run), _lines(one_process_run)
    assert [m["step"] for m in ours] == list(range(7))  # each step once
    for x, y in zip(alone, ours[:4], strict=True):
        for key in [k for k in (*DISTRIBUTED_COMPARED, "val/accuracy") if k in x]:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), (x["step"], key)


FAKE_WANDB = """import json, os, sys
# a stand-in for `python -m wandb`: what the agent job was asked to run, and in which environment
out = os.environ["MSSR_FAKE_WANDB_OUT"]
with open(os.path.join(out, f"agent_{os.environ.get('SLURM_ARRAY_TASK_ID', 'x')}.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in
               ("WANDB_API_KEY", "WANDB_ENTITY", "SLURM_JOB_PARTITION", "SLURM_ARRAY_TASK_COUNT")}}, f)
"""


def test_agents_submits_n_wandb_agent_jobs_with_the_submitting_environment(tmp_path):
    """No W&B server here: a fake `wandb` module records the command and environment each job got."""
    fake = tmp_path / "fake"
    (fake / "wandb").mkdir(parents=True)
    (fake / "wandb" / "__init__.py").write_text("")
    (fake / "wandb" / "__main__.py").write_text(FAKE_WANDB)
    seen = tmp_path / "seen"
    seen.mkdir()
    out = tmp_path / "agents"
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "MSSR_FAKE_WANDB_OUT": str(seen),
           "WANDB_API_KEY": "key-1234567890abcdef", "WANDB_ENTITY": "lab"}
    result = mssr("agents", "lab/mssr/sw3ep", *SLURM, "executor.partition=other", "--jobs", "2", "--count", "3",
                  "--out", str(out), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((out / "jobs.json").read_text())["jobs"]
    assert sorted(r["run"] for r in rows) == ["agent_0", "agent_1"] and {r["stage"] for r in rows} == {"agent"}
    deadline = time.time() + 300
    while len(list(seen.glob("agent_*.json"))) < 2:
        assert time.time() < deadline, mssr("status", str(out)).stdout
        time.sleep(0.5)
    for path in sorted(seen.glob("agent_*.json")):
        got = json.loads(path.read_text())
        assert got["argv"] == ["agent", "--count", "3", "lab/mssr/sw3ep"], got
        assert got["env"] == {"WANDB_API_KEY": "key-1234567890abcdef", "WANDB_ENTITY": "lab",
                              "SLURM_JOB_PARTITION": "other", "SLURM_ARRAY_TASK_COUNT": "2"}, got
    status = mssr("status", str(out))  # the agents' jobs, done once each agent stopped
    deadline = time.time() + 120
    while status.returncode != 0 and time.time() < deadline:
        time.sleep(1)
        status = mssr("status", str(out))
    assert status.returncode == 0 and status.stdout.count(" done ") == 2, status.stdout + status.stderr
    # the key reached the jobs through the environment, never through the batch folder
    assert not [p for p in out.rglob("*") if p.is_file() and b"key-1234567890abcdef" in p.read_bytes()]
