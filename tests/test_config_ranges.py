"""Every config key's allowed values are declared beside it in the schema and enforced in one place.

The keys come from walking the schema's dataclasses; the expected outcome of each probe comes from
RANGES, a table written here (not from the schema under test): loosening a key's range in the schema
fails this file, and a new numeric key fails it until its range is written here. Every probe goes
through the command line in-process: ``mssr train KEY=VALUE --dry-run``.
"""

from __future__ import annotations

import math
import re
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

# Each numeric key's valid values, by hand: "<int|float> <interval>". Every float key is finite (nan and inf are
# refused whatever the interval says); an int key takes whole numbers only.
RANGES = {
    "seed": "int [0, 4294967295]",
    "algo.rollouts_per_prompt": "int [1, inf)",
    "algo.gamma": "float [0, 1]",
    "algo.tracker.rho_min": "float (0, 1)",
    "algo.tracker.rho_max": "float (0, 1)",
    "algo.tracker.target_kl": "float (0, inf)",
    "algo.tracker.kl_window": "int [1, inf)",
    "algo.tracker.v_init": "float [0, 1]",
    "algo.tracker.d_half": "float (0, inf)",
    "algo.tracker.warm_start_rollouts": "int [1, inf)",
    "algo.shaping.alpha": "float [0, inf)",
    "algo.shaping.kappa": "float (0, inf)",
    "algo.clip_low": "float [0, 1)",
    "algo.clip_high": "float [0, inf)",
    "algo.dual_clip": "float (1, inf)",
    "algo.kl_coef": "float [0, inf)",
    "algo.entropy_coef": "float [0, inf)",
    "algo.cross_modal_kl_coef": "float [0, inf)",
    "algo.grpo_eps": "float (0, inf)",
    "model.min_pixels": "int [1, inf)",
    "model.max_pixels": "int [1, inf)",
    "model.lora.r": "int [1, inf)",
    "model.lora.alpha": "int [1, inf)",
    "model.lora.dropout": "float [0, 1)",
    "model.warm_start.num_examples": "int [1, inf)",
    "model.warm_start.target_accuracy": "float [0, 1]",
    "model.warm_start.check_examples": "int [1, inf)",
    "model.warm_start.check_every": "int [1, inf)",
    "model.warm_start.max_epochs": "int [1, inf)",
    "model.warm_start.lr": "float (0, inf)",
    "model.warm_start.batch_size": "int [1, inf)",
    "model.warm_start.seed": "int [0, 4294967295]",
    "data.image_size": "int [1, inf)",
    "data.num_val": "int [1, inf)",
    "data.train_limit": "int [1, inf)",
    "data.val_limit": "int [1, inf)",
    "data.max_prompt_tokens": "int [1, inf)",
    "train.max_steps": "int [1, inf)",
    "train.rollouts_per_step": "int [1, inf)",
    "train.minibatch_size": "int [1, inf)",
    "train.micro_batch_size": "int [1, inf)",
    "train.lr": "float (0, inf)",
    "train.weight_decay": "float [0, inf)",
    "train.max_grad_norm": "float (0, inf)",
    "train.temperature": "float (0, inf)",
    "train.top_p": "float (0, 1]",
    "train.max_completion_length": "int [1, inf)",
    "train.eval_every": "int [0, inf)",
    "train.val_batch_size": "int [1, inf)",
    "train.val_max_new_tokens": "int [1, inf)",
    "train.save_every": "int [0, inf)",
    "train.keep_checkpoints": "int [1, inf)",
    "train.rollback.lr_factor": "float (0, 1]",
    "train.rollback.kl_factor": "float [1, inf)",
    "train.rollback.max_times": "int [0, inf)",
    "train.log_samples_every": "int [0, inf)",
    "train.log_samples": "int [1, inf)",
    "train.val_temperature": "float [0, inf)",
    "train.num_threads": "int [1, inf)",
    "train.vllm_gpu_memory_utilization": "float (0, 1]",
    "train.vllm_tensor_parallel_size": "int [1, inf)",
    "train.vllm_server_port": "int [1, 65535]",
    "train.vllm_server_timeout": "float (0, inf)",
    "collapse.entropy_ratio_below": "float (0, 1]",
    "collapse.entropy_patience": "int [1, inf)",
    "collapse.val_drop": "float (0, 1)",
    "collapse.format_rate_below": "float (0, 1]",
    "collapse.format_patience": "int [1, inf)",
    "collapse.accuracy_window": "int [1, inf)",
    "launcher.num_processes": "int [1, inf)",
    "launcher.main_process_port": "int [0, 65535]",
    "launcher.num_machines": "int [1, inf)",
    "launcher.machine_rank": "int [0, inf)",
    "executor.max_parallel": "int [1, inf)",
    "executor.time_min": "int [1, inf)",
    "executor.gpus_per_node": "int [0, inf)",
    "executor.nodes": "int [1, inf)",
    "executor.cpus_per_task": "int [1, inf)",
    "executor.mem_gb": "float (0, inf)",
    "executor.array_parallelism": "int [1, inf)",
    "executor.signal_delay_s": "int [1, inf)",
}


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


INTERVAL = re.compile(r"(int|float) ([\[(])(-inf|[-\d.e]+), (inf|[-\d.e]+)([\])])")


def _in_range(key: str, text: str) -> bool:
    """Whether the probe ``text`` is a value RANGES says ``key`` takes."""
    kind, opening, low, high, closing = INTERVAL.fullmatch(RANGES[key]).groups()
    try:
        value = float(text)
    except ValueError:
        return False  # not a number at all
    if not math.isfinite(value) or kind == "int" and not value.is_integer():
        return False
    low, high = float(low), float(high)
    above = value > low or opening == "[" and value == low
    below = value < high or closing == "]" and value == high
    return above and below


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


def test_every_numeric_key_has_its_range_written_here():
    assert {key_ for key_, _, _ in NUMERIC} == set(RANGES)
    for key_, kind, _ in NUMERIC:
        assert RANGES[key_].startswith(kind.__name__ + " "), (key_, kind)


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
            if _in_range(key_, text):
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
