"""The answer grader: extraction, matching rules, and robustness to hostile completions."""

import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mssr_cli.rewards import accuracy_reward, extract_answer, extract_boxed, gold_answer, normalize_response
from mssr_cli.rewards import grader

HOSTILE = r"\boxed{9^{9^{9^{9^{9}}}}}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{7}.", "7"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\fbox{x^{2}}", "x^{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        ("no box here", None),
        (r"\boxed{", None),
        (r"\boxed{3} and then \boxed{4", None),
        (r"\boxed{}", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer> 42 </answer>", "42"),
        ("<answer>1</answer> <answer>2</answer>", "2"),
        (r"<answer>it is \boxed{5}</answer>", "5"),
        (r"\boxed{3} <answer>5</answer>", "3"),
        ("<answer>5", None),
        ("The answer is 7", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        (r"\boxed{7}", "7", 1.0),
        (r"\boxed{8}", "7", 0.0),
        ("7", "7", 0.0),
        ("The answer is 7", "7", 0.0),
        (r"maybe \boxed{3}, no: \boxed{7}", "7", 1.0),
        (r"\boxed{7} wait, \boxed{3}", "7", 0.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", 1.0),
        (r"\boxed{1,000}", "1000", 1.0),
        (r"\boxed{1000}", "1,000", 1.0),
        (r"\boxed{30^\circ}", "30", 1.0),
        (r"\boxed{30^{\circ}}", "30°", 1.0),
        (r"\boxed{\text{Yes}}", "yes", 1.0),
        (r"\boxed{\mathrm{Paris}.}", "paris", 1.0),
        (r"\boxed{$\left(1, 2\right)$}", "(1,2)", 1.0),
        (r"\boxed{RED}", "red", 1.0),
        ("<answer>12</answer>", "12", 1.0),
        ("<answer>13</answer>", "12", 0.0),
        # math-verify reads words as products of symbols (left == felt); words must not reach it.
        (r"\boxed{left}", "felt", 0.0),
        (r"\boxed{x}", "y", 0.0),
    ],
)
def test_accuracy(completion, answer, expected):
    assert accuracy_reward(completion, answer) == expected


CHOICES = ["3", "5", r"\frac{1}{2}", "blue"]


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        (r"\boxed{B}", "B", 1.0),
        (r"\boxed{(B)}", "B", 1.0),
        (r"\boxed{B.}", "5", 1.0),  # letter predicted, option text is gold
        (r"\boxed{5}", "B", 1.0),  # option text predicted, letter is gold
        (r"\boxed{0.5}", "C", 1.0),  # equivalent to the option text
        (r"\boxed{b}", "B", 1.0),
        (r"\boxed{Blue}", "D", 1.0),
        (r"\boxed{A}", "B", 0.0),
        (r"\boxed{3}", "B", 0.0),
        (r"\boxed{C}", "5", 0.0),
    ],
)
def test_multiple_choice(completion, answer, expected):
    assert accuracy_reward(completion, answer, CHOICES) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "completion",
    [
        "",
        "\\boxed{",
        "}}}{{{\\boxed{7",
        "\\boxed{7}}}}",  # extra closers after a complete box: still 7, but gold is 1
        "\x00\x01\xff\\boxed{\x00\ud800}\x00",
        bytes(range(256)).decode("latin-1") * 100,
        "\\boxed{" * 20_000,
        "7" * 100_000,
        "\\boxed{" + "9" * 100_000 + "}",
        "\\boxed{" + "{" * 50_000 + "7" + "}" * 50_001,
        "\\boxed{" + "{" * 300 + "7" + "}" * 301,
        "\\boxed{" + "\\text{" * 5_000 + "7" + "}" * 5_001,
        "<answer>" * 30_000,
        "\\boxed{100000!}",
        "\\boxed{(10^{10})!}",
        HOSTILE,
    ],
)
def test_garbage_is_wrong_and_fast(completion):
    start = time.monotonic()
    assert accuracy_reward(completion, "1") == 0.0
    assert time.monotonic() - start < 3 * grader.TIMEOUT_S


@pytest.mark.timeout(30)
def test_garbage_gold_and_choices():
    assert accuracy_reward(r"\boxed{7}", "\\boxed{" * 1000) == 0.0
    assert accuracy_reward(r"\boxed{7}", "") == 0.0
    assert accuracy_reward(r"\boxed{A}", "A", ["\x00", "}" * 5000]) == 1.0
    assert accuracy_reward(r"\boxed{7}", HOSTILE[7:-1]) == 0.0


@pytest.mark.parametrize(
    ("completion", "answer", "choices"),
    [
        (None, "7", None),
        (7, "7", None),
        (b"\\boxed{7}", "7", None),
        ([{"role": "assistant", "content": "\\boxed{7}"}], "7", None),
        ("\\boxed{7}", 7, None),
        ("\\boxed{7}", None, None),
        ("\\boxed{B}", "B", [1, 2]),
        ("\\boxed{B}", "B", 5),
    ],
)
def test_non_str_inputs_are_wrong(completion, answer, choices):
    assert accuracy_reward(completion, answer, choices) == 0.0


@pytest.mark.timeout(30)
def test_bounded_in_worker_threads():
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = time.monotonic()
        hostile = pool.submit(accuracy_reward, HOSTILE, "1")
        equivalent = pool.submit(accuracy_reward, r"\boxed{2\sqrt{2}}", r"\sqrt{8}")
        assert equivalent.result() == 1.0
        assert hostile.result() == 0.0
        assert time.monotonic() - start < 3 * grader.TIMEOUT_S


@pytest.mark.timeout(30)
def test_stuck_child_is_killed(monkeypatch, tmp_path):
    # A child stuck where math-verify's alarm can't reach (a C loop): only the parent's kill ends it.
    pid_file = tmp_path / "pid"
    fake = tmp_path / "stuck_child.py"
    fake.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nprint('ready', flush=True)\ntime.sleep(600)\n")
    grader._close_idle()
    monkeypatch.setattr(grader, "__file__", str(fake))
    start = time.monotonic()
    assert accuracy_reward(r"\boxed{0.5}", r"\frac{1}{2}") == 0.0
    assert time.monotonic() - start < grader.TIMEOUT_S + 2.0
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.timeout(30)
def test_late_reply_is_not_read_by_the_next_call(monkeypatch):
    monkeypatch.setattr(grader, "TIMEOUT_S", 0.0)  # the child's "1" arrives after we gave up
    assert accuracy_reward(r"\boxed{0.5}", r"\frac{1}{2}") == 0.0
    monkeypatch.undo()
    assert accuracy_reward(r"\boxed{0.4}", r"\frac{1}{2}") == 0.0
    assert accuracy_reward(r"\boxed{0.5}", r"\frac{1}{2}") == 1.0


def test_without_math_verify_cheap_matching_still_works(monkeypatch, tmp_path):
    broken = tmp_path / "broken_child.py"
    broken.write_text("raise SystemExit(1)\n")
    grader._close_idle()
    monkeypatch.setattr(grader, "__file__", str(broken))
    with pytest.warns(UserWarning, match="math-verify unavailable"):
        assert accuracy_reward(r"\boxed{0.5}", r"\frac{1}{2}") == 0.0
    assert accuracy_reward(r"\boxed{1,000}", "1000") == 1.0


def test_import_stays_light():
    code = "import sys, mssr_cli.rewards; print(sorted({'sympy', 'math_verify', 'mathruler'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- Rule 0: the paper's reference normalisation (ruiiu/MSSR examples/reward_function/math.py) ---

REFERENCE_GOLD = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)


def reference_gold(text):
    m = REFERENCE_GOLD.search(text)
    return m.group(1).strip() if m else text


def reference_response(text):
    return re.sub(r"\s*(<|>|/)\s*", r"\1", text)


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("<answer>0.5</answer>", "0.5"),
        ("<ANSWER> 7 </ANSWER>", "7"),
        ("<Answer>\n x + 1 \n</aNsWeR>", "x + 1"),
        ("<answer>3</answer> and <answer>4</answer>", "3"),  # the first tag, as re.search
        ("0.5", "0.5"),
        (r"\frac{1}{2}", r"\frac{1}{2}"),
        ("  7 ", "  7 "),  # no tags: unchanged, not even stripped
        ("<answer>5", "<answer>5"),  # unclosed: unchanged
        ("</answer>5<answer>", "</answer>5<answer>"),
        ("<answer></answer>", ""),
        (None, None),
    ],
)
def test_gold_answer(gold, expected):
    assert gold_answer(gold) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"< think > x < / think > \boxed{3}", r"<think>x</think>\boxed{3}"),
        ("1 / 2", "1/2"),
        ("a \n/\t b c", "a/b c"),
        ("no tags here", "no tags here"),
        ("<answer> 5 </answer>", "<answer>5</answer>"),
        (None, None),
    ],
)
def test_normalize_response(response, expected):
    assert normalize_response(response) == expected


def test_rule_0_agrees_with_the_reference_regexes():
    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "<ANSWER>", "</Answer>", "<think>", "<", ">", "/"]
    pieces += [" ", "\n", "\t", "\u00a0", "a", "7"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert gold_answer(text) == reference_gold(text), text
        assert normalize_response(text) == reference_response(text), text


@pytest.mark.timeout(30)
def test_rule_0_is_linear_on_long_whitespace_and_tags():
    # The reference regex rescans a whitespace run from each of its spaces: seconds for 30,000 spaces.
    start = time.monotonic()
    assert accuracy_reward(" " * 200_000 + r"\boxed{7}", "7") == 1.0
    assert accuracy_reward(r"\boxed{7}", "<answer>" * 30_000) == 0.0
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        (r"\boxed{\frac{1}{2}}", "<answer>0.5</answer>", 1.0),  # Vision-R1-rl stores golds in tags
        (r"\boxed{7}", "<ANSWER> 7 </ANSWER>", 1.0),
        (r"\boxed{8}", "<ANSWER> 7 </ANSWER>", 0.0),
        (r"\boxed{7}", "7", 1.0),  # a gold without tags is used as it is
        (r"\boxed{3}", "<answer>3</answer> <answer>4</answer>", 1.0),  # the first tag
        (r"\boxed{4}", "<answer>3</answer> <answer>4</answer>", 0.0),
        (r"< think > maybe \boxed{5} < / think > \boxed{3}", "3", 1.0),  # spaced tags still grade
        ("< think > x < / think > < answer > 3 < / answer >", "3", 1.0),  # a spaced answer tag is a tag
        ("< answer > 3 < / answer >", "<answer>3</answer>", 1.0),
        (r"\boxed{B}", "<answer>B</answer>", 1.0),
    ],
)
def test_accuracy_normalises_gold_and_response_like_the_reference(completion, answer, expected):
    assert accuracy_reward(completion, answer) == expected


def test_tagged_gold_letter_with_choices():
    assert accuracy_reward(r"\boxed{5}", "<answer>B</answer>", ["3", "5"]) == 1.0
    assert accuracy_reward(r"\boxed{B}", "<answer>5</answer>", ["3", "5"]) == 1.0
