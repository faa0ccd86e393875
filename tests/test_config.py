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
    assert cfg[group] is not None
    if group == "model":
        assert cfg.model.preset == option


def test_defaults_are_the_embedded_default():
    cfg = compose([])
    assert (cfg.algo.name, cfg.model.preset, cfg.data.name) == ("grpo", "tiny", "digits")
    assert cfg.model.name_or_path is None


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
        (["algo.rollouts_per_prompt=1"], ["algo.rollouts_per_prompt"]),
        (["train.rollouts_per_step=30"], ["train.rollouts_per_step", "algo.rollouts_per_prompt"]),
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
    cfg = compose(["train.rollouts_per_step=64", "train.minibatch_size=16", "train.micro_batch_size=8"])
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
    for word in ["algo: grpo", "model:", "qwen25vl-7b", "tiny", "data: digits", "train.max_steps", "seed", "train.eval_every"]:
        assert word in out.stdout, word
