"""Config composition: every group option composes; bad overrides fail naming the key; CLI stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mssr_cli.config.compose import GROUPS, ConfigError, compose, steps_layout
from mssr_cli.config.paths import group_options


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    if group not in ("ablation", "experiment"):  # these are diffs at the top level, not a config node
        assert cfg[group] is not None
    if group == "model":
        assert cfg.model.preset == option


def test_defaults_are_the_embedded_default():
    cfg = compose([])
    assert (cfg.algo.name, cfg.model.preset, cfg.data.name) == ("mssr", "tiny", "digits")
    assert cfg.model.name_or_path is None


# algo -> (rollouts per prompt, estimator, max grad norm) on the embedded default
ALGO_BASICS = {"grpo": (8, "grpo", 1.0), "mvsr": (1, "single_rollout", 0.5), "mssr": (1, "single_rollout", 0.5),
               "rloo": (8, "rloo", 1.0), "reinforce_pp": (1, "reinforce_pp", 1.0)}


@pytest.mark.parametrize("algo", sorted(ALGO_BASICS))
def test_algorithms_use_equal_rollouts_and_the_paper_settings(algo):
    assert set(group_options("algo")) == set(ALGO_BASICS)
    cfg = compose([f"algo={algo}"])
    layout = steps_layout(cfg)
    g = cfg.algo.rollouts_per_prompt
    assert layout["prompts_per_step"] * g == cfg.train.rollouts_per_step == 128  # equal rollouts per step
    assert (cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.dual_clip, cfg.algo.kl_coef) == (0.2, 0.3, 3.0, 0.05)
    assert cfg.algo.loss_agg == "token_mean" and cfg.algo.entropy_coef == 0.0
    assert (g, cfg.algo.estimator, cfg.train.max_grad_norm) == ALGO_BASICS[algo]
    assert cfg.algo.gamma == 1.0
    if cfg.algo.estimator == "single_rollout":
        t = cfg.algo.tracker
        assert (t.rho_min, t.rho_max, t.target_kl, t.kl_window, t.schedule, t.warm_start_rollouts) == (
            0.875, 0.96, 0.01, 20, "paper", 1)
    shaping = cfg.algo.shaping
    assert shaping.enabled == (algo == "mssr")
    if algo == "mssr":
        assert (shaping.alpha, shaping.kappa, shaping.entropy) == (0.4, 2.0, "full")


ABLATION_EFFECT = {  # variant -> (dotted key, value it must set)
    "no_shaping": ("algo.shaping.enabled", False),
    "entropy_loss": ("algo.entropy_coef", 0.01),
    "cross_modal_kl": ("algo.cross_modal_kl_coef", 0.01),
    "no_clip_high": ("algo.clip_high", 0.2),
    "per_prompt_rho": ("algo.tracker.schedule", "per_prompt"),
    "mssr_no_clip_high": ("algo.clip_high", 0.2),
    "mssr_per_prompt_rho": ("algo.tracker.schedule", "per_prompt"),
    "sampled_entropy": ("algo.shaping.entropy", "sampled"),
    "monotone_schedule": ("algo.tracker.schedule", "monotone"),
    "grpo": ("algo.name", "grpo"),
    "rloo": ("algo.name", "rloo"),
    "reinforce_pp": ("algo.name", "reinforce_pp"),
    "reference_code": ("algo.tracker.kl_window", 10),
}


def test_every_ablation_variant_changes_what_it_says():
    from omegaconf import OmegaConf

    assert set(group_options("ablation")) == {*ABLATION_EFFECT, "none"}
    base = compose([])
    for variant, (dotted, value) in ABLATION_EFFECT.items():
        cfg = compose([f"ablation={variant}"])
        assert OmegaConf.select(cfg, dotted) == value != OmegaConf.select(base, dotted), variant
        assert cfg.train.rollouts_per_step == base.train.rollouts_per_step  # equal rollouts per step
    # the reference's ablations are MVSR-based (shaping off); the mssr_* versions keep the base's shaping
    shaped_off = {"entropy_loss", "cross_modal_kl", "no_shaping", "grpo", "no_clip_high", "per_prompt_rho", "rloo",
                  "reinforce_pp"}
    for variant in ABLATION_EFFECT:
        assert compose([f"ablation={variant}"]).algo.shaping.enabled == (variant not in shaped_off), variant


def test_registry_names_match_the_validation_lists():
    from mssr_cli.config.compose import ESTIMATOR_NAMES, SCHEDULE_NAMES
    from mssr_cli.algos.value_tracker import BetaValueTracker
    from mssr_cli.training.estimators import ESTIMATORS

    assert set(ESTIMATOR_NAMES) == set(ESTIMATORS)
    for name in SCHEDULE_NAMES:
        BetaValueTracker(schedule=name)  # accepted
    with pytest.raises(ValueError):
        BetaValueTracker(schedule="not_a_schedule")


def test_overrides_reach_the_config():
    cfg = compose(["train.max_steps=7", "seed=3", "train.eval_every=2", "algo.rollouts_per_prompt=4"])
    assert (cfg.train.max_steps, cfg.seed, cfg.train.eval_every, cfg.algo.rollouts_per_prompt) == (7, 3, 2, 4)


@pytest.mark.parametrize(
    "overrides,must_name",
    [
        (["model=no_such_model"], ["model", "tiny", "qwen25vl-7b"]),
        (["algo=nope"], ["algo", "grpo"]),
        (["train.no_such_key=1"], ["train.no_such_key", "max_steps"]),
        (["+train.no_such_key=1"], ["train.no_such_key", "max_steps"]),
        (["no_such_top=1"], ["no_such_top", "seed"]),
        (["train.max_steps=abc"], ["train.max_steps"]),
        (["algo=grpo", "algo.rollouts_per_prompt=1"], ["algo.rollouts_per_prompt"]),
        (["algo=rloo", "algo.rollouts_per_prompt=1"], ["algo.rollouts_per_prompt", "RLOO"]),
        (["algo=reinforce_pp", "algo.gamma=1.5"], ["algo.gamma"]),
        (["algo.shaping.kappa=0"], ["algo.shaping.kappa"]),
        (["algo.shaping.kappa=-1"], ["algo.shaping.kappa"]),
        (["algo.shaping.entropy=approx"], ["algo.shaping.entropy", "full", "sampled"]),
        (["algo.tracker.schedule=cosine"], ["algo.tracker.schedule", "paper", "monotone", "per_prompt"]),
        (["algo.tracker.rho_min=0.99"], ["algo.tracker.rho_min"]),
        (["algo.estimator=ppo"], ["algo.estimator", "grpo", "single_rollout", "rloo", "reinforce_pp"]),
        (["algo.tracker.no_such=1"], ["algo.tracker.no_such", "rho_min"]),
        (["algo=grpo", "train.rollouts_per_step=30"], ["train.rollouts_per_step", "algo.rollouts_per_prompt"]),
        (["train.minibatch_size=24"], ["train.minibatch_size"]),
        (["logging.wandb=sometimes"], ["logging.wandb", "offline"]),
        (["algo.loss_agg=median"], ["algo.loss_agg", "token_mean"]),
        (["train.lr=0"], ["train.lr"]),
    ],
)
def test_bad_overrides_name_the_key(overrides, must_name):
    with pytest.raises(ConfigError) as err:
        compose(overrides)
    message = str(err.value)
    assert "\n" not in message
    for word in must_name:
        assert word in message


def test_steps_layout_maps_rl_steps_to_updates():
    cfg = compose(["algo=grpo", "train.rollouts_per_step=64", "train.minibatch_size=16", "train.micro_batch_size=8"])
    assert steps_layout(cfg) == {"prompts_per_step": 8, "updates_per_step": 4, "micro_batch_size": 8, "grad_accum": 2}


def _mssr(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_cli_bad_preset_is_one_line_exit_2():
    out = _mssr("train", "model=no_such_model")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "model" in lines[0] and "tiny" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


def test_cli_unknown_key_is_one_line_exit_2():
    out = _mssr("train", "train.bogus=1")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "train.bogus" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_dry_run_prints_resolved_config_without_loading_torch():
    code = (
        "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', 'train', 'train.max_steps=9', '--dry-run'];\n"
        "try: app()\nexcept SystemExit: pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "max_steps: 9" in out.stdout
    assert "TORCH_NOT_LOADED" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_lists_groups_and_keys_without_torch(argv):
    code = (
        f"import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *{argv!r}];\n"
        "try: app()\nexcept SystemExit: pass\n"
        "print('HEAVY' if {'torch', 'transformers', 'trl'} & set(sys.modules) else 'LIGHT')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("LIGHT")
    for word in ["algo: grpo", "model:", "qwen25vl-7b", "tiny", "data: digit_sum, digits", "train.max_steps", "seed", "train.eval_every"]:
        assert word in out.stdout, word


def _leaves(cls, prefix=""):
    from dataclasses import fields, is_dataclass

    for f in fields(cls):
        if f.default_factory is not None and is_dataclass(f.default_factory):
            yield from _leaves(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


@pytest.mark.parametrize("algo", group_options("algo"))
def test_every_schema_key_can_be_overridden(algo):
    """Hydra only overrides keys the YAML has: every schema key must be in conf/ for every algorithm."""
    from omegaconf import OmegaConf

    from mssr_cli.config.schema import RootConfig

    cfg = compose([f"algo={algo}"])
    for dotted in _leaves(RootConfig):
        value = OmegaConf.select(cfg, dotted)
        if isinstance(value, (bool, int, float, str)) and not dotted.startswith(("data.", "model.")):
            compose([f"algo={algo}", f"{dotted}={str(value).lower() if isinstance(value, bool) else value}"])
