"""One writer and one config per run folder: the lock file, refusals naming the holder or the differing
keys, stale locks taken over, a restart after a kill before the first checkpoint, and ablate/sweep never
reporting runs of other settings or running a variant another terminal is running."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.experiments.batch import PlannedRun, run_batch
from mssr_cli.runs import lock as run_lock
from mssr_cli.runs.folder import RunFolder, config_diff
from mssr_cli.runs.lock import LOCK_FILE, RunFolderBusy, acquire, busy_holder

SHORT = ["train.max_steps=2", "train.save_every=0", "train.eval_every=1", "train.rollouts_per_step=8",
         "data.train_limit=16", "data.val_limit=10", "train.num_threads=2", "logging.wandb=disabled",
         "logging.progress=false"]


@pytest.fixture
def live_process():
    """A live process of this host (not us), to hold locks."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _hold(folder: Path, pid: int, host: str | None = None, created: float | None = None) -> None:
    """Write a lock as the process ``pid`` would have."""
    folder.mkdir(parents=True, exist_ok=True)
    if created is None:
        created = run_lock._start_time(pid)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or platform.node(), "created": created,
                                                "since": "2026-11-30T12:00:00+0000"}))


def _cli(args: list[str]):
    return CliRunner().invoke(app, args)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-3000:]
    return lines[0]


# ---- the lock ---------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with acquire(tmp_path / "run") as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == platform.node()
        with pytest.raises(RunFolderBusy, match=f"in use by pid {os.getpid()} on host {platform.node()}"):
            acquire(tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released
    acquire(tmp_path / "run").release()  # free again


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold(tmp_path, dead.pid, created=time.time() - 100)
    warnings = []
    lock = acquire(tmp_path, warnings.append)
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert len(warnings) == 1 and f"pid {dead.pid}" in warnings[0] and "no longer running" in warnings[0]
    lock.release()


def test_a_reused_pid_is_stale_and_another_host_is_never(tmp_path, live_process):
    _hold(tmp_path / "a", live_process.pid, created=run_lock._start_time(live_process.pid) - 3600)
    assert busy_holder(tmp_path / "a") is None  # that pid now belongs to a process started an hour later
    _hold(tmp_path / "b", 1, host="some-other-node")
    assert busy_holder(tmp_path / "b")["host"] == "some-other-node"  # cannot be checked from here: kept
    with pytest.raises(RunFolderBusy, match="on host some-other-node"):
        acquire(tmp_path / "b")


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path, live_process):
    lock = acquire(tmp_path)
    _hold(tmp_path, live_process.pid)  # someone took it over (e.g. we were presumed dead)
    lock.release()
    assert busy_holder(tmp_path)["pid"] == live_process.pid


def test_train_and_resume_on_a_held_folder_exit_2_naming_the_holder(tmp_path, live_process):
    run = tmp_path / "run"
    RunFolder(run).write_start(compose(SHORT), SHORT)
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    _hold(run, live_process.pid)
    for args in (["train", *SHORT, "--run-dir", str(run)], ["train", "--resume", str(run)]):
        line = _one_error_line(_cli(args))
        assert f"in use by pid {live_process.pid} on host {platform.node()}" in line, line
    assert busy_holder(run)["pid"] == live_process.pid  # untouched


# ---- one config per folder --------------------------------------------------------------------------


def test_a_used_run_dir_refuses_other_settings_naming_the_keys(tmp_path):
    run = tmp_path / "run"
    RunFolder(run).write_start(compose(SHORT), SHORT)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = _one_error_line(_cli(["train", *SHORT, "algo=grpo", "train.lr=0.01", "--run-dir", str(run)]))
    assert "holds a run made with other settings" in line
    assert "algo.name=mssr there, grpo here" in line and "train.lr=0.0005 there, 0.01 here" in line, line
    assert f"--resume {run}" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing written
    assert not (run / LOCK_FILE).exists()


def test_config_diff_ignores_only_the_given_keys():
    a, b = compose(["train.max_steps=3"]), compose(["train.max_steps=5", "algo.kl_coef=0.1"])
    assert config_diff(a, b) == ["algo.kl_coef=0.05 there, 0.1 here", "train.max_steps=3 there, 5 here"]
    assert config_diff(a, b, ignore=("train.max_steps",)) == ["algo.kl_coef=0.05 there, 0.1 here"]


def test_run_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    line = _one_error_line(_cli(["train", *SHORT, "--run-dir", str(path)]))
    assert f"run folder {path} is a file, not a folder" in line
    assert path.read_text() == "x"


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_restarts_cleanly(tmp_path, tiny_policy_path):
    """The leftovers of an attempt killed before any checkpoint (lines 0-2, a staged save, a stale lock)
    make way for the same command: every step logged once."""
    run = tmp_path / "run"
    folder = RunFolder(run)
    folder.write_start(compose(SHORT), SHORT)
    for step in range(3):
        folder.append_metrics({"step": step, "train/reward": 123.0})
    (run / "checkpoints" / ".staging" / "checkpoint-2").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold(run, dead.pid)
    result = _cli(["train", *SHORT, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "took over a stale lock" in " ".join(result.output.split())
    rows = folder.read_metrics()
    assert [r["step"] for r in rows] == [0, 1, 2] and all(r.get("train/reward") != 123.0 for r in rows)
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_trains_on_one_folder_only_one_writes(tmp_path, tiny_policy_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "mssr_cli", "train", *SHORT, "train.max_steps=4", "--run-dir", str(run)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (run / LOCK_FILE).exists():
        assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert second.returncode == 2 and second.stderr.strip().count("\n") == 0, second.stderr
    assert f"in use by pid {first.pid} on host {platform.node()}" in second.stderr
    assert [r["step"] for r in RunFolder(run).read_metrics()] == [0, 1, 2, 3, 4]


# ---- ablate and sweep -------------------------------------------------------------------------------


def _fake_finished(folder: Path, overrides: list[str]) -> None:
    RunFolder(folder).write_start(compose(overrides), overrides)
    RunFolder(folder).append_metrics({"step": 0, "val/accuracy": 0.5})
    (folder / "summary.json").write_text("{}")


def test_ablate_refuses_an_out_folder_with_runs_of_other_settings(tmp_path):
    out = tmp_path / "abl"
    base = ["train.max_steps=2"]
    _fake_finished(out / "grpo__s0", [*base, "ablation=grpo", "seed=0", "logging.variant=grpo", "train.lr=0.01"])
    line = _one_error_line(_cli(["ablate", *base, "--variants", "grpo", "--out", str(out), "--dry-run"]))
    assert f"{out} holds runs made with other settings: grpo__s0 (train.lr=0.01 there, 0.0005 here)" in line, line
    # the same settings (and only how-it-runs keys differing) are the same runs: planned, not refused
    _fake_finished(out / "grpo__s0", [*base, "ablation=grpo", "seed=0", "logging.variant=grpo", "train.num_threads=1"])
    assert _cli(["ablate", *base, "--variants", "grpo", "--out", str(out), "--dry-run"]).exit_code == 0


def test_sweep_refuses_an_out_folder_with_runs_of_other_settings(tmp_path):
    from mssr_cli.experiments.sweep import expand, load_sweep, overrides_of

    sweep_file = Path(__file__).resolve().parents[1] / "sweeps" / "learning_rate.yaml"
    out = tmp_path / "sweep"
    plan = _cli(["sweep", str(sweep_file), "--local", "--max-runs", "1", "--out", str(out), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    first = overrides_of(expand(load_sweep(sweep_file), 1)[0])
    name = next(line.split("│")[1].strip() for line in plan.output.splitlines() if line.startswith("│ 000"))
    _fake_finished(out / name, [*first, "algo.kl_coef=0.5"])
    line = _one_error_line(_cli(["sweep", str(sweep_file), "--local", "--max-runs", "1", "--out", str(out), "--dry-run"]))
    assert "holds runs made with other settings" in line and "algo.kl_coef=0.5 there" in line, line


def test_a_batch_leaves_a_run_another_process_is_running(tmp_path, live_process):
    """`mssr ablate` in a second terminal: the run the first one is running is not started again."""
    from rich.console import Console

    out = tmp_path / "abl"
    runs = [PlannedRun("mssr__s0", ["train.max_steps=2"], 2), PlannedRun("grpo__s0", ["algo=grpo"], 2)]
    for run in runs:
        _hold(out / run.name, live_process.pid)
    console = Console(record=True, width=200)
    run_batch(runs, out, console)
    assert [r.status for r in runs] == ["busy", "busy"]
    assert f"running in another process (pid {live_process.pid}" in console.export_text()
    assert not (out / "mssr__s0" / "metrics.jsonl").exists()  # nothing was started


def test_check_existing_reads_a_corrupt_config_as_an_error_not_a_match(tmp_path):
    from mssr_cli.experiments.batch import check_existing

    out = tmp_path / "abl"
    _fake_finished(out / "mssr__s0", ["train.max_steps=2"])
    (out / "mssr__s0" / "config.yaml").write_text("::: not yaml [")
    with pytest.raises(ConfigError, match="config.yaml is corrupt"):
        check_existing([PlannedRun("mssr__s0", ["train.max_steps=2"], 2)], out)
