"""Loud failures when a TRL upgrade breaks an assumption the seam relies on."""

from __future__ import annotations

import inspect
import re
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_trl_is_the_pinned_version():
    pinned = re.search(r'"trl==([\w.]+)"', PYPROJECT.read_text()).group(1)
    assert metadata.version("trl") == pinned, (
        f"TRL {metadata.version('trl')} is installed but pyproject pins {pinned}: re-check the seam "
        "(mssr_cli/training/trainer.py, trl_args.py) before changing the pin"
    )


def test_grpo_config_has_the_options_we_map_to():
    from trl import GRPOConfig

    fields = set(inspect.signature(GRPOConfig).parameters)
    needed = {"num_generations", "generation_batch_size", "beta", "epsilon", "epsilon_high", "delta", "loss_type",
              "entropy_coef", "scale_rewards", "temperature", "top_p", "max_completion_length", "reward_weights",
              "use_vllm", "num_iterations"}
    missing = needed - fields
    assert not missing, f"GRPOConfig lost options the seam sets: {sorted(missing)}"


def test_trainer_internals_the_seam_overrides_still_exist():
    from transformers import Trainer
    from trl import GRPOTrainer

    for name in ["_save_checkpoint", "_generate_and_score_completions", "_compute_loss"]:
        assert hasattr(GRPOTrainer, name), f"GRPOTrainer.{name} is gone: the seam overrides it"
    # The atomic-checkpoint override redirects args.output_dir while the parent saves.
    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir" in source and "checkpoint_folder" in source, (
        "Trainer._save_checkpoint no longer derives its folder from args.output_dir: update RLTrainer._save_checkpoint"
    )


def test_loss_types_we_map_exist():
    from trl.trainer import grpo_trainer

    from mssr_cli.training.trl_args import LOSS_AGG_TO_TRL

    source = inspect.getsource(grpo_trainer.GRPOTrainer._compute_loss)
    for loss_type in LOSS_AGG_TO_TRL.values():
        assert f'"{loss_type}"' in source, f"TRL no longer has loss_type {loss_type!r}"
