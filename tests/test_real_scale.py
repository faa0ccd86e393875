"""Real-scale presets and recipes, checked without a GPU or the Hub.

The presets' loading code runs on small local folders in the same schema as the Hub models
(a tiny Qwen2.5-VL saved with the real classes), the recipes are composed and every paper
value asserted, and the dry-run plan is worked out offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.config.paths import group_options

PYPROJECT = __import__("pathlib").Path(__file__).resolve().parents[1] / "pyproject.toml"

REAL_PRESETS = {
    "qwen2vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen25vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen25vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
}


@pytest.mark.parametrize("preset", sorted(REAL_PRESETS))
def test_model_presets_carry_the_paper_settings(preset):
    model = compose([f"model={preset}"]).model
    assert model.name_or_path == REAL_PRESETS[preset]
    assert model.dtype == "bfloat16"
    assert (model.min_pixels, model.max_pixels) == (262_144, 4_194_304)  # the paper's pixel range
    assert model.gradient_checkpointing is True
    assert model.freeze_vision is False  # the paper trains the vision tower
    assert model.attn_implementation == "auto"
    assert model.lora.enabled is False and model.warm_start.enabled is False
    assert compose([f"model={preset}", "model.lora.enabled=true", "model.freeze_vision=true"]).model.lora.enabled


def test_every_real_preset_has_size_facts_for_the_plan():
    from mssr_cli.models.facts import MODEL_FACTS

    assert set(REAL_PRESETS.values()) == set(MODEL_FACTS)


PAPER = {  # ALGORITHMS.md, per estimator: (rollouts per prompt, mini-batch, max grad norm)
    "grpo": (8, 1024, 1.0),
    "mvsr": (1, 128, 0.5),
    "mssr": (1, 128, 0.5),
}


@pytest.mark.parametrize("size", ["3b", "7b"])
@pytest.mark.parametrize("algo", sorted(PAPER))
def test_paper_recipes_reproduce_every_setting(size, algo):
    cfg = compose([f"experiment=paper_{size}", f"algo={algo}"])
    group, minibatch, grad_norm = PAPER[algo]
    train, a = cfg.train, cfg.algo
    assert cfg.model.name_or_path == f"Qwen/Qwen2.5-VL-{size.upper()}-Instruct"
    assert cfg.data.name == "vision_r1"
    assert train.rollouts_per_step == 2048
    assert a.rollouts_per_prompt == group and train.rollouts_per_step // group == (256 if algo == "grpo" else 2048)
    assert train.minibatch_size == minibatch and train.rollouts_per_step // minibatch == (2 if algo == "grpo" else 16)
    assert train.micro_batch_size == 32 and cfg.launcher.num_processes == 8  # 4 rollouts per GPU
    assert cfg.launcher.name == "zero3"
    assert train.lr == 1e-6 and train.weight_decay == 0.01 and train.max_grad_norm == grad_norm
    assert (a.clip_low, a.clip_high, a.dual_clip) == (0.2, 0.3, 3.0)
    assert a.kl_coef == 0.01 and a.entropy_coef == 0.0 and a.loss_agg == "micro_token_mean"
    assert a.kl_bias_correction is False and a.vllm_is_correction is False and a.grpo_eps == 1e-6
    assert cfg.data.max_prompt_tokens == 2048
    # top-p as the reference's config files: config.yaml (GRPO) 0.99, config_mssr.yaml 1.0
    assert (train.temperature, train.top_p, train.val_temperature) == (1.0, 0.99 if algo == "grpo" else 1.0, 0.6)
    assert train.max_completion_length == 4096 and train.val_max_new_tokens == 4096
    assert train.max_steps == 150 and train.eval_every == 5 and train.save_every == 5
    assert (cfg.model.min_pixels, cfg.model.max_pixels) == (262_144, 4_194_304)
    assert cfg.model.freeze_vision is False and cfg.model.gradient_checkpointing is True
    t = a.tracker
    assert (t.rho_min, t.rho_max, t.target_kl, t.kl_window, t.v_init) == (0.875, 0.96, 0.01, 20, 0.5)
    assert t.warm_start is (algo != "grpo") and t.warm_start_rollouts == 1  # GRPO has no tracker to warm
    assert a.shaping.enabled is (algo == "mssr") and (a.shaping.alpha, a.shaping.kappa) == (0.4, 2.0)
    assert train.use_vllm is True and train.vllm_mode == "colocate" and train.vllm_gpu_memory_utilization == 0.6


def test_ablations_apply_on_top_of_a_recipe():
    cfg = compose(["experiment=paper_7b", "ablation=no_clip_high"])
    assert cfg.algo.clip_high == 0.2  # the recipe restates 0.3; the ablation must still win
    grpo = compose(["experiment=paper_7b", "ablation=grpo"])
    assert grpo.algo.name == "grpo" and grpo.train.minibatch_size == 1024 and grpo.algo.rollouts_per_prompt == 8


def test_recipes_are_listed_but_their_shared_part_is_not():
    options = group_options("experiment")
    assert {"paper_3b", "paper_7b"} <= set(options) and "_paper" not in options


def test_dry_run_of_the_7b_recipe_prints_the_plan_offline():
    """The issue's command: resolved config, downloads, layout and memory, with no network or torch."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_PROXY": "*", "http_proxy": "http://0.0.0.0:9",
           "https_proxy": "http://0.0.0.0:9"}
    code = (
        "import sys\n"
        "from mssr_cli.cli import app\n"
        "try:\n"
        "    app(['train', 'experiment=paper_7b', '--dry-run'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'transformers' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "name_or_path: Qwen/Qwen2.5-VL-7B-Instruct" in text
    assert "download model: Qwen/Qwen2.5-VL-7B-Instruct" in text and "Osilly/Vision-R1-rl" in text
    assert "rollouts per step: 2048 = 2048 prompts x 1 rollout(s) per prompt" in text
    assert "optimizer updates per step: 16 (mini-batch of 128 rollouts)" in text
    assert "processes: 8 (zero3); per device: micro-batch 4 rollouts, gradient accumulation 4" in text
    assert "GPU memory per device" in text and "total" in text
    assert "accelerate launch --config_file" in text and "zero3.yaml --num_processes 8" in text
    # the reference code's side of every TRL behaviour it lacks
    for line in ["loss_agg: micro_token_mean", "kl_bias_correction: false", "vllm_is_correction: false",
                 "grpo_eps: 1.0e-06", "max_prompt_tokens: 2048", "kl_coef: 0.01", "lr: 1.0e-06",
                 "loss: PPO clip 0.2 / 0.3, dual-clip 3.0, KL 0.01 (plain k3), aggregation micro_token_mean, "
                 "vLLM importance correction off",
                 "value tracker KL: every rollout, from TRL's generation-time log-probs (no extra pass); window 20",
                 "prompts: longer than 2048 tokens (images included) dropped"]:
        assert line in text, line


def test_memory_estimate_terms_and_sharding():
    from mssr_cli.training.memory import GB, estimate_memory

    common = dict(params=8e9, trainable=8e9, weight_bytes=2, reference_model=True, hidden=4096, layers=32,
                  vocab=150_000, micro_batch=1, sequence=1000, completion=500, gradient_checkpointing=True)
    ddp = estimate_memory(launcher="ddp", processes=8, **common)
    assert ddp.weights == ddp.reference == ddp.gradients == 16 * GB
    assert ddp.optimizer == 32 * GB  # two bf16 AdamW moments
    assert ddp.activations == 32 * 1000 * 4096 * 2 + 20 * 1000 * 4096 * 2
    assert ddp.logits == 6 * 500 * 150_000
    z2 = estimate_memory(launcher="zero2", processes=8, **common)
    assert z2.weights == 16 * GB and z2.gradients == 2 * GB and z2.optimizer == 12 * 8e9 / 8
    z3 = estimate_memory(launcher="zero3", processes=8, **common)
    assert z3.weights == z3.reference == 2 * GB and z3.total < z2.total < ddp.total
    no_ckpt = estimate_memory(launcher="ddp", processes=8, **{**common, "gradient_checkpointing": False})
    assert no_ckpt.activations > ddp.activations
    with pytest.raises(ValueError, match="valid choices"):
        estimate_memory(launcher="fsdp", processes=8, **common)


def test_lora_shrinks_the_estimate_and_drops_the_reference_copy():
    from mssr_cli.training.plan import describe_plan

    base = ["model=qwen25vl-3b", "train.micro_batch_size=1"]
    full = "\n".join(describe_plan(compose(base)))
    lora = "\n".join(describe_plan(compose([*base, "model.lora.enabled=true"])))

    def total(text):
        return float(text.split("total")[-1].split("GB")[0])

    assert total(lora) < total(full) / 2
    assert re.search(r"reference\s+0\.0 GB", lora) and not re.search(r"reference\s+0\.0 GB", full)


def test_lora_params_match_peft_on_a_small_model(tmp_path):
    """The plan's LoRA count equals what PEFT really adds, on a model with the same module names."""
    from peft import get_peft_model

    from mssr_cli.models.facts import ModelFacts
    from mssr_cli.models.loading import lora_config

    model_dir = _tiny_qwen25vl(tmp_path)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    text = model.config.text_config
    cfg = compose(["model=qwen25vl-3b", f"model.name_or_path={model_dir}", "model.lora.enabled=true", "model.lora.r=4"])
    peft_model = get_peft_model(model, lora_config(cfg.model))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    facts = ModelFacts(0, 0, text.hidden_size, text.intermediate_size, text.num_hidden_layers,
                       text.num_attention_heads, text.num_key_value_heads, text.vocab_size)
    assert trainable == facts.lora_params(4, list(cfg.model.lora.target_modules))
    # Qwen2.5-VL's vision MLP also has gate/up/down_proj: adapters must stay out of it
    assert not [n for n, _ in peft_model.named_parameters() if "lora_" in n and "visual" in n]


def _tiny_qwen25vl(tmp_path):
    """A tiny Qwen2.5-VL (random weights) saved in the Hub checkpoint's schema, with its real processor."""
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from mssr_cli.models.chat_template import QWEN2VL_CHAT_TEMPLATE
    from mssr_cli.models.tiny import build_tokenizer

    folder = tmp_path / "Qwen2.5-VL-tiny-Instruct"
    if (folder / "config.json").exists():
        return folder
    tok = build_tokenizer()
    ids = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>")},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1]},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                        chat_template=QWEN2VL_CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def test_real_preset_loads_a_local_copy_with_its_settings(tmp_path):
    """The Hub path's code (AutoProcessor / AutoModelForImageTextToText) on a local folder in the same schema."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    from mssr_cli.models.loading import load_policy

    folder = _tiny_qwen25vl(tmp_path)
    cfg = compose(["model=qwen25vl-7b", f"model.name_or_path={folder}", "model.freeze_vision=true"])
    model, processor = load_policy(cfg.model, cfg.data)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration) and isinstance(processor, Qwen2_5_VLProcessor)
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"  # auto on a machine without flash-attn / a GPU
    image = processor.image_processor
    # transformers 5 keeps the pixel bounds in size (shortest_edge = min_pixels, longest_edge = max_pixels)
    assert (image.size["shortest_edge"], image.size["longest_edge"]) == (262_144, 4_194_304)
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert any(p.requires_grad for p in model.model.language_model.parameters())


def test_gradient_checkpointing_and_vllm_options_reach_trl(tmp_path):
    from mssr_cli.training.trl_args import grpo_args

    cfg = compose(["model=qwen2vl-2b", "train.use_vllm=true", "train.vllm_mode=server", "train.vllm_server_port=8123",
                   "train.vllm_gpu_memory_utilization=0.45", "train.bf16=false"])  # no bf16 on a CPU-only machine
    args = grpo_args(cfg, str(tmp_path))
    assert args.gradient_checkpointing is True
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_port == 8123
    assert args.vllm_gpu_memory_utilization == 0.45
    assert grpo_args(compose([]), str(tmp_path)).gradient_checkpointing is False  # tiny: it only slows


@pytest.mark.parametrize(("override", "names"), [
    ("model.attn_implementation=flash", "model.attn_implementation"),
    ("train.vllm_mode=remote", "train.vllm_mode"),
    ("model.lora.r=0", "model.lora.r"),
    ("train.val_temperature=-1", "train.val_temperature"),
])
def test_bad_real_scale_values_name_the_key(override, names):
    from mssr_cli.config.compose import ConfigError

    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        compose(["model=qwen2vl-2b", override])


@pytest.mark.slow
def test_lora_training_runs_through_trl_on_the_tiny_model(tmp_path):
    """LoRA through TRL's peft_config: only adapters train; the saved model is the adapter."""
    from mssr_cli.training.runner import run_training

    overrides = ["model.lora.enabled=true", "model.lora.r=8", "train.max_steps=2", "train.rollouts_per_step=8",
                 "train.eval_every=0", "train.save_every=0", "data.train_limit=16", "logging.wandb=disabled",
                 "logging.progress=false"]
    summary = run_training(compose(overrides), overrides, tmp_path / "run")
    assert summary["steps"] == 2
    assert (tmp_path / "run" / "model" / "adapter_config.json").exists()
    # `mssr eval --model RUN` takes the adapter folder; transformers loads it over its base model
    from mssr_cli.evaluation.runner import resolve_model
    from mssr_cli.models.loading import load_policy

    target = resolve_model(str(tmp_path / "run"))
    model, _ = load_policy(target.model_cfg, None)
    assert model.peft_config  # the trained adapter is on


@pytest.mark.parametrize("preset", sorted(REAL_PRESETS))
def test_a_real_preset_alone_brings_the_papers_recipe(preset):
    """`mssr train model=<preset>`: the paper's data and settings on one machine, not the tiny model's."""
    cfg = compose([f"model={preset}"])
    train, algo, data = cfg.train, cfg.algo, cfg.data
    assert (train.lr, train.max_completion_length, algo.kl_coef) == (1e-6, 4096, 0.01)
    assert (data.name, data.hub_id, data.val_split, data.max_prompt_tokens) == ("vision_r1", "Osilly/Vision-R1-rl", "test", 2048)
    assert (train.rollouts_per_step, train.minibatch_size, train.micro_batch_size, train.max_steps) == (2048, 128, 32, 150)
    assert (train.temperature, train.top_p, train.val_temperature, train.val_max_new_tokens) == (1.0, 1.0, 0.6, 4096)
    assert (algo.loss_agg, algo.kl_bias_correction, algo.vllm_is_correction) == ("micro_token_mean", False, False)
    assert (cfg.launcher.name, cfg.launcher.num_processes) == ("zero3", None)  # every GPU of this one machine
    assert train.use_vllm is True and train.max_grad_norm == 0.5
    grpo = compose([f"model={preset}", "algo=grpo"])
    assert (grpo.algo.rollouts_per_prompt, grpo.train.minibatch_size, grpo.train.max_grad_norm) == (8, 1024, 1.0)


def test_the_tiny_model_keeps_its_own_scale():
    cfg = compose(["model=tiny"])
    assert (cfg.train.lr, cfg.train.max_completion_length, cfg.algo.kl_coef, cfg.data.name) == (5e-4, 12, 0.05, "digits")
    assert (cfg.train.rollouts_per_step, cfg.launcher.name, cfg.data.max_prompt_tokens) == (128, "none", None)


def test_explicit_overrides_win_over_the_recipe_a_preset_brings():
    cfg = compose(["model=qwen2vl-7b", "train.lr=2e-6", "data=geometry3k", "algo.kl_coef=0.02", "launcher=ddp",
                   "algo.loss_agg=token_mean", "data.max_prompt_tokens=null", "train.max_completion_length=1024"])
    assert (cfg.train.lr, cfg.data.name, cfg.algo.kl_coef, cfg.launcher.name) == (2e-6, "geometry3k", 0.02, "ddp")
    assert (cfg.algo.loss_agg, cfg.data.max_prompt_tokens, cfg.train.max_completion_length) == ("token_mean", None, 1024)
    assert cfg.train.rollouts_per_step == 2048  # what was not overridden stays the paper's


def test_readmes_first_real_scale_example_is_a_preset_alone():
    readme = (PYPROJECT.parent / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.strip().startswith("mssr ")]
    real = [c for c in commands if re.search(r"model=qwen|experiment=paper", c)]
    assert real and real[0].split("#")[0].strip() == "mssr train model=qwen2vl-7b"


def _fidelity_overrides() -> list[str]:
    """The `key=value` overrides in the last column of the README's "What still differs" table."""
    readme = (PYPROJECT.parent / "README.md").read_text()
    section = readme.split("**What still differs from the reference code**", 1)[1].split("\n\n`tests/", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| difference")]
    return [o for row in rows for o in re.findall(r"`([\w.]+=[^`]+)`", row.rstrip(" |").rsplit("|", 1)[1])]


def test_reference_code_switch_applies_every_fidelity_row():
    from omegaconf import OmegaConf

    overrides = _fidelity_overrides()
    assert len(overrides) >= 2  # the shaping entropy and the KL window (the ablation terms are the recipe's now)
    base = compose(["experiment=paper_7b"])
    switched = compose(["experiment=paper_7b", "ablation=reference_code"])
    by_hand = compose(["experiment=paper_7b", *overrides])
    for override in overrides:
        key, value = override.split("=", 1)
        assert str(OmegaConf.select(switched, key)).lower() == value.lower(), override
        assert OmegaConf.select(base, key) != OmegaConf.select(switched, key), f"{override} is already the default"
    # the switch changes nothing beyond the table (the recipe already holds its other, restated keys)
    assert OmegaConf.to_container(switched) == OmegaConf.to_container(by_hand)


def test_plan_bounds_prompts_and_keeps_the_trackers_reference():
    from mssr_cli.training.plan import describe_plan

    def plan(*overrides):
        return "\n".join(describe_plan(compose(["model=qwen25vl-7b", *overrides])))

    assert "longest rollout 6,144 tokens" in plan()  # 2048-token prompts + 4096-token completions
    assert "longest rollout 9,701 tokens" in plan("data.max_prompt_tokens=null")
    assert not re.search(r"reference\s+0\.0 GB", plan("algo.kl_coef=0"))  # the tracker's KL needs it
    assert "from a reference pass kept for the tracker alone" in plan("algo.kl_coef=0")
    no_ref = plan("algo.kl_coef=0", "algo.tracker.always_measure_kl=false")
    assert re.search(r"reference\s+0\.0 GB", no_ref) and "rho stays at its midpoint" in no_ref
    assert "from the loss's forward pass" in plan("train.minibatch_size=null")
