"""Metric names and the per-step metrics line."""

from __future__ import annotations

import json

import pytest

from mssr_cli.training.callbacks import RunLogger
from mssr_cli.training.metrics import EntropyRatio, rename_trl_logs
from mssr_cli.runs.folder import RunFolder, summarize


def test_rename_keeps_documented_metrics_only():
    logs = {"reward": 0.5, "entropy": 1.2, "grad_norm": 0.3, "kl": 0.01, "rewards/accuracy/mean": 0.5,
            "rewards/format/mean": 1.0, "frac_reward_zero_std": 0.25, "clip_ratio/region_mean": 0.0,
            "num_tokens": 100, "epoch": 0.1, "completions/mean_length": 6.0,
            "tracker/rho": 0.9, "collapse/adv_max": 2.0, "grpo/zero_std_frac": 0.5, "collapse/note": "text"}
    out = rename_trl_logs(logs)
    # TRL's frac_reward_zero_std is dropped: with one rollout per prompt it reads 1.0 and means nothing;
    # the GRPO estimator logs grpo/zero_std_frac itself. The seam's own names pass through. The format
    # reward is train/reward/format; train/format_rate (a boxed answer at all) is the seam's own.
    assert out == {"train/reward": 0.5, "collapse/entropy": 1.2, "collapse/grad_norm": 0.3, "collapse/kl_ref": 0.01,
                   "train/accuracy": 0.5, "train/reward/accuracy": 0.5, "train/reward/format": 1.0,
                   "collapse/clip_frac": 0.0,
                   "train/response_length": 6.0, "tracker/rho": 0.9, "collapse/adv_max": 2.0,
                   "grpo/zero_std_frac": 0.5}


def test_entropy_ratio_uses_the_first_steps():
    ratio = EntropyRatio(baseline_steps=2)
    assert ratio(2.0) == 1.0
    assert ratio(1.0) == pytest.approx(1.0 / 1.5)  # baseline = mean(2, 1)
    assert ratio(0.3) == pytest.approx(0.2)  # baseline frozen after 2 steps


def test_logger_writes_one_line_per_step_with_staged_validation(tmp_path):
    folder = RunFolder(tmp_path)
    logger = RunLogger(folder, updates_per_step=2, rollouts_per_step=32)
    logger.write(0, {"val/accuracy": 0.2})
    assert logger.rl_step(4) == 2
    logger.stage({"val/accuracy": 0.4})
    logger.write(2, {"train/reward": 0.5, "collapse/entropy": 1.0, "collapse/grad_norm": float("nan")})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 2]
    assert lines[1]["val/accuracy"] == 0.4 and lines[1]["rollouts"] == 64
    assert lines[1]["collapse/entropy_ratio"] == 1.0
    assert lines[1]["collapse/grad_norm"] is None  # non-finite -> null: JSON stays valid


def test_summary_start_final_best():
    metrics = [{"step": 0, "val/accuracy": 0.2}, {"step": 1}, {"step": 2, "val/accuracy": 0.6},
               {"step": 3, "val/accuracy": 0.5}]
    s = summarize(metrics, 12.345, {"run": "x"})
    assert (s["start_val_accuracy"], s["final_val_accuracy"], s["best_val_accuracy"], s["best_step"]) == (0.2, 0.5, 0.6, 2)
    assert s["steps"] == 3 and s["wall_seconds"] == 12.35 and s["run"] == "x"


def test_restore_metrics_keeps_the_lines_up_to_the_checkpoint(tmp_path):
    folder = RunFolder(tmp_path)
    for step in range(5):
        folder.append_metrics({"step": step})
    folder.append_samples([{"step": 2, "id": 1}, {"step": 4, "id": 1}])
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # an old checkpoint: no run/ copy
    folder.restore_metrics(tmp_path / "checkpoints" / "checkpoint-2", 2)
    assert [m["step"] for m in folder.read_metrics()] == [0, 1, 2]
    assert [json.loads(line)["step"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()] == [2]


def test_samples_go_to_samples_jsonl_and_a_wandb_table_every_n_steps(tmp_path):
    from PIL import Image

    class FakeRun:  # records what would reach W&B
        def __init__(self):
            self.logged = []

        def log(self, data, step=None):
            self.logged.append((step, data))

    folder = RunFolder(tmp_path)
    run = FakeRun()
    logger = RunLogger(folder, updates_per_step=1, rollouts_per_step=8, wandb_run=run)
    kept = [{"id": 3, "completion": "\\boxed{3}", "reward": 1.0, "advantage": 0.5, "entropy": 0.7,
             "image": Image.new("RGB", (8, 8))},
            {"id": 5, "completion": "no", "reward": 0.0, "advantage": -0.5, "entropy": 0.2, "image": None}]
    logger.samples_every, logger.samples_source = 2, lambda: [dict(s) for s in kept]
    for step in (1, 2, 3, 4):
        logger.write_samples(step)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["id"]) for r in rows] == [(2, 3), (2, 5), (4, 3), (4, 5)]
    assert "image" not in rows[0] and rows[1]["completion"] == "no"
    assert [step for step, _ in run.logged] == [2, 4]
    table = run.logged[0][1]["samples"]
    assert table.columns == ["step", "id", "completion", "reward", "advantage", "entropy", "image"]
    assert [row[:6] for row in table.data] == [[2, 3, "\\boxed{3}", 1.0, 0.5, 0.7], [2, 5, "no", 0.0, -0.5, 0.2]]
    assert table.data[0][6] is not None and table.data[1][6] is None  # the image, where the row has one
