"""The embedded default really learns: GRPO lifts validation accuracy well above the warm start."""

from __future__ import annotations

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.training.runner import run_training


@pytest.mark.slow
def test_default_grpo_run_lifts_validation_accuracy(tmp_path, tiny_policy_path):
    overrides = ["seed=0", "logging.progress=false", "logging.wandb=disabled", "train.save_every=0"]
    summary = run_training(compose(overrides), overrides, tmp_path / "run")
    gain = summary["final_val_accuracy"] - summary["start_val_accuracy"]
    assert gain >= 0.15, f"validation accuracy {summary['start_val_accuracy']:.3f} -> {summary['final_val_accuracy']:.3f}"
