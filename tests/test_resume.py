"""Resumable runs: `mssr train --resume RUN_DIR` after a SIGKILL continues exactly where the checkpoint left off.

The slow test kills a real `python -m mssr_cli train` right after a checkpoint, resumes it and compares with
an uninterrupted run of the same seed. The fast ones check the refusals and the run-folder bookkeeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.runs.folder import RunFolder, resume_config, wandb_id

# 16 prompts, 8 per step: 2 RL steps per epoch, so the run crosses epochs and the kill lands mid-epoch.
# The default algorithm (mssr) with its tracker warm start; validation every 2 steps.
RUN = ["train.max_steps=6", "train.save_every=3", "train.eval_every=2", "train.rollouts_per_step=8",
       "data.train_limit=16", "data.val_limit=20", "train.num_threads=2", "logging.progress=false"]
KILL_AFTER = 3  # the checkpoint after which the first run is killed


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    # Each run gets its own W&B service, as separate invocations do: an earlier in-process test leaves
    # WANDB_SERVICE set, and a killed run's id would stay open in that shared service ("in use").
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mssr_cli", "train", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _steps(run: Path, key: str | None = None) -> list[int]:
    """Steps of metrics.jsonl's lines (of those with ``key``); safe to call while the run appends."""
    return [r["step"] for r in RunFolder(run).read_metrics() if key is None or key in r]


def _rows(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in RunFolder(run).read_metrics()}


def _kill_after_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 600) -> None:
    """SIGKILL the run (its whole process group: W&B's service too) once checkpoint-<step> is in place
    and the next step's metrics line is written, so the resume has a line to drop and a step to redo."""
    checkpoint = run / "checkpoints" / f"checkpoint-{step}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()[-3000:]}"
        if checkpoint.is_dir() and step + 1 in _steps(run):
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"no {checkpoint} within {timeout} s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_killed_run_resumes_like_an_uninterrupted_one(tmp_path, tiny_policy_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    _finish(_cli([*RUN, "logging.wandb=disabled", "--run-dir", str(reference)]))

    _kill_after_checkpoint(_cli([*RUN, "--run-dir", str(resumed)]), resumed, KILL_AFTER)
    assert RunFolder(resumed).latest_checkpoint().name == f"checkpoint-{KILL_AFTER}"
    assert max(_steps(resumed)) > KILL_AFTER  # a step past the checkpoint was logged, and must be dropped
    out = _finish(_cli(["--resume", str(resumed)]))
    assert f"checkpoint-{KILL_AFTER}" in out and "Tracker warm start" not in out  # the warm start ran once

    # metrics.jsonl: every step exactly once, validation at the same steps, the same values
    assert _steps(resumed) == _steps(reference) == list(range(7))
    assert _steps(resumed, "val/accuracy") == _steps(reference, "val/accuracy") == [0, 2, 4, 6]
    ours, theirs = _rows(resumed), _rows(reference)
    for step in range(1, 7):  # same data order, same rollouts, same tracker: the same numbers
        for key in ["train/reward", "tracker/value_mean", "tracker/rho", "collapse/entropy", "collapse/kl_ref",
                    "collapse/entropy_ratio", "val/accuracy"]:
            expected = theirs[step].get(key)
            expected = expected if expected is None else pytest.approx(expected, rel=1e-5, abs=1e-7)
            assert ours[step].get(key) == expected, (step, key)
    elapsed = [ours[step]["time/elapsed"] for step in range(7)]
    assert elapsed == sorted(elapsed)  # time/elapsed goes on after the resume, not from 0

    # the value tracker (and the rest of mssr_state.json) of the final checkpoint
    final = "checkpoints/checkpoint-6/mssr_state.json"
    state, expected = json.loads((resumed / final).read_text()), json.loads((reference / final).read_text())
    assert state["estimator"]["tracker"]["num_updates"] == 6
    _assert_close(state, expected)

    # the final weights
    a, b = _safetensors(resumed / "model" / "model.safetensors"), _safetensors(reference / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].float() - b[name].float()).abs().max().item() <= 1e-5, name

    # the same W&B run, twice: both offline runs carry the folder's id
    ids = sorted(p.name.rsplit("-", 1)[1] for p in (resumed / "wandb").glob("offline-run-*"))
    assert ids == [wandb_id(resumed.name)] * 2
    meta = json.loads((resumed / "meta.json").read_text())
    assert [r["checkpoint"] for r in meta["resumes"]] == [f"checkpoint-{KILL_AFTER}"]
    assert json.loads((resumed / "summary.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_ctrl_c_checkpoints_at_the_end_of_the_rl_step(tmp_path, tiny_policy_path):
    """SIGINT: the run finishes its RL step, checkpoints it (two optimizer updates per step here, so a
    mid-step checkpoint would show as an odd number) and exits; --resume completes it."""
    run = tmp_path / "run"
    args = [*RUN, "train.save_every=0", "train.minibatch_size=4", "logging.wandb=disabled"]
    proc = _cli([*args, "--run-dir", str(run)])
    deadline = time.time() + 600
    while max(_steps(run), default=0) < 1:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "continues from it" in " ".join(out.split()), out[-3000:]  # rich wraps lines
    checkpoint = RunFolder(run).latest_checkpoint()
    assert checkpoint is not None and int(checkpoint.name.rsplit("-", 1)[1]) % 2 == 0  # an RL-step boundary
    assert int(checkpoint.name.rsplit("-", 1)[1]) // 2 == max(_steps(run)) < 6  # the last line logged; stopped early
    assert not (run / "summary.json").exists()

    _finish(_cli(["--resume", str(run)]))
    assert _steps(run) == list(range(7))


def _assert_close(a, b, rel: float = 1e-6) -> None:
    """Nested JSON equality, floats within ``rel`` (the runs are bitwise equal on one machine; the
    tolerance only absorbs float noise, far below what a wrong batch, RNG state or weight would do)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (a.keys(), b)
        for k in a:
            _assert_close(a[k], b[k], rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _assert_close(x, y, rel)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-9)
    else:
        assert a == b


# ---- fast: refusals and bookkeeping ---------------------------------------------------------------


def _fake_run(path: Path, overrides: list[str], checkpoint: int | None = 3) -> Path:
    """A run folder as `mssr train` leaves it, with an (empty) checkpoint."""
    folder = RunFolder(path)
    folder.write_start(compose(overrides), overrides)
    if checkpoint is not None:
        ckpt = folder.checkpoints / f"checkpoint-{checkpoint}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    return path


def _train(args: list[str]):
    return CliRunner().invoke(app, ["train", *args])


def test_resume_refuses_a_missing_folder_or_one_without_checkpoint(tmp_path):
    result = _train(["--resume", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output
    assert len(result.output.strip().splitlines()) == 1

    bare = _fake_run(tmp_path / "bare", [], checkpoint=None)
    (bare / "checkpoints" / ".staging" / "checkpoint-2").mkdir(parents=True)  # a save that was cut off
    result = _train(["--resume", str(bare)])
    assert result.exit_code == 2 and "no checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_resume_refuses_overrides_that_change_the_run(tmp_path):
    run = _fake_run(tmp_path / "run", ["train.lr=0.001"])
    result = _train(["--resume", str(run), "train.lr=0.01"])
    assert result.exit_code == 2 and result.output.startswith("error: train.lr=0.01: cannot change")
    assert "the run has train.lr=0.001" in result.output
    with pytest.raises(ConfigError, match="^algo=grpo: cannot change"):
        resume_config(run, ["algo=grpo"])
    result = _train(["--resume", str(run), "--run-dir", str(run)])
    assert result.exit_code == 2 and "give one of them" in result.output


def test_resume_uses_the_saved_config_and_takes_harmless_overrides(tmp_path):
    run = _fake_run(tmp_path / "run", ["algo=mvsr", "train.lr=0.001", "train.max_steps=5"])
    cfg, overrides = resume_config(run, ["train.max_steps=8", "logging.wandb=disabled", "train.lr=0.001"])
    assert cfg.algo.name == "mvsr" and cfg.train.lr == 0.001  # from config.yaml, not today's defaults
    assert cfg.train.max_steps == 8 and cfg.logging.wandb == "disabled"
    assert overrides == ["algo=mvsr", "train.lr=0.001", "train.max_steps=8", "logging.wandb=disabled"]
    assert compose(overrides).train.max_steps == 8  # meta.json's overrides still compose the run's config
    with pytest.raises(ConfigError, match="train.max_steps"):
        resume_config(run, ["train.max_steps=0"])


def test_restore_metrics_drops_replayed_and_torn_lines(tmp_path):
    folder = RunFolder(tmp_path)
    for step in range(5):
        folder.append_metrics({"step": step, "time/elapsed": float(step)})
    with folder.metrics_path.open("a") as f:
        f.write('{"step": 5, "train/rew')  # killed mid-write
    kept = folder.restore_metrics(tmp_path / "checkpoints" / "checkpoint-3", 3)
    assert [m["step"] for m in kept] == [m["step"] for m in folder.read_metrics()] == [0, 1, 2, 3]


def test_a_finished_run_without_checkpoint_is_refused_not_wiped(tmp_path):
    run = _fake_run(tmp_path / "run", ["train.save_every=0"], checkpoint=None)
    RunFolder(run).append_metrics({"step": 0, "val/accuracy": 0.5})
    (run / "summary.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = CliRunner().invoke(app, ["train", "train.save_every=0", "--run-dir", str(run)])
    assert result.exit_code == 2 and "holds a finished run and no checkpoint" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_latest_checkpoint_ignores_unfinished_saves(tmp_path):
    folder = RunFolder(tmp_path)
    for name in ["checkpoint-2", "checkpoint-10", ".staging/checkpoint-12"]:
        (folder.checkpoints / name).mkdir(parents=True)
        (folder.checkpoints / name / "trainer_state.json").write_text("{}")
    assert folder.latest_checkpoint().name == "checkpoint-10"  # numeric order; the staged one is not in place


def test_wandb_id_is_fixed_by_the_folder_name():
    name = "mssr__digits__tiny__s0__20260101-120000"
    assert wandb_id(name) == wandb_id(name) == "mssr-digits-tiny-s0-20260101-120000"
    assert len(wandb_id("x" * 200)) == 64


def test_data_order_is_a_function_of_the_epoch():
    """A run resumed in epoch 2 sees epoch 2's order, the one TRL's RepeatSampler gives an uninterrupted
    run (TRL's own sampler would start over from epoch 0's)."""
    import inspect

    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    from mssr_cli.training.trainer import EpochRepeatSampler

    assert "RepeatSampler(" in inspect.getsource(GRPOTrainer._get_train_sampler)  # what RLTrainer replaces
    kwargs = dict(data_source=list(range(10)), mini_repeat_count=2, batch_size=5, repeat_count=2, seed=7)
    trl_sampler, uninterrupted = RepeatSampler(**kwargs), EpochRepeatSampler(**kwargs)
    trl_epochs = [list(trl_sampler) for _ in range(3)]
    assert trl_epochs[0] != trl_epochs[2]  # shuffled anew each epoch
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        assert list(uninterrupted) == trl_epochs[epoch]  # a fresh run keeps TRL's order
    resumed = EpochRepeatSampler(**kwargs)
    resumed.set_epoch(2)
    assert list(resumed) == trl_epochs[2]


def test_checkpoint_weights_load_back_into_the_policy(tmp_path, tiny_policy_path):
    """Checkpoints are written in the Hub's key layout (Qwen-VL: ``model.*``, not ``model.language_model.*``);
    RLTrainer maps them back, where transformers' Trainer would quietly load only ``lm_head``."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForImageTextToText

    from mssr_cli.training.trainer import RLTrainer

    policy = AutoModelForImageTextToText.from_pretrained(tiny_policy_path)
    trained = AutoModelForImageTextToText.from_pretrained(tiny_policy_path)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    trained.save_pretrained(tmp_path / "checkpoint-1")
    fake_trainer = SimpleNamespace(model=policy, is_deepspeed_enabled=False, is_fsdp_enabled=False)
    RLTrainer._load_from_checkpoint(fake_trainer, str(tmp_path / "checkpoint-1"))
    expected = dict(trained.named_parameters())
    for name, p in policy.named_parameters():
        assert torch.equal(p, expected[name]), name
