"""Every algo/train key that reaches TRL's GRPOConfig or the seam, checked field by field.

Two checks per field: the recipes' values land where the paper/reference says (constants written
here, not read back from the config), and a config with a distinct value in every key lands each
one in its own field (so two swapped keys, e.g. clip_low and clip_high, fail).
"""

from __future__ import annotations

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.training.trl_args import grpo_args

ALGOS = ("grpo", "mvsr", "mssr")
RECIPES = {"default": [], "paper_3b": ["experiment=paper_3b"], "paper_7b": ["experiment=paper_7b"]}


@pytest.fixture
def bf16_flags(monkeypatch):
    """bf16 cannot be switched on for a CPU-only TrainingArguments: record the flag instead."""
    seen = []

    def record(flag):
        seen.append(str(flag).lower())
        return False

    monkeypatch.setattr("mssr_cli.training.trl_args.use_bf16", record)
    return seen


def expected_fields(recipe: str, algo: str, processes: int) -> dict:
    """GRPOConfig fields the recipe must produce (ALGORITHMS.md and the reference code; tiny: conf/recipe/tiny.yaml)."""
    grpo = algo == "grpo"
    shared = {  # the paper's loss and sampling, at both scales
        "weight_decay": 0.01, "max_grad_norm": 1.0 if grpo else 0.5, "lr_scheduler_type": "constant",
        "epsilon": 0.2, "epsilon_high": 0.3, "delta": 3.0, "entropy_coef": 0.0, "temperature": 1.0, "top_p": 1.0,
        "top_k": 0, "min_p": None, "repetition_penalty": 1.0, "num_generations": 8 if grpo else 1,
        "num_iterations": 1, "seed": 0, "trust_remote_code": False,
    }
    if recipe == "default":
        return {**shared, "learning_rate": 5e-4, "beta": 0.05, "loss_type": "dapo", "use_bias_correction_kl": True,
                "vllm_importance_sampling_correction": True, "max_completion_length": 12, "generation_batch_size": 128,
                "per_device_train_batch_size": 128, "gradient_accumulation_steps": 1, "max_steps": 200,
                "save_steps": 50, "logging_steps": 1, "use_vllm": False, "gradient_checkpointing": False}
    updates = 2 if grpo else 16  # mini-batch 1024 (GRPO) / 128 (single rollout) of 2048 rollouts
    return {**shared, "top_p": 0.99 if grpo else 1.0,  # the reference: config.yaml (GRPO) / config_mssr.yaml
            "learning_rate": 1e-6, "beta": 0.01, "loss_type": "bnpo", "use_bias_correction_kl": False,
            "vllm_importance_sampling_correction": False, "max_completion_length": 4096, "generation_batch_size": 2048,
            "per_device_train_batch_size": 32 // processes, "gradient_accumulation_steps": (1024 if grpo else 128) // 32,
            "max_steps": 150 * updates, "save_steps": 5 * updates, "logging_steps": updates, "use_vllm": True,
            "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.6, "gradient_checkpointing": True}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_values_reach_grpo_config(recipe, algo, tmp_path, monkeypatch, bf16_flags):
    processes = 1 if recipe == "default" else 8  # the paper: 8 GPUs, 4 rollouts per GPU per micro-batch
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    cfg = compose([*RECIPES[recipe], f"algo={algo}"])
    args = grpo_args(cfg, str(tmp_path))
    wrong = {name: (getattr(args, name), want) for name, want in expected_fields(recipe, algo, processes).items()
             if getattr(args, name) != want}
    assert not wrong, f"{recipe}/{algo}: GRPOConfig field: (got, expected) {wrong}"
    assert bf16_flags == ["auto" if recipe == "default" else "true"]


DISTINCT = {  # override -> (GRPOConfig field, value it must hold); every value unique
    "algo.clip_low=0.11": ("epsilon", 0.11),
    "algo.clip_high=0.27": ("epsilon_high", 0.27),
    "algo.dual_clip=3.7": ("delta", 3.7),
    "algo.kl_coef=0.013": ("beta", 0.013),
    "algo.entropy_coef=0.021": ("entropy_coef", 0.021),
    "algo.kl_bias_correction=false": ("use_bias_correction_kl", False),
    "algo.vllm_is_correction=false": ("vllm_importance_sampling_correction", False),
    "train.temperature=0.93": ("temperature", 0.93),
    "train.top_p=0.87": ("top_p", 0.87),
    "train.max_completion_length=37": ("max_completion_length", 37),
    "train.lr=3.1e-5": ("learning_rate", 3.1e-5),
    "train.weight_decay=0.017": ("weight_decay", 0.017),
    "train.max_grad_norm=0.77": ("max_grad_norm", 0.77),
    "train.rollouts_per_step=48": ("generation_batch_size", 48),
    "train.minibatch_size=24": ("gradient_accumulation_steps", 24 // 6),
    "train.micro_batch_size=6": ("per_device_train_batch_size", 6),
    "train.max_steps=5": ("max_steps", 5 * 2),
    "train.save_every=3": ("save_steps", 3 * 2),
    "train.use_vllm=true": ("use_vllm", True),
    "train.vllm_mode=server": ("vllm_mode", "server"),
    "train.vllm_gpu_memory_utilization=0.41": ("vllm_gpu_memory_utilization", 0.41),
    "train.vllm_tensor_parallel_size=3": ("vllm_tensor_parallel_size", 3),
    "train.vllm_server_host=10.1.2.3": ("vllm_server_host", "10.1.2.3"),
    "train.vllm_server_port=8123": ("vllm_server_port", 8123),
    "train.vllm_server_timeout=123.0": ("vllm_server_timeout", 123.0),
    "model.gradient_checkpointing=true": ("gradient_checkpointing", True),
    "model.trust_remote_code=true": ("trust_remote_code", True),
    "seed=7": ("seed", 7),
}


@pytest.mark.parametrize("algo", ALGOS)
def test_each_key_lands_in_its_own_field(algo, tmp_path, bf16_flags):
    overrides = [f"algo={algo}", *DISTINCT, "algo.loss_agg=seq_mean_token_sum_norm", "train.bf16=false"]
    if algo == "grpo":
        overrides.append("algo.rollouts_per_prompt=6")
    args = grpo_args(compose(overrides), str(tmp_path))
    wrong = {o: (getattr(args, f), v) for o, (f, v) in DISTINCT.items() if getattr(args, f) != v}
    assert not wrong, f"override: (got, expected) {wrong}"
    assert args.loss_type == "dr_grpo" and args.data_seed == 7
    assert args.num_generations == (6 if algo == "grpo" else 1)
    assert bf16_flags == ["false"]


@pytest.mark.parametrize(("agg", "trl"), [("token_mean", "dapo"), ("micro_token_mean", "bnpo"),
                                          ("seq_mean_token_mean", "grpo"), ("seq_mean_token_sum_norm", "dr_grpo")])
def test_loss_aggregations_map_to_trl(agg, trl, tmp_path):
    assert grpo_args(compose([f"algo.loss_agg={agg}"]), str(tmp_path)).loss_type == trl


def test_the_sampled_entropy_bonus_is_the_seams_not_trls(tmp_path):
    full = grpo_args(compose(["algo.entropy_coef=0.03"]), str(tmp_path))
    sampled = grpo_args(compose(["algo.entropy_coef=0.03", "algo.entropy_bonus=sampled"]), str(tmp_path))
    assert (full.entropy_coef, sampled.entropy_coef) == (0.03, 0.0)


def test_every_estimator_key_reaches_the_estimator():
    from mssr_cli.training.estimators import build_estimator

    cfg = compose(["algo=mvsr", "algo.tracker.rho_min=0.81", "algo.tracker.rho_max=0.93", "algo.tracker.target_kl=0.023",
                   "algo.tracker.kl_window=7", "algo.tracker.v_init=0.37", "algo.tracker.schedule=per_prompt",
                   "algo.tracker.d_half=0.05", "algo.normalize=false", "algo.zero_signal_guard=true"])
    est = build_estimator(cfg.algo)
    t = est.tracker
    assert (t.rho_min, t.rho_max, t.target_kl, t.kl_window, t.v_init, t.schedule, t.d_half) == (
        0.81, 0.93, 0.023, 7, 0.37, "per_prompt", 0.05)
    assert (est.normalize, est.zero_signal_guard, est.needs_kl, est.needs_prompt_kl) == (False, True, True, True)
    grpo = build_estimator(compose(["algo=grpo", "algo.rollouts_per_prompt=4", "algo.grpo_eps=0.003"]).algo)
    assert (grpo.group_size, grpo.eps, grpo.needs_kl) == (4, 0.003, False)
    paper = build_estimator(compose(["experiment=paper_7b", "algo=grpo"]).algo)
    assert paper.eps == 1e-6  # the reference's epsilon


def test_grpo_eps_reaches_the_advantages():
    import torch

    from mssr_cli.algos.advantages import grpo_advantages
    from mssr_cli.training.estimators import build_estimator

    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for eps in (1e-4, 0.5):
        est = build_estimator(compose(["algo=grpo", "algo.rollouts_per_prompt=4", f"algo.grpo_eps={eps}"]).algo)
        adv, _ = est.advantages([0, 0, 0, 0], rewards)
        torch.testing.assert_close(adv, grpo_advantages(rewards, 4, eps=eps))
