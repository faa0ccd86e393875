"""A run folder survives what happens to it on a shared cluster: corrupt or missing checkpoint files, a
corrupt config.yaml, a torn metrics line, a full disk mid-checkpoint.

One real 4-step run (checkpoints 2 and 4) is made once; each case copies it, breaks one thing, and resumes
through the command line. Resuming must fall back to the newest checkpoint that verifies, say which one it
skipped and why, and end in exactly the metrics and value tracker of the unbroken run: nothing lost, no
tracker silently restarted. When nothing verifies: one line, exit 2.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import compose
from mssr_cli.runs import checkpoints as ckpt
from mssr_cli.runs.folder import RunFolder
from mssr_cli.training.runner import run_training

RUN = ["train.max_steps=4", "train.save_every=2", "train.eval_every=2", "train.rollouts_per_step=8",
       "data.train_limit=16", "data.val_limit=10", "train.num_threads=2", "logging.wandb=disabled",
       "logging.progress=false"]
TIMING = ("time/elapsed", "time/step_seconds")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_policy_path) -> Path:
    run = tmp_path_factory.mktemp("faults") / "base"
    run_training(compose(RUN), RUN, run)
    assert [c.name for c in ckpt.listed(run / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    return run


def _copy(base: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / "summary.json").unlink()  # as if it had stopped after its last checkpoint
    return run


def _cli(args: list[str]):
    return CliRunner().invoke(app, ["train", *args])


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines at the runner's width


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunFolder(run).read_metrics()]


def _tracker(run: Path, checkpoint: str = "checkpoint-4") -> dict:
    return json.loads((run / "checkpoints" / checkpoint / ckpt.STATE_FILE).read_text())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_text("{ this is not json" + "\x00" * 7)


CORRUPTIONS = {  # case: (what is done to checkpoint-4, the reason the skip message gives)
    "model truncated": (lambda c: _truncate(c / "model.safetensors"), "model.safetensors has"),
    "model missing": (lambda c: (c / "model.safetensors").unlink(), "model.safetensors is missing"),
    "optimizer truncated": (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt has"),
    "optimizer missing": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "mssr_state garbage": (lambda c: _garbage(c / ckpt.STATE_FILE), "mssr_state.json"),
    "mssr_state deleted": (lambda c: (c / ckpt.STATE_FILE).unlink(), "mssr_state.json is missing"),
    "trainer_state garbage": (lambda c: _garbage(c / "trainer_state.json"), "trainer_state.json"),
    "one flipped byte": (lambda c: _flip_byte(c / "model.safetensors"), "model.safetensors does not match its hash"),
    "manifest garbage": (lambda c: _garbage(c / ckpt.MANIFEST), "manifest.json is corrupt"),
}


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(case, base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    corrupt, reason = CORRUPTIONS[case]
    corrupt(run / "checkpoints" / "checkpoint-4")

    result = _cli(["--resume", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert f"skipped checkpoint-4: {reason}" in _text(result)
    assert "Resuming from" in result.output and "checkpoint-2 (RL step 2)" in _text(result)
    # steps 3 and 4 replayed from checkpoint-2: the same lines and tracker as the unbroken run
    assert _rows(run) == _rows(base_run)
    assert _tracker(run) == _tracker(base_run)
    assert ckpt.verify(run / "checkpoints" / "checkpoint-4") is None  # rewritten whole


@pytest.mark.slow
def test_the_same_command_again_also_falls_back(base_run, tmp_path):
    """Rerunning the original command (not --resume) into the folder takes the same path."""
    run = _copy(base_run, tmp_path)
    (run / "checkpoints" / "checkpoint-4" / ckpt.STATE_FILE).unlink()
    result = _cli([*RUN, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "skipped checkpoint-4: mssr_state.json is missing" in _text(result)
    assert _tracker(run) == _tracker(base_run)


@pytest.mark.slow
def test_a_corrupt_config_is_restored_from_the_checkpoint_copy(base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    original = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text("algo: [unclosed\n\x00garbage")
    result = _cli(["--resume", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "config.yaml is corrupt" in _text(result) and "using the copy in checkpoint-4" in _text(result)
    assert (run / "config.yaml").read_text() == original
    assert _rows(run) == _rows(base_run)


@pytest.mark.slow
def test_a_torn_metrics_line_is_restored_from_the_checkpoint_copy(base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # a torn line in the middle (e.g. a disk hiccup, a bad sync)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert [r["step"] for r in RunFolder(run).read_metrics()] == [0, 1, 3, 4]  # readers skip it
    result = _cli(["--resume", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert _rows(run) == _rows(base_run)  # step 2 came back


@pytest.mark.slow
def test_no_checkpoint_verifies_one_line_exit_2(base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    for name in ["checkpoint-2", "checkpoint-4"]:
        _truncate(run / "checkpoints" / name / "model.safetensors")
    before = (run / "metrics.jsonl").read_text()
    result = _cli(["--resume", str(run)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: no checkpoint in") and "verifies" in lines[0]
    assert "checkpoint-4: model.safetensors has" in lines[0] and "checkpoint-2: model.safetensors has" in lines[0]
    assert (run / "metrics.jsonl").read_text() == before  # nothing touched


@pytest.mark.slow
def test_disk_full_while_checkpointing(base_run, tmp_path, monkeypatch):
    """ENOSPC in the middle of writing checkpoint-4: the run stops with one line, checkpoint-2 stays whole,
    the partial save is gone, and --resume completes the run as if nothing happened."""
    import torch

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f) and str(f).endswith("optimizer.pt"):
            real_save(obj, f, *args, **kwargs)  # some bytes land first, as on a real full disk
            Path(f).write_bytes(Path(f).read_bytes()[:1000])
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk)
    result = _cli([*RUN, "--run-dir", str(run)])
    monkeypatch.setattr(torch, "save", real_save)
    assert result.exit_code == 2, result.output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-3000:]
    assert "writing checkpoint-4 failed, disk full" in lines[0]
    assert "the newest complete checkpoint is checkpoint-2" in lines[0] and f"--resume {run}" in lines[0]
    assert [c.name for c in ckpt.listed(run / "checkpoints")] == ["checkpoint-2"]
    assert ckpt.verify(run / "checkpoints" / "checkpoint-2") is None
    assert not list((run / "checkpoints" / ".staging").glob("checkpoint-*"))  # the partial save gave its space back
    assert not (run / "summary.json").exists() and not (run / ".lock").exists()

    result = _cli(["--resume", str(run)])
    assert result.exit_code == 0, result.output[-3000:]
    assert _rows(run) == _rows(base_run)
    assert _tracker(run) == _tracker(base_run)
