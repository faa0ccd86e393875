"""The two graders (``reward.grader``, ``mssr eval --grader``): math_verify (ours: last box or <answer> tag,
option letters, math-verify) and mathruler (the paper's reference: the last \\boxed{} alone, mathruler's
grade_answer), where they agree and where they differ, and how the choice travels from the config and the CLI."""

from __future__ import annotations

import io
import json
import time

import pytest

from mssr_cli.config.compose import compose
from mssr_cli.rewards import accuracy_reward
from mssr_cli.rewards import grader as grader_module
from mssr_cli.rewards.functions import from_config

# (completion, gold, choices, math_verify, mathruler); also the table bench/grader_agreement.py counts
CASES = [
    (r"\boxed{7}", "7", None, 1.0, 1.0),
    (r"\boxed{\frac{1}{2}}", "<answer>0.5</answer>", None, 1.0, 1.0),  # both strip the gold's tags (rule 0)
    (r"< think > x < / think > \boxed{3}", "3", None, 1.0, 1.0),  # both drop the spaces around < > /
    (r"\boxed{8}", "7", None, 0.0, 0.0),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", None, 1.0, 1.0),
    (r"\boxed{1,000}", "1000", None, 1.0, 1.0),
    (r"\boxed{30^\circ}", "30", None, 1.0, 1.0),
    (r"\boxed{B}", "B", ["3", "5"], 1.0, 1.0),
    (r"\boxed{3} then \boxed{4", "3", None, 0.0, 0.0),  # an unclosed last box is no answer for either
    # where they differ
    ("<answer>7</answer>", "7", None, 1.0, 0.0),  # only \boxed{} counts for the reference
    (r"\fbox{7}", "7", None, 1.0, 0.0),
    (r"\boxed{B}", "5", ["3", "5"], 1.0, 0.0),  # an option letter stands for its text only in ours
    (r"\boxed{\mathrm{Paris}.}", "paris", None, 1.0, 0.0),
    (r"\boxed{2/4}", r"\frac{1}{2}", None, 1.0, 0.0),  # mathruler wants fractions reduced as the gold's
    (r"\boxed{50\%}", "50", None, 0.0, 1.0),  # mathruler drops a percent sign
    ("no answer at all", "None", None, 0.0, 1.0),  # mathruler reads a missing box as the text "None"
]


@pytest.mark.parametrize(("completion", "gold", "choices", "math_verify", "mathruler"), CASES)
def test_each_grader_on_the_table(completion, gold, choices, math_verify, mathruler):
    assert accuracy_reward(completion, gold, choices) == math_verify  # the default grader
    assert accuracy_reward(completion, gold, choices, grader="math_verify") == math_verify
    assert accuracy_reward(completion, gold, choices, grader="mathruler") == mathruler


def test_the_table_holds_cases_where_the_graders_differ_both_ways():
    differ = [(mv, mr) for *_, mv, mr in CASES if mv != mr]
    assert (1.0, 0.0) in differ and (0.0, 1.0) in differ


def test_the_schema_lists_the_graders_there_are():
    from mssr_cli.config.schema import GRADER_NAMES

    assert GRADER_NAMES == grader_module.GRADERS


def test_unknown_grader_is_an_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match="grader='sympy': valid choices: math_verify, mathruler"):
        accuracy_reward(r"\boxed{7}", "7", grader="sympy")


def test_reference_grader_never_raises_on_non_strings():
    for completion, gold in ((None, "7"), (7, "7"), (r"\boxed{7}", None), (r"\boxed{7}", 7)):
        assert accuracy_reward(completion, gold, grader="mathruler") == 0.0


@pytest.mark.timeout(30)
def test_mathruler_is_bounded_in_time():
    # sympy simplifies 9**9**9*x - x for minutes in mathruler's grade_answer; the child is killed at TIMEOUT_S
    start = time.monotonic()
    assert accuracy_reward(r"\boxed{9**9**9*x}", "x", grader="mathruler") == 0.0
    assert time.monotonic() - start < 3 * grader_module.TIMEOUT_S
    assert accuracy_reward(r"\boxed{2\sqrt{2}}", r"\sqrt{8}", grader="mathruler") == 1.0  # a fresh child grades on


def test_mathruler_keeps_latex_parser_warnings_out_of_the_logs(capfd):
    # pylatexenc logs a warning for each \frac without its arguments; a policy writing junk would flood the run's log
    assert accuracy_reward(r"\boxed{\frac{1}}", "1", grader="mathruler") == 0.0
    assert "failed its substitution" not in capfd.readouterr().err


# --- the choice in the config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "math_verify"),  # the embedded default keeps its grader
        (["experiment=toy"], "math_verify"),
        (["experiment=paper_7b"], "mathruler"),  # the paper recipes grade as the reference
        (["experiment=paper_3b"], "mathruler"),
        (["model=qwen25vl-7b"], "mathruler"),  # a real preset brings the paper recipe
        (["experiment=paper_7b", "reward.grader=math_verify"], "math_verify"),  # an override still wins
    ],
)
def test_which_grader_a_config_composes(overrides, expected):
    assert compose(overrides).reward.grader == expected


@pytest.mark.parametrize("grader", ["math_verify", "mathruler"])
def test_the_accuracy_reward_grades_with_the_configured_grader(grader):
    functions, _ = from_config(compose([f"reward.grader={grader}"]).reward)
    accuracy = functions[0].func
    # a data column named "grader" cannot replace the configured one
    rewards = accuracy(completions=["<answer>7</answer>", r"\boxed{7}"], answer=["7", "7"], grader=["x", "x"])
    assert rewards == ([1.0, 1.0] if grader == "math_verify" else [0.0, 1.0])


def test_missing_mathruler_is_one_line_before_anything_loads(monkeypatch):
    from mssr_cli.config.compose import ConfigError, validate
    from mssr_cli.rewards import reference_grader

    monkeypatch.setattr(reference_grader, "PACKAGES", ("mathruler", "no_such_package_here"))
    with pytest.raises(ConfigError, match=r"^reward.grader=mathruler: needs no_such_package_here, not installed here"):
        validate(compose(["reward.grader=mathruler"]))
    validate(compose([]))  # math_verify needs none of them


def test_the_grader_is_one_of_a_run_folders_settings():
    from mssr_cli.runs.folder import RESUME_KEYS, config_diff

    assert "reward.grader" not in RESUME_KEYS  # a run graded otherwise is another run
    assert config_diff(compose([]), compose(["reward.grader=mathruler"])) == [
        "reward.grader=math_verify there, mathruler here"]


def test_a_run_saved_before_the_key_existed_reads_as_math_verify(tmp_path):
    """Its accuracy was graded by math-verify, whatever its recipe: resuming it must not switch graders."""
    from mssr_cli.runs.folder import RunFolder

    RunFolder(tmp_path).write_start(compose(["experiment=paper_7b"]), ["experiment=paper_7b"])
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("  grader: mathruler\n", ""))
    assert "grader" not in config.read_text()
    assert RunFolder(tmp_path).saved_config()[0].reward.grader == "math_verify"


def test_the_dry_run_plan_names_the_grader():
    from mssr_cli.training.plan import describe_plan

    paper, default = ("\n".join(describe_plan(compose(o))) for o in (["experiment=paper_7b"], []))
    assert "reward: 1 x accuracy + 0 x format; reward.grader=mathruler: the reference's" in paper
    assert "reward: 1 x accuracy; reward.grader=math_verify" in default


def test_validation_and_the_tracker_warm_start_use_the_configured_grader(monkeypatch):
    import datasets

    from mssr_cli.training import distributed
    from mssr_cli.training.callbacks import ValidationCallback
    from mssr_cli.training.tracker_warm_start import sample_outcomes

    rows = datasets.Dataset.from_dict({"id": [0, 1], "answer": ["7", "7"]})
    tagged = ["<answer>7</answer>", r"\boxed{7}"]  # right for math_verify twice, for mathruler once
    monkeypatch.setattr(distributed, "generate_across_processes", lambda answer, dataset: tagged)
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 1))
    for grader, wanted in (("math_verify", 1.0), ("mathruler", 0.5)):
        outcomes = sample_outcomes(None, None, rows, 1, 2, 8, 1.0, 1.0, grader=grader)
        assert sum(o[0] for o in outcomes.values()) / 2 == wanted
        callback = ValidationCallback(None, None, rows, 1, 1, 2, 8, grader=grader)
        assert callback._validate(_CpuModel())["val/accuracy"] == wanted


class _CpuModel:
    class device:  # noqa: N801 - stands in for torch.device
        type = "cpu"


# --- mssr eval --grader ----------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_eval_grader_reaches_the_grading_and_the_summary(tiny_policy_path, tmp_path, monkeypatch):
    """Answers in <answer> tags: every one right for math_verify, none for mathruler (the last box alone)."""
    from typer.testing import CliRunner

    from mssr_cli.cli import app
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.evaluation import generation

    golds = load_digits_split("validation", limit=3)["answer"]
    monkeypatch.setattr(generation, "generate_hf", lambda *a, **k: [f"<answer>{g}</answer>" for g in golds])
    for grader, accuracy in (("math_verify", 1.0), ("mathruler", 0.0)):
        out = tmp_path / grader
        result = CliRunner().invoke(app, ["eval", "--benchmarks", "digits", "--model", tiny_policy_path, "--limit", "3",
                                          "--out", str(out), "--grader", grader])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["grader"], summary["benchmarks"]["digits"]["accuracy"]) == (grader, accuracy)


def test_eval_refuses_an_unknown_grader_before_anything_loads():
    from typer.testing import CliRunner

    from mssr_cli.cli import app

    result = CliRunner().invoke(app, ["eval", "--benchmarks", "digits", "--model", "tiny", "--grader", "sympy"])
    assert result.exit_code == 2
    assert "--grader sympy: valid choices: math_verify, mathruler" in result.output


def test_eval_summaries_add_up_only_under_one_grader(tmp_path):
    from rich.console import Console

    from mssr_cli.evaluation.runner import merge_earlier

    def summary(grader, name):
        result = {"n": 2, "correct": 1, "accuracy": 0.5}
        return {"model_path": "m", "grader": grader, "benchmarks": {name: result}, "mean_accuracy": 0.5}

    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary("mathruler", "mathvista")))
    console = Console(file=io.StringIO(), width=200)
    assert list(merge_earlier(path, summary("math_verify", "mathverse"), console)["benchmarks"]) == ["mathverse"]
    assert "measured with other grader: grader='mathruler'" in console.file.getvalue()
    assert list(merge_earlier(path, summary("mathruler", "mathverse"), console)["benchmarks"]) == ["mathvista", "mathverse"]
    older = summary("math_verify", "mathvista")
    del older["grader"]  # written before --grader existed: graded by math-verify
    path.write_text(json.dumps(older))
    assert list(merge_earlier(path, summary("math_verify", "mathverse"), console)["benchmarks"]) == ["mathvista", "mathverse"]
