"""The GRPOConfig for a run config: every RL setting goes through TRL's own options."""

from __future__ import annotations

from mssr_cli.config.compose import steps_layout

# mssr loss aggregation -> TRL loss_type with that aggregation
# (formulas: README "Loss aggregation"; the parity test in tests/test_loss_parity.py checks them)
LOSS_AGG_TO_TRL = {
    "token_mean": "dapo",  # sum over all tokens of the optimizer step / number of those tokens
    "micro_token_mean": "bnpo",  # token mean within each micro-batch, averaged over micro-batches and GPUs (reference)
    "seq_mean_token_mean": "grpo",  # mean over sequences of each sequence's token mean
    "seq_mean_token_sum_norm": "dr_grpo",  # token sums / (batch x max length), Dr. GRPO
}


def use_bf16(flag: str) -> bool:
    import torch

    if str(flag).lower() == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return str(flag).lower() == "true"


def reward_weights(reward_cfg) -> list[float]:
    """One weight per ``reward.functions`` entry (null weights: 1.0 each, as TRL); the config check has already
    matched their counts (``compose._validate_rewards``), so nothing is imported again here."""
    if reward_cfg.weights is None:
        return [1.0] * len(reward_cfg.functions)
    return [float(w) for w in reward_cfg.weights]


IMAGE_TOKEN_BIAS = -100.0  # the reference's vLLM logit bias on the image placeholder (_get_logit_bias)


def rollout_generation_kwargs(train, model) -> dict | None:
    """GRPOConfig.generation_kwargs: what TRL adds to its vLLM SamplingParams. With ``train.block_image_token`` and
    vLLM, the reference's -100 logit bias on the image token; otherwise nothing (TRL's HF rollouts suppress that
    token themselves, and these kwargs would also reach its GenerationConfig, which has no logit_bias)."""
    if not (train.block_image_token and train.use_vllm):
        return None
    return {"logit_bias": {int(model.config.image_token_id): IMAGE_TOKEN_BIAS}}


def grpo_args(cfg, output_dir: str):
    import torch
    from trl import GRPOConfig

    from mssr_cli.training.distributed import world_size

    layout = steps_layout(cfg)
    train, algo = cfg.train, cfg.algo
    processes = world_size()
    if layout["micro_batch_size"] % processes:
        raise ValueError(f"{processes} processes must divide the micro-batch of {layout['micro_batch_size']} rollouts "
                         "(train.micro_batch_size, else the minibatch)")
    updates = layout["updates_per_step"]
    group = algo.rollouts_per_prompt
    args = GRPOConfig(
        output_dir=output_dir,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_steps=train.max_steps * updates,  # TRL counts optimizer updates
        # GRPOConfig.__post_init__ refuses num_generations < 2 because TRL's own advantage needs a
        # group; ours come from the estimator. Validate with a group of the whole generation batch
        # (it divides itself), then set the real G = 1 below (no re-validation on assignment).
        num_generations=group if group > 1 else train.rollouts_per_step,
        generation_batch_size=train.rollouts_per_step,
        # each process takes an equal share of a micro-batch: the global batch is the configured one
        per_device_train_batch_size=layout["micro_batch_size"] // processes,
        gradient_accumulation_steps=layout["grad_accum"],
        num_iterations=1,
        learning_rate=train.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        beta=algo.kl_coef,
        epsilon=algo.clip_low,
        epsilon_high=algo.clip_high,
        delta=algo.dual_clip,
        loss_type=LOSS_AGG_TO_TRL[algo.loss_agg],
        use_bias_correction_kl=algo.kl_bias_correction,  # false: plain k3, as the reference
        vllm_importance_sampling_correction=algo.vllm_is_correction,  # false: no vLLM/trainer reweighting
        # the sampled-token bonus is the seam's (RLTrainer._compute_loss); TRL adds only the full-entropy one
        entropy_coef=algo.entropy_coef if algo.entropy_bonus == "full" else 0.0,
        scale_rewards="group",
        # rollouts sample exactly as the reference: no top-k, min-p or repetition penalty (a checkpoint's
        # generation_config cannot add them either: RLTrainer generates with a neutral one)
        temperature=train.temperature,
        top_p=train.top_p,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        max_completion_length=train.max_completion_length,
        logging_steps=updates,  # one log (= one metrics line) per RL step
        save_strategy="steps" if train.save_every else "no",
        save_steps=max(1, train.save_every * updates),
        report_to="none",  # mssr logs to W&B itself, under its own metric names
        disable_tqdm=True,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        trust_remote_code=bool(cfg.model.trust_remote_code),  # TRL loads the reference model and vLLM with it
        bf16=use_bf16(train.bf16),
        fp16=False,
        use_vllm=train.use_vllm,
        vllm_mode=train.vllm_mode,
        vllm_gpu_memory_utilization=train.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=train.vllm_tensor_parallel_size,
        vllm_enable_sleep_mode=train.vllm_enable_sleep_mode,
        vllm_server_host=train.vllm_server_host,
        vllm_server_port=train.vllm_server_port,
        vllm_server_timeout=train.vllm_server_timeout,
        reward_weights=reward_weights(cfg.reward),  # the step's reward: the weighted sum over reward.functions
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        log_completions=False,
        remove_unused_columns=False,
    )
    if group == 1:
        args.num_generations = 1
        args.num_generations_eval = 1
    return args
