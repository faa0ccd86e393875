"""End to end: `mssr train` into a run folder, then resume from its checkpoint."""

from __future__ import annotations

import json

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.training.runner import run_training

REQUIRED_EVERY_STEP = ["train/reward", "train/accuracy", "train/format_rate", "collapse/entropy",
                       "collapse/entropy_ratio", "collapse/grad_norm", "collapse/kl_ref", "collapse/alarm",
                       "tracker/rho", "collapse/shaping_mean"]

SHORT = ["train.max_steps=3", "train.eval_every=2", "train.save_every=2", "train.rollouts_per_step=16",
         "data.val_limit=40", "logging.progress=false",
         "train.log_samples_every=2", "train.log_samples=3"]  # the default algorithm (mssr)


@pytest.mark.slow
def test_train_writes_the_run_folder(tmp_path, tiny_policy_path):
    run = tmp_path / "run"
    summary = run_training(compose(SHORT), SHORT, run)

    for name in ["config.yaml", "overrides.yaml", "meta.json", "metrics.jsonl", "summary.json"]:
        assert (run / name).is_file(), name
    meta = json.loads((run / "meta.json").read_text())
    assert meta["versions"]["trl"] and meta["versions"]["torch"] and meta["overrides"] == SHORT
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    for m in lines[1:]:
        for key in REQUIRED_EVERY_STEP:
            assert key in m, key
        assert 0.0 <= m["train/accuracy"] <= 1.0
        assert m["train/reward"] == pytest.approx(m["train/accuracy"])  # format is logged, not paid
    # samples.jsonl: what the policy wrote at every 2nd step, graded as the reward graded it
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.rewards import accuracy_reward

    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [2, 2, 2]
    answers = dict(zip(*(load_digits_split("train")[c] for c in ("id", "answer")), strict=True))
    for s in samples:
        assert set(s) == {"step", "id", "completion", "reward", "advantage", "entropy"}
        assert s["reward"] == accuracy_reward(s["completion"], answers[s["id"]])  # the completion that was graded
        assert s["entropy"] > 0 and isinstance(s["advantage"], float)
    # train/tokens: completion tokens so far, i.e. the running sum of mean length x rollouts per step
    generated = [m["train/response_length"] * 16 for m in lines[1:]]
    assert [m["train/tokens"] for m in lines[1:]] == pytest.approx([sum(generated[: i + 1]) for i in range(3)])
    assert [m["step"] for m in lines if "val/accuracy" in m] == [0, 2, 3]  # step 0, every 2, last
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["steps"] == 3 and summary["start_val_accuracy"] == lines[0]["val/accuracy"]
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-3"]
    for file in ["optimizer.pt", "scheduler.pt", "trainer_state.json", "model.safetensors"]:
        assert (run / "checkpoints" / "checkpoint-3" / file).exists(), file
    assert not list((run / "checkpoints").glob(".staging/checkpoint-*"))  # moved into place, not left behind
    assert list((run / "wandb").glob("offline-run-*")), "the W&B run is written offline beside the metrics"

    from transformers import AutoModelForImageTextToText, AutoProcessor

    AutoProcessor.from_pretrained(run / "model")
    trained = AutoModelForImageTextToText.from_pretrained(run / "model")
    start = AutoModelForImageTextToText.from_pretrained(tiny_policy_path)
    changed = [n for (n, p), (_, q) in zip(trained.named_parameters(), start.named_parameters()) if not p.equal(q)]
    assert len(changed) > 0.9 * len(list(start.parameters())), "RL must update (nearly) every trainable tensor"


@pytest.mark.slow
def test_rerun_resumes_from_the_last_checkpoint(tmp_path, tiny_policy_path):
    run = tmp_path / "run"
    first = [*SHORT, "train.max_steps=2", "logging.wandb=disabled"]
    run_training(compose(first), first, run)
    again = [*SHORT, "train.max_steps=4", "logging.wandb=disabled"]
    run_training(compose(again), again, run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4]  # steps 1-2 not replayed, 3-4 added
    state = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


@pytest.mark.slow
def test_cli_train_into_run_dir(tmp_path, tiny_policy_path):
    """The CLI path itself (`mssr train ... --run-dir D`), as a user types it."""
    import subprocess
    import sys

    run = tmp_path / "cli_run"
    args = [*SHORT, "train.max_steps=1", "train.save_every=0", "logging.wandb=disabled"]
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    out = subprocess.run([sys.executable, "-c", code, "train", *args, "--run-dir", str(run)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "summary.json").exists() and (run / "model" / "config.json").exists()
    assert "validation accuracy" in out.stdout
