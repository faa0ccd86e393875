"""Compose the run config from conf/ with Hydra, check it against the schema, explain errors.

Every failure becomes a ``ConfigError`` whose one-line message names the key (or group) and
the valid choices, so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import math
import re

from mssr_cli.config.paths import conf_dir, group_options
# Names the trainer's registries accept, declared beside their keys in the schema (torch-free);
# re-exported here, where tests check they match the registries.
from mssr_cli.config.schema import ESTIMATOR_NAMES, LOSS_AGG_NAMES, SCHEDULE_NAMES  # noqa: F401

GROUPS = ("algo", "model", "data", "train", "reward", "logging", "launcher", "executor", "ablation", "experiment")


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
        raise ConfigError(_explain_type_error(full_key, msg)) from err
    check_ranges(cfg, ["algo.estimator"])  # recipes pick values by estimator: name a bad one before resolving
    try:
        OmegaConf.resolve(cfg)  # recipes pick per-algorithm values by interpolation; print them resolved
    except OmegaConfBaseException as err:
        raise ConfigError(f"{getattr(err, 'full_key', None) or '?'}: {str(err).strip().splitlines()[0]}") from err
    OmegaConf.set_readonly(cfg, False)
    validate(cfg)
    return cfg


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _bounds(rule) -> str:
    """A rule's bounds as text: ``> 0``, ``>= 1``, ``in (0, 1]``; "" when unbounded."""
    low = ("(", rule.gt) if rule.gt is not None else ("[", rule.ge) if rule.ge is not None else None
    high = (")", rule.lt) if rule.lt is not None else ("]", rule.le) if rule.le is not None else None
    if low and high:
        return f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {_number(low[1])}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {_number(high[1])}"
    return ""


def allowed(leaf, typed: bool = False) -> str:
    """What a key allows, as the end of "must be ...": ``positive (>= 1)``, ``in (0, 1]``, ``a finite
    number > 0``; ``typed`` names the type too (for a value that is not even of the key's type)."""
    rule = leaf.rule
    bounds = _bounds(rule) if rule else ""
    if leaf.kind is int:
        positive = rule is not None and rule.ge == 1 and rule.lt is None and rule.le is None
        text = ("a positive integer (>= 1)" if positive else f"an integer {bounds}") if typed else (
            "positive (>= 1)" if positive else bounds)
    elif leaf.kind is float:
        finite = rule is None or rule.finite
        text = f"{'a finite number' if finite else 'a number'} {bounds}" if typed else bounds
    elif leaf.kind is bool:
        text = "true or false"
    elif rule is not None and rule.choices is not None:
        text = f"one of {', '.join(rule.valid_choices())}"
    else:
        text = "a string" if typed else ""
    text = text.strip()
    return f"{text} or null" if leaf.nullable and text else text


def _explain_type_error(full_key: str, msg: str) -> str:
    """OmegaConf's "Value 'abc' of type 'str' could not be converted to Integer" as one line naming
    ``key=value`` and what the key allows."""
    from mssr_cli.config.schema import leaves

    leaf = leaves().get(full_key)
    bad = re.search(r"Value '(.*)' (?:of type '\w+' could not be converted|is not a valid bool)", msg) or re.search(
        r"Incompatible value '(None)' for field", msg)
    if leaf is None or not bad:
        return f"{full_key}: {msg}"
    value = "null" if bad.group(1) == "None" else bad.group(1)
    return f"{full_key}={value}: must be {allowed(leaf, typed=True)}"


def _violation(leaf, value) -> str | None:
    """Why ``value`` is outside what the key declares (one line naming key and value), else None."""
    rule, name = leaf.rule, leaf.dotted
    if value is None:
        return None if leaf.nullable else f"{name}=null: must be {allowed(leaf, typed=True) or 'set'}"
    if rule is None:
        return None
    valid = rule.valid_choices()
    if valid is not None:
        given = str(value).lower() if rule.ignore_case else value
        if given not in valid:
            return f"{name}={value}: not a valid choice; valid choices: {', '.join(map(str, valid))}"
        return None
    if leaf.kind not in (int, float) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # the schema's types are OmegaConf's business
    if leaf.kind is float and rule.finite and not math.isfinite(value):
        return f"{name}={value}: must be {allowed(leaf, typed=True)}"
    if math.isnan(value) or (
        rule.gt is not None and not value > rule.gt
        or rule.ge is not None and not value >= rule.ge
        or rule.lt is not None and not value < rule.lt
        or rule.le is not None and not value <= rule.le
    ):
        return f"{name}={value}: must be {allowed(leaf)}"
    return None


def check_ranges(cfg, keys: list[str] | None = None) -> None:
    """Check every value of the composed config (or only ``keys``) against the range, choices and
    nullability its schema field declares (``key(..., ge=1)``); the first violation is a ConfigError."""
    from mssr_cli.config.schema import leaves

    table = leaves()
    for dotted in keys if keys is not None else table:
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        problem = _violation(table[dotted], node)
        if problem:
            raise ConfigError(problem)


# estimators whose baseline comes from a prompt's other rollouts -> why they need G >= 2
GROUP_ESTIMATORS = {"grpo": "GRPO normalises within a group",
                    "rloo": "RLOO's baseline is the mean of a prompt's other rollouts"}


def validate(cfg) -> None:
    """Every key's declared range (``check_ranges``), then the checks that span several keys; run
    before anything heavy loads."""
    check_ranges(cfg)
    algo, train = cfg.algo, cfg.train
    g = algo.rollouts_per_prompt
    if algo.estimator in GROUP_ESTIMATORS and g < 2:
        raise ConfigError(
            f"algo.rollouts_per_prompt={g}: {GROUP_ESTIMATORS[algo.estimator]} and needs at least 2 rollouts per prompt"
        )
    tracker = algo.tracker
    if tracker.rho_min > tracker.rho_max:
        raise ConfigError(
            f"algo.tracker.rho_min={tracker.rho_min}, algo.tracker.rho_max={tracker.rho_max}: need rho_min <= rho_max"
        )
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
    if algo.dual_clip is not None and algo.dual_clip <= 1 + algo.clip_high:
        raise ConfigError(
            f"algo.dual_clip={algo.dual_clip} must exceed 1 + algo.clip_high = {1 + algo.clip_high:g} (or be null)"
        )
    model = cfg.model
    if model.min_pixels is not None and model.max_pixels is not None and model.min_pixels > model.max_pixels:
        raise ConfigError(f"model.min_pixels={model.min_pixels} exceeds model.max_pixels={model.max_pixels}")
    if model.lora.enabled and not model.lora.target_modules:
        raise ConfigError("model.lora.target_modules is empty: name the modules that get adapters (e.g. [q_proj, v_proj])")
    if model.name_or_path is None and model.preset != "tiny":
        raise ConfigError(f"model.name_or_path is null for preset '{model.preset}'; only 'tiny' is built locally")
    _validate_rewards(cfg.reward)
    _validate_launcher(cfg.launcher, micro, on_slurm=cfg.executor.name == "slurm")


def _validate_rewards(reward) -> None:
    """Import the reward functions and check their signatures now, before any data or model loads."""
    from mssr_cli.rewards.functions import RewardFunctionError, from_config

    try:
        from_config(reward)
    except RewardFunctionError as err:
        raise ConfigError(str(err)) from err


def _validate_launcher(launcher, micro: int, on_slurm: bool = False) -> None:
    """Several processes split each micro-batch evenly (the global batch stays the one configured);
    several machines need one rendezvous every machine can reach (on SLURM: the allocation's first node)."""
    from mssr_cli.config.paths import accelerate_config_path

    machines = launcher.num_machines
    if launcher.machine_rank >= machines:
        raise ConfigError(f"launcher.machine_rank={launcher.machine_rank} must be below launcher.num_machines={machines} "
                          f"(machine ranks run 0 .. {machines - 1})")
    if launcher.name == "none":
        if machines > 1:
            raise ConfigError(f"launcher.num_machines={machines} with launcher=none: several machines need a launcher "
                              "(launcher=ddp, zero2 or zero3)")
        return
    if not launcher.accelerate_config:
        raise ConfigError(f"launcher.accelerate_config is null for launcher '{launcher.name}': choose the option "
                          f"(launcher={launcher.name}) or give an accelerate config file")
    if not accelerate_config_path(launcher.accelerate_config).is_file():
        shipped = ", ".join(p.name for p in sorted((conf_dir() / "accelerate").glob("*.yaml")))
        raise ConfigError(f"launcher.accelerate_config={launcher.accelerate_config}: no such file; shipped: {shipped}, or give a path")
    if machines > 1:
        if not launcher.main_process_ip and not on_slurm:  # a SLURM job's nodes find their first host themselves
            raise ConfigError(f"launcher.num_machines={machines} needs launcher.main_process_ip: the address of machine "
                              "rank 0, reachable from every machine (or executor=slurm: the allocation's first node)")
        if launcher.main_process_port == 0:
            raise ConfigError(f"launcher.main_process_port=0 picks a free port on each machine separately: with "
                              f"launcher.num_machines={machines} give a fixed port (or null: 29500)")
        if launcher.num_processes is None:
            raise ConfigError(f"launcher.num_processes=null with launcher.num_machines={machines}: give the processes per "
                              "machine (one per GPU), the same on every machine")
    world = launcher.num_processes * machines if launcher.num_processes is not None else None  # accelerate's total
    if world is not None and micro % world:
        times = f" x launcher.num_machines={machines} = {world} processes" if machines > 1 else ""
        raise ConfigError(
            f"launcher.num_processes={launcher.num_processes}{times} must divide the micro-batch of {micro} rollouts "
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
