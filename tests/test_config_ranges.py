"""Every config key's allowed values are declared beside it in the schema and enforced in one place.

The keys come from walking the schema's dataclasses (a new key is covered without editing this
file); the expected outcome of each probe comes from the range the key declares. Every probe goes
through the command line in-process: ``mssr train KEY=VALUE --dry-run``.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields, is_dataclass

import pytest
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import GROUPS, ConfigError, check_ranges, compose
from mssr_cli.config.paths import group_options
from mssr_cli.config.schema import RootConfig

RUNNER = CliRunner()
PROBES = ("0", "-1", "nan", "inf", "abc")


def _schema_keys(cls=RootConfig, prefix=""):
    """(dotted key, type, nullable, declared rule) of every leaf of the schema, walked here on purpose
    (not through the code under test)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            yield from _schema_keys(hint, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        kind = next((a for a in args if a is not type(None)), hint) if args else hint
        yield f"{prefix}{f.name}", typing.get_origin(kind) or kind, type(None) in args, f.metadata.get("range")


KEYS = list(_schema_keys())
NUMERIC = [(k, kind, rule) for k, kind, _, rule in KEYS if kind in (int, float)]
CHOICES = [(k, rule) for k, kind, _, rule in KEYS if rule is not None and rule.choices is not None]

# Strings with a fixed set of values (written by hand: moving a list out of the schema must fail here).
EXPECTED_CHOICE_KEYS = {
    "algo.name", "algo.estimator", "algo.tracker.schedule", "algo.shaping.entropy", "algo.loss_agg",
    "algo.entropy_bonus", "model.preset", "model.dtype", "model.attn_implementation", "data.name",
    "train.bf16", "train.vllm_mode", "train.on_collapse", "logging.wandb", "launcher.name",
    "executor.name", "reward.grader",
}

# The issue's cases, by hand: (override, accepted?)
ISSUE_CASES = [
    ("train.keep_checkpoints=0", False),  # rotation would delete every checkpoint
    ("train.eval_every=-1", False),
    ("train.save_every=-2", False),
    ("train.val_batch_size=0", False),
    ("train.top_p=0", False),
    ("train.temperature=0", False),
    ("train.lr=nan", False),
    ("train.lr=inf", False),
    ("train.minibatch_size=0", False),  # was read as null: one update per step
    ("train.max_steps=abc", False),
    ("train.lr=fast", False),
    ("train.eval_every=0", True),  # disables validation
    ("train.save_every=0", True),  # disables checkpoints
    ("algo.kl_coef=0", True),  # drops the reference model
    ("train.val_temperature=0", True),  # greedy
    ("seed=0", True),
    ("train.weight_decay=0", True),
    ("launcher.main_process_port=0", True),  # a free port
    ("train.top_p=1", True),
]


def _in_range(kind, rule, text: str) -> bool:
    """Whether the probe ``text`` is a value the key declares valid (the test's own reading of the rule)."""
    try:
        value = float(text)
    except ValueError:
        return False  # not a number at all
    if kind is int and not (math.isfinite(value) and value.is_integer()):
        return False
    if kind is float and rule.finite and not math.isfinite(value):
        return False
    return not (
        math.isnan(value)
        or rule.gt is not None and value <= rule.gt
        or rule.ge is not None and value < rule.ge
        or rule.lt is not None and value >= rule.lt
        or rule.le is not None and value > rule.le
    )


def _train(*overrides: str):
    return RUNNER.invoke(app, ["train", *overrides, "--dry-run"])


def _assert_refused(result, *words: str) -> str:
    assert result.exit_code == 2, (words, result.exit_code, result.output[-300:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_every_numeric_key_declares_a_range():
    assert len(NUMERIC) >= 60  # the walk found the nested dataclasses too
    for key_, kind, rule in NUMERIC:
        assert rule is not None and any(b is not None for b in (rule.gt, rule.ge, rule.lt, rule.le)), key_
        if kind is float:
            assert rule.finite, key_  # no key takes nan or inf today


def test_every_numeric_key_refuses_what_its_range_refuses_on_the_command_line():
    """0, -1, nan, inf and a string for every numeric key: exit 2 and one line naming key=value when
    outside the declared range; exit 0 when inside (a cross-key refusal would still have to name it)."""
    tried = refused = 0
    accepted = []
    for key_, kind, rule in NUMERIC:
        for text in PROBES:
            tried += 1
            result = _train(f"{key_}={text}")
            if _in_range(kind, rule, text):
                assert result.exit_code == 0, (key_, text, result.output[-300:])
                accepted.append(f"{key_}={text}")
            else:
                # a float key prints the parsed value (0 -> 0.0), so "key=0" is a prefix of "key=0.0"
                _assert_refused(result, f"{key_}={text}")
                refused += 1
    assert tried == len(PROBES) * len(NUMERIC)
    assert refused > 4 * len(NUMERIC)  # only 0 can be inside any range here
    # the keys the schema lets be 0, each for a stated reason (help text)
    assert {a.partition("=")[0] for a in accepted} >= {
        "train.eval_every", "train.save_every", "algo.kl_coef", "train.val_temperature", "seed",
        "train.weight_decay", "launcher.main_process_port"}


@pytest.mark.parametrize(("override", "ok"), ISSUE_CASES, ids=[o for o, _ in ISSUE_CASES])
def test_the_issue_cases(override, ok):
    result = _train(override)
    if ok:
        assert result.exit_code == 0, result.output[-300:]
    else:
        _assert_refused(result, override.partition("=")[0], override.partition("=")[2])


@pytest.mark.parametrize(("overrides", "names"), [
    (["train.minibatch_size=48"], "train.minibatch_size"),  # in range, does not divide 128
    (["train.micro_batch_size=3"], "train.micro_batch_size"),
    (["launcher=ddp", "launcher.num_processes=3"], "launcher.num_processes"),  # does not divide 128
    (["algo.dual_clip=1.2"], "algo.dual_clip"),  # in range (> 1), not above 1 + clip_high
    (["algo.tracker.rho_max=0.5"], "algo.tracker.rho_max"),  # in range, below rho_min
    (["algo=grpo", "algo.rollouts_per_prompt=1"], "algo.rollouts_per_prompt"),
    (["model.min_pixels=4096", "model.max_pixels=1024"], "model.min_pixels"),
])
def test_values_in_range_but_inconsistent_with_other_keys_are_refused_naming_the_key(overrides, names):
    _assert_refused(_train(*overrides), names)


def test_every_key_with_choices_refuses_an_unknown_value_naming_them():
    assert {k for k, _ in CHOICES} == EXPECTED_CHOICE_KEYS
    for key_, rule in CHOICES:
        valid = rule.valid_choices()
        assert valid, key_
        line = _assert_refused(_train(f"{key_}=not_a_choice"), f"{key_}=not_a_choice", "valid choices", *valid)
        assert line.endswith(", ".join(valid)), line


def test_choices_that_list_conf_groups_follow_the_folders():
    rules = dict(CHOICES)
    for key_, group in [("algo.name", "algo"), ("model.preset", "model"), ("data.name", "data"),
                        ("launcher.name", "launcher"), ("executor.name", "executor")]:
        assert rules[key_].valid_choices() == group_options(group)


def _shipped():
    yield []
    for group in GROUPS:
        for option in group_options(group):
            yield [f"{group}={option}"]
    algos = group_options("algo")
    for algo in algos:
        for model in group_options("model"):
            yield [f"algo={algo}", f"model={model}"]
        for experiment in group_options("experiment"):
            yield [f"algo={algo}", f"experiment={experiment}"]
    for experiment in ("none", "paper_7b"):
        for ablation in group_options("ablation"):
            yield [f"experiment={experiment}", f"ablation={ablation}"]


def test_every_shipped_config_is_inside_the_declared_ranges():
    """The ranges accept every value the project ships: default, presets, recipes, experiments, ablations."""
    from omegaconf import OmegaConf

    check_ranges(OmegaConf.structured(RootConfig))  # the schema's own defaults
    count = 0
    for overrides in _shipped():
        try:
            compose(overrides)
        except ConfigError as err:
            pytest.fail(f"{overrides}: {err}")
        count += 1
    assert count > 50
