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


def test_the_internals_a_collapse_rollback_relies_on():
    """train.on_collapse=rollback (mssr_cli/training/runner.py): a fresh trainer resumes from an earlier checkpoint
    with another lr, beta and seed."""
    from transformers import Trainer
    from trl.trainer import grpo_trainer

    for name in ["_load_rng_state", "_load_optimizer_and_scheduler"]:
        assert hasattr(Trainer, name), f"Trainer.{name} is gone: RLTrainer overrides it to reseed / set the lowered lr"
    assert "get_last_lr" in inspect.getsource(Trainer._get_learning_rate), (
        "Trainer logs the lr from elsewhere than the scheduler's last lr: update trainer.set_learning_rate")
    T = grpo_trainer.GRPOTrainer
    assert "self.beta = args.beta" in inspect.getsource(T.__init__), "TRL's beta no longer comes from args.beta"
    assert "self.beta" in inspect.getsource(T._compute_loss), "TRL's loss no longer reads self.beta"


def test_loss_types_we_map_exist():
    from trl.trainer import grpo_trainer

    from mssr_cli.training.trl_args import LOSS_AGG_TO_TRL

    source = inspect.getsource(grpo_trainer.GRPOTrainer._compute_loss)
    for loss_type in LOSS_AGG_TO_TRL.values():
        assert f'"{loss_type}"' in source, f"TRL no longer has loss_type {loss_type!r}"


def test_the_internals_the_single_rollout_seam_relies_on():
    """Each assumption of mssr_cli/training/trainer.py, checked on TRL's source, with the fix named."""
    from trl.trainer import grpo_trainer

    T = grpo_trainer.GRPOTrainer
    loss_src = inspect.getsource(T._compute_loss)
    call = loss_src.find("self._get_per_token_logps_and_entropies(")
    read = loss_src.find('advantages = inputs["advantages"]')
    assert call != -1 and "compute_entropy=True" in loss_src[call : call + 400], (
        "GRPOTrainer._compute_loss no longer gets entropies from _get_per_token_logps_and_entropies("
        "compute_entropy=True): RLTrainer shapes advantages in that call; move the hook"
    )
    assert read > call, (
        "GRPOTrainer._compute_loss reads inputs['advantages'] before its forward pass: the shaped (B, T) "
        "advantages RLTrainer installs during that pass would be ignored"
    )
    assert "advantages.dim() == 1" in loss_src, "TRL's loss no longer accepts (B, T) advantages"
    assert 'inputs["ref_per_token_logps"]' in loss_src, "TRL's loss no longer takes ref log-probs from inputs"

    gen_src = inspect.getsource(T._generate_and_score_completions)
    assert "rewards_per_func = self._calculate_rewards(" in gen_src, (
        "_generate_and_score_completions no longer calls _calculate_rewards: RLTrainer takes the batch rewards there"
    )
    assert '"advantages": advantages' in gen_src, "TRL's batch dict no longer carries 'advantages'"
    assert "self.accelerator.process_index * len(prompts)" in gen_src, (
        "TRL changed how it slices the global batch per process: RLTrainer's slice must follow"
    )
    reward_src = inspect.getsource(T._calculate_rewards)
    assert "gather(rewards_per_func)" in reward_src, (
        "_calculate_rewards no longer gathers rewards over processes: the tracker would see only local rows"
    )
    prep_src = inspect.getsource(T._prepare_inputs)
    assert "shuffle_sequence_dict" in prep_src and "split_tensor_dict" in prep_src, (
        "TRL changed how a generation batch becomes micro-batches: check that 'mssr_row' still travels with rows"
    )
    sig = inspect.signature(T._get_per_token_logps_and_entropies)
    assert list(sig.parameters)[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    assert "compute_entropy" in sig.parameters


def test_grpo_config_still_refuses_one_generation():
    """RLTrainer's config sidesteps this check (trl_args.grpo_args); if TRL drops it, drop the workaround."""
    import pytest
    from trl import GRPOConfig

    with pytest.raises(ValueError, match="at least 2 generations per prompt"):
        GRPOConfig(output_dir="/tmp/unused", num_generations=1, generation_batch_size=8,
                   per_device_train_batch_size=8, report_to="none", bf16=False)


def test_single_rollout_config_gets_one_generation(tmp_path):
    from mssr_cli.config.compose import compose
    from mssr_cli.training.trl_args import grpo_args

    args = grpo_args(compose(["algo=mvsr", "train.rollouts_per_step=15"]), str(tmp_path))
    assert (args.num_generations, args.generation_batch_size) == (1, 15)
    args = grpo_args(compose(["algo=grpo"]), str(tmp_path))
    assert (args.num_generations, args.generation_batch_size) == (8, 128)


def test_per_token_advantages_travel_with_their_rows():
    """REINFORCE++'s (B, T) advantages go through TRL's shuffle and split into micro-batches as they are: each row
    must stay with its rollout (the seam's 'mssr_row') and keep its tokens."""
    import torch
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    rows = torch.arange(6)
    batch = {"mssr_row": rows, "advantages": rows[:, None] * 10.0 + torch.arange(4)}  # [6], [6, 4]
    for part in split_tensor_dict(shuffle_sequence_dict(batch), 3):
        assert part["advantages"].shape == (2, 4)
        torch.testing.assert_close(part["advantages"], part["mssr_row"][:, None] * 10.0 + torch.arange(4))
