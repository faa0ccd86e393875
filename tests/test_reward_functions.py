"""Reward functions by name or import path (``reward.functions``, ``reward.weights``), TRL's convention."""

from __future__ import annotations

import json
import re
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.rewards.functions import (
    RewardFunctionError,
    check_columns,
    format,  # noqa: A004 - the built-in's own name
    resolve,
    think_boxed_format,
    trl_callable,
)
from mssr_cli.training.metrics import rename_trl_logs

REFERENCE_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)  # ruiiu/MSSR format_reward
PIECES = ["<think>", "</think>", "\\boxed{", "}", "{", "x", " ", "\n", "< /think >", "/", "<", ">", "7"]


def _reference_format(text: str) -> bool:
    return REFERENCE_FORMAT.fullmatch(re.sub(r"\s*(<|>|/)\s*", r"\1", text)) is not None


DENSE = ["<think>", "</think>", "\\boxed{", "}", "x"]  # only the pieces that matter: the search finds orderings


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.lists(st.sampled_from(DENSE), max_size=8).map("".join))
@example("<think>a</think>\\boxed{7}</think>")  # a later </think> is just text after the box
@example("<think>a</think>\\boxed{7}\\boxed{")  # so is a later unclosed box
def test_format_check_equals_the_reference_regex(text):
    assert think_boxed_format(text) == _reference_format(text)


def test_format_reward_cases_and_conversational_completions():
    cases = {
        "<think>3 plus 4</think> so \\boxed{7}": 1.0,
        "<think></think>\\boxed{}": 1.0,
        "< think >a< /think > \\boxed{7}": 1.0,  # spaces around < > / go first, as the reference (qwen2.5vl-32b)
        "\\boxed{7}": 0.0,  # no reasoning: the digits task's answers
        "<think>a</think> 7": 0.0,
        "x<think>a</think>\\boxed{7}": 0.0,  # must start with <think>
        "<think>a\\boxed{7}</think>": 0.0,  # the box must come after </think>
    }
    for text, want in cases.items():
        assert format([[{"role": "assistant", "content": text}]])[0] == want == float(_reference_format(text)), text
    long = "<think>" + "</think>" * 3000 + "\\boxed{" * 3000  # no closing brace: the regex backtracks for long
    assert format([long]) == [0.0]


def test_resolve_builtins_paths_and_weights(tmp_path):
    file = tmp_path / "my_rewards.py"
    file.write_text("def brevity(completions, **kw):\n    return [1.0] * len(completions)\n")
    functions, weights = resolve(["accuracy", "format", f"{file}:brevity"], [1.0, 0.0, 0.5])
    assert [f.name for f in functions] == ["accuracy", "format", "brevity"] and weights == [1.0, 0.0, 0.5]
    assert resolve(["accuracy", "format"], None)[1] == [1.0, 1.0]  # null: 1.0 each, as TRL
    functions, _ = resolve(["json.dumps"], None)  # module.attribute; **kw takes completions
    assert functions[0].func is json.dumps


@pytest.mark.parametrize(("functions", "weights", "words"), [
    (["acuracy"], None, ["'acuracy'", "did you mean accuracy", "accuracy, format"]),
    (["no_such_module_xyz:f"], None, ["no module named 'no_such_module_xyz'"]),
    (["json:no_such"], None, ["json has no attribute 'no_such'", "dumps"]),
    (["json:__doc__"], None, ["is a str, not a function"]),
    (["math:sqrt"], None, ["positional-only"]),
    (["os.path:exists"], None, ["no 'completions' argument"]),
    (["os.path:join"], None, ["takes *args only"]),
    (["accuracy", "format"], [1.0], ["1 value(s) for 2 reward.functions"]),
    (["accuracy", "accuracy"], None, ["both log as train/reward/accuracy"]),
    ([], None, ["at least one function"]),
])
def test_bad_functions_name_the_entry(functions, weights, words):
    with pytest.raises(RewardFunctionError) as err:
        resolve(functions, weights)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_file_and_a_broken_file(tmp_path):
    with pytest.raises(RewardFunctionError, match="no such file"):
        resolve([f"{tmp_path}/absent.py:f"], None)
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_abc\n")
    with pytest.raises(RewardFunctionError, match="importing .*broken.py failed: ModuleNotFoundError"):
        resolve([f"{broken}:f"], None)


def test_the_config_checks_rewards_before_anything_loads(tmp_path):
    assert list(compose([]).reward.functions) == ["accuracy"]
    with pytest.raises(ConfigError, match="reward.functions: 'nope_pkg:f'"):
        compose(["reward.functions=[accuracy,nope_pkg:f]"])
    paper = compose(["model=qwen2vl-2b"])
    assert (list(paper.reward.functions), list(paper.reward.weights)) == (["accuracy", "format"], [1.0, 0.0])


def test_required_arguments_must_be_columns(tmp_path):
    file = tmp_path / "needs.py"
    file.write_text("def needs_hint(completions, hint):\n    return [0.0] * len(completions)\n")
    functions, _ = resolve([f"{file}:needs_hint"], None)
    check_columns(functions, ["prompt", "image", "answer", "id", "hint"])  # a column of the data: fine
    with pytest.raises(RewardFunctionError, match="needs argument\\(s\\) hint.*available: prompts, completions"):
        check_columns(functions, ["prompt", "image", "answer", "id"])


def test_trl_callable_filters_keywords_and_checks_the_output(tmp_path):
    file = tmp_path / "r.py"
    file.write_text(
        "def picky(completions, answer):\n    return [1.0 if a == '3' else None for a in answer]\n"
        "def short(completions, **kw):\n    return [1.0]\n"
        "def text(completions, **kw):\n    return ['1'] * len(completions)\n"
        "def scalar(completions, **kw):\n    import numpy as np\n    return [np.float32(0.5), True] \n"
    )
    functions, _ = resolve([f"{file}:{n}" for n in ("picky", "short", "text", "scalar")], None)
    picky, short, text, scalar = (trl_callable(f) for f in functions)
    call = {"prompts": ["p", "q"], "completions": ["a", "b"], "completion_ids": [[1], [2]], "answer": ["3", "4"],
            "id": [0, 1], "trainer_state": None}
    assert picky.__name__ == "picky" and picky(**call) == [1.0, None]  # no **kwargs: only what it names
    with pytest.raises(RewardFunctionError, match="'.*:short' returned 1 values for 2 completions"):
        short(**call)
    with pytest.raises(RewardFunctionError, match="returned '1' \\(str\\) for completion 0"):
        text(**call)
    assert scalar(**call) == [0.5, 1.0] and all(type(v) is float for v in scalar(**call))


def test_each_function_mean_is_logged():
    logs = {"rewards/accuracy/mean": 0.25, "rewards/format/mean": 0.5, "rewards/brevity/mean": 1.0,
            "rewards/brevity/std": 0.0, "reward": 0.75}
    out = rename_trl_logs(logs)
    assert out["train/reward/accuracy"] == 0.25 and out["train/accuracy"] == 0.25
    assert out["train/reward/format"] == 0.5 and out["train/reward/brevity"] == 1.0
    assert "train/format_rate" not in out  # the boxed rate is the seam's own, not the format reward
    assert out["train/reward"] == 0.75


USER_REWARDS = '''
def brevity(completions, **kwargs):
    return [1.0 if len(c[0]["content"]) < 12 else 0.0 for c in completions]


def constant(completions, id, answer):  # no **kwargs: gets only what it names
    assert len(id) == len(answer) == len(completions)
    return [0.25 for _ in completions]
'''


@pytest.mark.slow
def test_training_with_user_rewards_logs_each_and_pays_the_weighted_sum(tmp_path, tiny_policy_path):
    from mssr_cli.training.runner import run_training

    file = tmp_path / "user_rewards.py"
    file.write_text(USER_REWARDS)
    overrides = ["train.max_steps=2", "train.rollouts_per_step=16", "train.eval_every=0", "train.save_every=0",
                 "logging.wandb=disabled", "logging.progress=false", "algo.tracker.warm_start=false",
                 f"reward.functions=[accuracy,format,{file}:brevity,{file}:constant]",
                 "reward.weights=[1.0,0.0,0.5,2.0]"]
    run_training(compose(overrides), overrides, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for m in rows[1:]:
        assert m["train/reward/constant"] == 0.25 and m["train/reward/format"] == 0.0  # no <think> on digits
        assert m["train/reward/accuracy"] == m["train/accuracy"]
        assert m["train/format_rate"] > 0  # the boxed-answer rate, unlike the format reward (0 here)
        assert m["train/reward"] == pytest.approx(
            m["train/reward/accuracy"] + 0.5 * m["train/reward/brevity"] + 2.0 * 0.25, abs=1e-6)


def test_an_argument_no_column_provides_fails_before_the_model_loads(tmp_path, monkeypatch):
    import mssr_cli.models.loading as loading
    from mssr_cli.training.runner import run_training

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the reward functions were checked")

    monkeypatch.setattr(loading, "load_policy", no_model)
    file = tmp_path / "needs.py"
    file.write_text("def needs_hint(completions, hint):\n    return [0.0] * len(completions)\n")
    overrides = ["logging.wandb=disabled", "logging.progress=false", f"reward.functions=[{file}:needs_hint]"]
    with pytest.raises(RewardFunctionError, match="needs argument\\(s\\) hint"):
        run_training(compose(overrides), overrides, tmp_path / "run")


def test_the_cli_refuses_a_bad_path_in_one_line(tmp_path):
    import subprocess

    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    out = subprocess.run([sys.executable, "-c", code, "train", "reward.functions=[accuracy,mypkg_absent.rewards:my_reward]",
                          "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == ["error: reward.functions: 'mypkg_absent.rewards:my_reward': no module named 'mypkg_absent' "
                     "(install it, or run from the folder that holds it)"]
    assert not (tmp_path / "run").exists()  # refused before the run folder, the data or the model


def test_other_columns_of_local_data_reach_reward_functions(tmp_path):
    """A local file's extra columns ride along (TRL passes them to reward functions); reserved names do not."""
    import io

    import pandas as pd
    from PIL import Image

    from mssr_cli.data.registry import load_split

    buf = io.BytesIO()
    Image.new("RGB", (28, 28), "white").save(buf, format="PNG")
    rows = [{"problem": f"q{i}", "answer": str(i), "images": [{"bytes": buf.getvalue()}], "hint": f"h{i}",
             "difficulty": i * 0.5, "completions": "clash"} for i in range(6)]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    cfg = compose(["data=local", f"data.path={tmp_path / 'train.parquet'}", "data.num_val=2"])
    split = load_split(cfg.data, "train")
    assert {"hint", "difficulty"} <= set(split.column_names) and "completions" not in split.column_names
    by_id = {row["id"]: row for row in split}
    assert all(row["hint"] == f"h{i}" and row["difficulty"] == i * 0.5 for i, row in by_id.items())
    file = tmp_path / "needs.py"
    file.write_text("def needs_hint(completions, hint):\n    return [0.0] * len(completions)\n")
    check_columns(resolve([f"{file}:needs_hint"], None)[0], split.column_names)  # the data provides it
