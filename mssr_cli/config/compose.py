"""Compose the run config from conf/ with Hydra, check it against the schema, explain errors.

Every failure becomes a ``ConfigError`` whose one-line message names the key (or group) and
the valid choices, so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import re

from mssr_cli.config.paths import conf_dir, group_options

# Names the trainer's registries accept (kept here, torch-free, so validation stays instant;
# tests check they match mssr_cli.training.estimators and mssr_cli.algos.value_tracker).
ESTIMATOR_NAMES = ("grpo", "single_rollout")
SCHEDULE_NAMES = ("paper", "monotone", "per_prompt")
LOSS_AGG_NAMES = ("token_mean", "micro_token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")

GROUPS = ("algo", "model", "data", "train", "logging", "launcher", "ablation", "experiment")


class ConfigError(ValueError):
    """A bad override or config value; the message is meant for the user as is."""


def _valid_keys(node: str) -> list[str]:
    from dataclasses import fields, is_dataclass

    from mssr_cli.config.schema import RootConfig

    cls = RootConfig
    for part in [p for p in node.split(".") if p]:
        match = {f.name: f for f in fields(cls)}.get(part)
        if match is None or not is_dataclass(match.default_factory):
            return []
        cls = match.default_factory
    return [f.name for f in fields(cls)]


def _explain_hydra(err: Exception, overrides: list[str]) -> ConfigError:
    text = str(err)
    missing = re.search(r"Could not find '([\w\-]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return ConfigError(f"{group}={option}: unknown {group} option; valid choices: {', '.join(group_options(group))}")
    unknown = re.search(r"Could not (?:override|append to) '([^']+)'", text) or re.search(r"full_key: (\S+)", text)
    if unknown and ("not in struct" in text or "Could not override" in text):
        dotted = unknown.group(1).lstrip("+~")
        parent, _, leaf = dotted.rpartition(".")
        where = f"under '{parent}'" if parent else "at the top level"
        return ConfigError(f"unknown key '{dotted}'; valid keys {where}: {', '.join(sorted(_valid_keys(parent)))}")
    first_line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return ConfigError(f"bad override ({' '.join(overrides)}): {first_line}")


def _pick(key: str, mapping: dict):
    """``${pick:${algo.estimator},{grpo:1024,single_rollout:128}}``: a recipe's per-algorithm value."""
    if key not in mapping:
        raise ConfigError(f"no value for '{key}' in {dict(mapping)}; valid choices: {', '.join(map(str, mapping))}")
    return mapping[key]


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("pick"):
        OmegaConf.register_new_resolver("pick", _pick)


def compose(overrides: list[str]):
    """The resolved, schema-checked config (an OmegaConf DictConfig) for these Hydra overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mssr_cli.config.schema import RootConfig

    _register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            raw = hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as err:  # Hydra raises several unrelated types; all are user errors here
        raise _explain_hydra(err, overrides) from err
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RootConfig), raw)
    except OmegaConfBaseException as err:
        full_key = getattr(err, "full_key", None) or "?"
        if "Key '" in str(err) and "not in" in str(err):
            parent = full_key.rpartition(".")[0]
            raise ConfigError(
                f"unknown key '{full_key}'; valid keys under '{parent or 'config'}': {', '.join(sorted(_valid_keys(parent)))}"
            ) from err
        msg = str(err).strip().splitlines()[0]
        raise ConfigError(f"{full_key}: {msg}") from err
    if cfg.algo.estimator not in ESTIMATOR_NAMES:  # recipes pick values by estimator: name it before resolving
        raise ConfigError(f"algo.estimator={cfg.algo.estimator}: not a valid choice; valid choices: {', '.join(ESTIMATOR_NAMES)}")
    try:
        OmegaConf.resolve(cfg)  # recipes pick per-algorithm values by interpolation; print them resolved
    except OmegaConfBaseException as err:
        raise ConfigError(f"{getattr(err, 'full_key', None) or '?'}: {str(err).strip().splitlines()[0]}") from err
    OmegaConf.set_readonly(cfg, False)
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Semantic checks that types cannot express; run before anything heavy loads."""
    algo, train = cfg.algo, cfg.train
    choices = {
        "algo.name": (algo.name, group_options("algo")),
        "algo.estimator": (algo.estimator, list(ESTIMATOR_NAMES)),
        "algo.tracker.schedule": (algo.tracker.schedule, list(SCHEDULE_NAMES)),
        "algo.shaping.entropy": (algo.shaping.entropy, ["full", "sampled"]),
        "algo.loss_agg": (algo.loss_agg, list(LOSS_AGG_NAMES)),
        "algo.entropy_bonus": (algo.entropy_bonus, ["full", "sampled"]),
        "model.dtype": (cfg.model.dtype, ["auto", "float32", "bfloat16", "float16"]),
        "model.attn_implementation": (cfg.model.attn_implementation, ["auto", "flash_attention_2", "sdpa", "eager"]),
        "train.vllm_mode": (train.vllm_mode, ["colocate", "server"]),
        "data.name": (cfg.data.name, group_options("data")),
        "train.bf16": (str(train.bf16).lower(), ["auto", "true", "false"]),
        "logging.wandb": (cfg.logging.wandb, ["offline", "online", "disabled"]),
    }
    for name, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"{name}={value}: not a valid choice; valid choices: {', '.join(valid)}")
    g = algo.rollouts_per_prompt
    if algo.estimator == "grpo" and g < 2:
        raise ConfigError(
            f"algo.rollouts_per_prompt={g}: GRPO normalises within a group and needs at least 2 rollouts per prompt"
        )
    tracker, shaping = algo.tracker, algo.shaping
    if not 0 < tracker.rho_min <= tracker.rho_max < 1:
        raise ConfigError(
            f"algo.tracker.rho_min={tracker.rho_min}, algo.tracker.rho_max={tracker.rho_max}: "
            "need 0 < rho_min <= rho_max < 1"
        )
    if not 0 <= tracker.v_init <= 1:
        raise ConfigError(f"algo.tracker.v_init={tracker.v_init}: must be in [0, 1]")
    if shaping.kappa <= 0:
        raise ConfigError(f"algo.shaping.kappa={shaping.kappa}: must be > 0 (psi is capped at |A| / kappa)")
    if algo.cross_modal_kl_coef < 0 or algo.entropy_coef < 0:
        raise ConfigError("algo.cross_modal_kl_coef and algo.entropy_coef must be >= 0")
    if shaping.alpha < 0:
        raise ConfigError(f"algo.shaping.alpha={shaping.alpha}: must be >= 0")
    positive = {
        "algo.grpo_eps": algo.grpo_eps,
        "algo.tracker.target_kl": tracker.target_kl,
        "algo.tracker.kl_window": tracker.kl_window,
        "algo.tracker.d_half": tracker.d_half,
        "algo.tracker.warm_start_rollouts": tracker.warm_start_rollouts,
        "train.max_steps": train.max_steps,
        "train.rollouts_per_step": train.rollouts_per_step,
        "train.lr": train.lr,
        "train.max_completion_length": train.max_completion_length,
        "algo.rollouts_per_prompt": g,
        "model.lora.r": cfg.model.lora.r,
        "model.lora.alpha": cfg.model.lora.alpha,
        "train.vllm_gpu_memory_utilization": train.vllm_gpu_memory_utilization,
        "train.vllm_tensor_parallel_size": train.vllm_tensor_parallel_size,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name}={value}: must be positive")
    if train.rollouts_per_step % g:
        raise ConfigError(
            f"train.rollouts_per_step={train.rollouts_per_step} is not a multiple of algo.rollouts_per_prompt={g}"
        )
    minibatch = train.minibatch_size or train.rollouts_per_step
    if train.rollouts_per_step % minibatch:
        raise ConfigError(
            f"train.minibatch_size={minibatch} must divide train.rollouts_per_step={train.rollouts_per_step}"
        )
    micro = train.micro_batch_size or minibatch
    if minibatch % micro:
        raise ConfigError(f"train.micro_batch_size={micro} must divide the minibatch size {minibatch}")
    if not 0 <= algo.clip_low < 1 or algo.clip_high < 0:
        raise ConfigError(f"algo.clip_low={algo.clip_low} must be in [0, 1) and algo.clip_high >= 0")
    if algo.dual_clip is not None and algo.dual_clip <= 1 + algo.clip_high:
        raise ConfigError(f"algo.dual_clip={algo.dual_clip} must exceed 1 + algo.clip_high (or be null)")
    if not 0 <= train.val_temperature:
        raise ConfigError(f"train.val_temperature={train.val_temperature}: must be >= 0 (0 is greedy)")
    if train.vllm_gpu_memory_utilization > 1:
        raise ConfigError(f"train.vllm_gpu_memory_utilization={train.vllm_gpu_memory_utilization}: a fraction of GPU memory, in (0, 1]")
    if cfg.model.lora.enabled and not cfg.model.lora.target_modules:
        raise ConfigError("model.lora.target_modules is empty: name the modules that get adapters (e.g. [q_proj, v_proj])")
    if cfg.data.max_prompt_tokens is not None and cfg.data.max_prompt_tokens <= 0:
        raise ConfigError(f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}: must be positive (or null: keep every prompt)")
    if cfg.model.name_or_path is None and cfg.model.preset != "tiny":
        raise ConfigError(f"model.name_or_path is null for preset '{cfg.model.preset}'; only 'tiny' is built locally")
    _validate_launcher(cfg.launcher, micro)


def _validate_launcher(launcher, micro: int) -> None:
    """Several processes split each micro-batch evenly (the global batch stays the one configured)."""
    from mssr_cli.config.paths import accelerate_config_path

    if launcher.name not in group_options("launcher"):
        raise ConfigError(f"launcher.name={launcher.name}: not a valid choice; valid choices: {', '.join(group_options('launcher'))}")
    if launcher.num_processes is not None and launcher.num_processes < 1:
        raise ConfigError(f"launcher.num_processes={launcher.num_processes}: must be positive (or null: every GPU)")
    if launcher.name == "none":
        return
    if not launcher.accelerate_config:
        raise ConfigError(f"launcher.accelerate_config is null for launcher '{launcher.name}': choose the option "
                          f"(launcher={launcher.name}) or give an accelerate config file")
    if not accelerate_config_path(launcher.accelerate_config).is_file():
        shipped = ", ".join(p.name for p in sorted((conf_dir() / "accelerate").glob("*.yaml")))
        raise ConfigError(f"launcher.accelerate_config={launcher.accelerate_config}: no such file; shipped: {shipped}, or give a path")
    if launcher.num_processes is not None and micro % launcher.num_processes:
        raise ConfigError(
            f"launcher.num_processes={launcher.num_processes} must divide the micro-batch of {micro} rollouts "
            "(train.micro_batch_size, else the minibatch): each process takes an equal share"
        )


def steps_layout(cfg) -> dict[str, int]:
    """How an RL step maps onto TRL: prompts, optimizer updates and gradient accumulation."""
    train = cfg.train
    minibatch = train.minibatch_size or train.rollouts_per_step
    micro = train.micro_batch_size or minibatch
    return {
        "prompts_per_step": train.rollouts_per_step // cfg.algo.rollouts_per_prompt,
        "updates_per_step": train.rollouts_per_step // minibatch,
        "micro_batch_size": micro,
        "grad_accum": minibatch // micro,
    }
