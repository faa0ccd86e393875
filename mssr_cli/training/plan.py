"""What a run would do, worked out offline for ``mssr train --dry-run``.

Downloads, the step layout (rollouts, prompts, optimizer updates, accumulation per device), and
a rough GPU memory estimate per device for the chosen launcher. Nothing here touches the network,
torch or transformers: a dry run must work on a laptop for a 7B recipe.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mssr_cli.config.compose import steps_layout
from mssr_cli.models.facts import MODEL_FACTS
from mssr_cli.training.memory import estimate_memory

QWEN_DEFAULT_MAX_PIXELS = 1280 * 28 * 28  # the Qwen-VL image processor's own bound when model.max_pixels is null
PROMPT_TEXT_TOKENS = 256  # system + question text, a generous allowance for math problems
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}  # auto: bf16 on a GPU


ASSUMED_GPUS = 8  # launcher.num_processes=null means every GPU at launch time; plan for a typical node


def launcher_of(cfg) -> tuple[str, int]:
    """(launcher name, processes over ALL machines: the world size); ``none`` is one process, a null count is
    planned as a full node. ``launcher.num_processes`` counts one machine's processes."""
    name = str(cfg.launcher.name)
    if name == "none":
        return name, 1
    return name, int(cfg.launcher.num_processes or ASSUMED_GPUS) * int(cfg.launcher.num_machines)


def print_dry_run(cfg, overrides: list[str], run_dir, resume, console, launch: bool = True) -> None:
    """``mssr train --dry-run``: resolved config, plan, and the ``accelerate launch`` line if any (not with
    ``launch=False``: executor=slurm prints the job's batch script instead, whose command launches it)."""
    from omegaconf import OmegaConf

    console.print(OmegaConf.to_yaml(cfg), end="", markup=False, highlight=False)
    console.print("\n".join(describe_plan(cfg)), markup=False, highlight=False, soft_wrap=True)
    from mssr_cli.training.launch import LaunchError, launched, relaunch

    if not launch or cfg.launcher.name == "none" or launched():  # a launched process trains itself: nothing to launch
        return
    console.print("Launch (not run):", markup=False, highlight=False)
    try:
        relaunch(cfg, overrides, run_dir, True, console, ["--resume", str(resume)] if resume else None)
    except LaunchError as err:
        console.print(f"  cannot launch here: {err}", markup=False, highlight=False, soft_wrap=True)


def downloads(cfg) -> list[str]:
    """What the run would fetch from the Hugging Face Hub (nothing for local folders and the tiny model)."""
    items = []
    model = cfg.model.name_or_path
    if model is None:
        items.append("model: none (the tiny Qwen2-VL is built locally)")
    elif Path(model).exists():
        items.append(f"model: none (local folder {model})")
    else:
        facts = MODEL_FACTS.get(model)
        size = f", about {facts.params * 2 / 1e9:.1f} GB in bf16" if facts else ""
        items.append(f"model: {model} from the Hugging Face Hub{size}")
    if cfg.data.path:
        items.append(f"data: none (local {cfg.data.path})")
    elif cfg.data.hub_id:
        items.append(f"data: {cfg.data.hub_id} from the Hugging Face Hub")
    else:
        items.append(f"data: none (the built-in {cfg.data.name} task)")
    return items


def describe_plan(cfg) -> list[str]:
    """Lines of the plan for ``cfg`` (a composed config)."""
    train, algo = cfg.train, cfg.algo
    layout = steps_layout(cfg)
    launcher, processes = launcher_of(cfg)
    minibatch = train.minibatch_size or train.rollouts_per_step
    micro = max(layout["micro_batch_size"] // processes, 1)  # train.micro_batch_size is global: shared by the processes
    accumulation = layout["grad_accum"]
    lines = ["Plan"]
    lines += [f"  download {item}" for item in downloads(cfg)]
    lines += [
        f"  rollouts per step: {train.rollouts_per_step} = {layout['prompts_per_step']} prompts x "
        f"{algo.rollouts_per_prompt} rollout(s) per prompt",
        f"  optimizer updates per step: {layout['updates_per_step']} (mini-batch of {minibatch} rollouts)",
        f"  processes: {processes} ({launcher}"
        + (f", {cfg.launcher.num_machines} machines x {processes // cfg.launcher.num_machines}" if cfg.launcher.num_machines > 1 else "")
        + (", launcher.num_processes=null: every GPU at launch, planned as 8" if launcher != "none" and not cfg.launcher.num_processes else "")
        + f"); per device: micro-batch {micro} rollouts, "
        f"gradient accumulation {accumulation}",
        f"  total: {train.max_steps} steps, {train.max_steps * train.rollouts_per_step:,} rollouts, "
        f"{train.max_steps * layout['updates_per_step']} optimizer updates",
    ]
    lines.append(reward_line(cfg.reward))
    lines += fidelity_lines(cfg, layout)
    if train.use_vllm:
        installed = importlib.util.find_spec("vllm") is not None
        lines.append(
            f"  generation: vLLM {train.vllm_mode}"
            + (f", {train.vllm_gpu_memory_utilization:.0%} of each GPU" if train.vllm_mode == "colocate" else
               f", server at {train.vllm_server_host}:{train.vllm_server_port}")
            + ("" if installed else "; vLLM is NOT installed here: pip install 'mssr-cli[vllm]' (or train.use_vllm=false)")
        )
    else:
        lines.append("  generation: transformers generate (train.use_vllm=false)")
    lines += memory_lines(cfg, launcher, processes, micro)
    return lines


GRADER_PLAN = {  # reward.grader -> what it grades (validation and the tracker's warm start too)
    "math_verify": "the last \\boxed{} or <answer> tag, option letters, math-verify equivalence",
    "mathruler": "the reference's, the last \\boxed{} alone by mathruler's grade_answer",
}


def reward_line(reward) -> str:
    """The rollout's reward: each function at its weight, and what grades the accuracy one (reward.grader)."""
    weights = list(reward.weights) if reward.weights is not None else [1.0] * len(reward.functions)
    terms = " + ".join(f"{w:g} x {f}" for f, w in zip(reward.functions, weights, strict=False))
    return f"  reward: {terms}; reward.grader={reward.grader}: {GRADER_PLAN.get(reward.grader, '')}"


def fidelity_lines(cfg, layout: dict) -> list[str]:
    """The loss and the tracker's KL as they will run (README: Fidelity)."""
    algo = cfg.algo
    kl = "plain k3" if not algo.kl_bias_correction else "k3 x ratio (TRL)"
    lines = [f"  loss: PPO clip {algo.clip_low:g} / {algo.clip_high:g}, dual-clip {algo.dual_clip}, KL {algo.kl_coef:g} "
             f"({kl}), aggregation {algo.loss_agg}"
             + ("" if not cfg.train.use_vllm else f", vLLM importance correction {'on' if algo.vllm_is_correction else 'off'}")]
    if algo.estimator == "single_rollout":
        if algo.kl_coef == 0 and not algo.tracker.always_measure_kl:
            where = "not measured (algo.kl_coef=0, always_measure_kl=false): rho stays at its midpoint"
        elif algo.kl_coef == 0:
            where = "every rollout, from a reference pass kept for the tracker alone (algo.kl_coef=0)"
        elif layout["updates_per_step"] > 1:
            where = "every rollout, from TRL's generation-time log-probs (no extra pass)"
        else:
            where = "every rollout, from the loss's forward pass (no extra pass)"
        lines.append(f"  value tracker KL: {where}; window {algo.tracker.kl_window} steps")
    train = cfg.train
    if train.skip_nonfinite_updates:
        deepspeed = cfg.launcher.name in ("zero2", "zero3")
        lines.append("  non-finite gradient norm: " + ("NOT skipped under DeepSpeed (its engine steps inside backward); "
                                                      "the nonfinite alarm still fires" if deepspeed else
                                                      "the update is skipped (train/skipped_updates)"))
    if train.block_image_token:
        lines.append("  image token: never generated (" + ("vLLM logit bias -100" if train.use_vllm else
                                                          "suppressed") + ")")
    limit = cfg.data.max_prompt_tokens
    lines.append(f"  prompts: {'all kept' if limit is None else f'longer than {limit} tokens (images included) dropped'}")
    return lines


def memory_lines(cfg, launcher: str, processes: int, micro: int) -> list[str]:
    facts = MODEL_FACTS.get(cfg.model.name_or_path or "")
    if facts is None:
        if cfg.model.name_or_path is None:
            return ["  GPU memory per device: well under 1 GB (the tiny model)"]
        return [f"  GPU memory per device: no estimate for {cfg.model.name_or_path} (sizes known for: "
                f"{', '.join(MODEL_FACTS)})"]
    lora = cfg.model.lora
    if lora.enabled:
        trainable = facts.lora_params(lora.r, list(lora.target_modules))
    else:
        trainable = facts.params - (facts.vision_params if cfg.model.freeze_vision else 0)
    image_tokens = (cfg.model.max_pixels or QWEN_DEFAULT_MAX_PIXELS) // facts.image_patch_pixels
    prompt = PROMPT_TEXT_TOKENS + image_tokens
    if cfg.data.max_prompt_tokens is not None:  # longer prompts are dropped before training
        prompt = min(prompt, cfg.data.max_prompt_tokens)
    sequence = prompt + cfg.train.max_completion_length
    estimate = estimate_memory(
        params=facts.params,
        trainable=trainable,
        weight_bytes=DTYPE_BYTES.get(cfg.model.dtype, 2),
        launcher=launcher,
        processes=processes,
        reference_model=not lora.enabled and (cfg.algo.kl_coef > 0 or (  # the tracker keeps one for its KL
            cfg.algo.estimator == "single_rollout" and cfg.algo.tracker.always_measure_kl)),
        hidden=facts.hidden,
        layers=facts.layers,
        vocab=facts.vocab,
        micro_batch=micro,
        sequence=sequence,
        completion=cfg.train.max_completion_length,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    lines = [f"  GPU memory per device (rough; {launcher}, {processes} process(es), {trainable / 1e9:.2f}B trainable, "
             f"longest rollout {sequence:,} tokens):"]
    lines += [f"    {name:<12}{gb:8.1f} GB" for name, gb in estimate.rows()]
    if cfg.train.use_vllm and cfg.train.vllm_mode == "colocate":
        lines.append(f"    + vLLM's {cfg.train.vllm_gpu_memory_utilization:.0%} of the GPU (weights, KV cache)")
    return lines
