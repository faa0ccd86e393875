"""Evaluation grading: extraction rules, benchmark matching conventions, time bounds.

The training reward must keep paying only for the boxed / <answer> form; these rules are for
``mssr eval`` and must not leak into ``accuracy_reward``.
"""

import time

import pytest

from mssr_cli.evaluation.benchmarks import BENCHMARKS, Graded, parse_choices
from mssr_cli.rewards import accuracy_reward, extract_final_answer, match_answer, strip_think
from mssr_cli.rewards import grader


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>it is 3</think>7", "7"),
        ("<think>a</think> b <think>c</think>final", "final"),
        ("no tags at all", "no tags at all"),
        ("<think>cut off while thinking \\boxed{3}", ""),
        ("answer first <think>then more thinking", "answer first "),
    ],
)
def test_strip_think(text, expected):
    assert strip_think(text) == expected


@pytest.mark.parametrize(
    ("text", "num_choices", "fallback", "expected"),
    [
        # <think> is stripped before any rule: a box inside reasoning is not the answer
        (r"<think>maybe \boxed{3}</think>The answer is 7.", 0, "number", "7"),
        (r"<think>never closed \boxed{3}", 0, "number", None),
        # <answer> tags (their box if boxed), then the last box
        ("<answer> 12 </answer>", 0, None, "12"),
        (r"<answer>so \boxed{5}</answer>", 0, None, "5"),
        (r"\boxed{3} then <answer>5</answer>", 0, None, "5"),  # eval reads the tag first (training: the box)
        (r"first \boxed{1}, finally \boxed{2}", 0, None, "2"),
        # "the answer is ...", to the end of its sentence
        ("Thus, the answer is 42. Done.", 0, None, "42"),
        ("The final answer is: **B**", 4, "letter", "B"),
        ("Answer: 3.5", 0, None, "3.5"),
        ("the correct option is (C) 12 cm.", 4, "letter", "C"),
        ("The answer isn't clear; I'd say 9", 0, "number", "9"),
        # last option letter: (X) forms first, only letters among the options
        ("Compare (A) and (B): (B) wins", 4, "letter", "B"),
        ("So D is right", 4, "letter", "D"),
        ("So F is right", 4, "letter", None),
        ("the answer is a right triangle", 4, "letter", "a right triangle"),  # a word, not option A
        # last number, last yes/no
        ("x = 3, so y = -4.5", 0, "number", "-4.5"),
        ("Yes, there are two cats.", 0, "yes_no", "Yes"),
        ("It is not; no", 0, "yes_no", "no"),
        ("nothing here", 0, "number", None),
        ("", 0, "letter", None),
    ],
)
def test_extract_final_answer(text, num_choices, fallback, expected):
    assert extract_final_answer(text, num_choices, fallback) == expected


def test_leading_letter_of_an_option_is_the_letter():
    assert extract_final_answer(r"\boxed{(B) 8/11}", 4, "letter") == "B"
    assert extract_final_answer(r"\boxed{B. 8/11}", 4, "letter") == "B"
    assert extract_final_answer(r"\boxed{8/11}", 4, "letter") == "8/11"


MATHVISTA_CHOICES = ["hong kong", "osaka", "shanghai", "tokyo"]


@pytest.mark.parametrize(
    ("pred", "gold", "kwargs", "expected"),
    [
        # MathVista multi_choice: gold is the option text; a letter maps to it
        ("D", "tokyo", {"choices": MATHVISTA_CHOICES}, True),
        ("(D)", "tokyo", {"choices": MATHVISTA_CHOICES}, True),
        ("Tokyo", "tokyo", {"choices": MATHVISTA_CHOICES}, True),
        ("C", "tokyo", {"choices": MATHVISTA_CHOICES}, False),
        # MathVerse / MMK12 / We-Math: gold is the letter; an option's text maps back to it
        ("B", "B", {"choices": ["2", "4"]}, True),
        ("4", "B", {"choices": ["2", "4"]}, True),
        ("2", "B", {"choices": ["2", "4"]}, False),
        ("B", "B", {}, True),  # Vision Only: options are in the image, the letter still counts
        # MathVista precision: floats equal after rounding to the stated decimals
        ("1.449", "1.45", {"precision": 2}, True),
        ("1.46", "1.45", {"precision": 2}, False),
        ("0.6", "0.6", {"precision": 1}, True),
        # MathVista integer answers: truncated, as MathVista's own normalisation does
        ("7.0", "7", {"integer": True}, True),
        ("8", "7", {"integer": True}, False),
        # MathVista unit: dropped from the end of the prediction
        ("5 cm", "5", {"unit": "cm"}, True),
        (r"5\text{ cm}", "5", {"unit": "cm"}, True),
        ("6 cm", "5", {"unit": "cm"}, False),
        # LogicVista: several letters, as a set
        ("A, C", "A, C", {"multi_select": True}, True),
        ("C and A", "A, C", {"multi_select": True}, True),
        ("A", "A, C", {"multi_select": True}, False),
        ("B", "B", {"multi_select": True}, True),
        # numeric and symbolic equivalence (math-verify, bounded)
        ("0.5", r"\frac{1}{2}", {}, True),
        (r"2\sqrt{2}", r"\sqrt{8}", {}, True),
        ("yes", "yes", {}, True),
        ("Yes", "no", {}, False),
        (None, "1", {}, False),
        ("1", None, {}, False),
    ],
)
def test_match_answer(pred, gold, kwargs, expected):
    assert match_answer(pred, gold, **kwargs) is expected


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"<think>halve it</think> \boxed{\frac{1}{2}}", "<answer>0.5</answer>", True),
        (r"\boxed{7}", "<ANSWER> 7 </ANSWER>", True),
        (r"\boxed{7}", "7", True),  # a gold without tags is used as it is
        (r"\boxed{3}", "<answer>3</answer><answer>4</answer>", True),  # the first tag
        (r"\boxed{4}", "<answer>3</answer><answer>4</answer>", False),
        # spaced tags: < / think > closes the reasoning, so its box is not the answer
        (r"< think > \boxed{5} < / think > The answer is 3.", "3", True),
        ("< answer > 3 < / answer >", "<answer>3</answer>", True),
    ],
)
def test_eval_normalises_gold_and_response_like_training(response, gold, expected):
    # The reference's rule 0 (ruiiu/MSSR reward_function/math.py) holds in evaluation as in training.
    assert match_answer(extract_final_answer(response, 0, "number"), gold) is expected


def test_benchmark_grading_reads_tagged_golds():
    mathvista = {"question_type": "free_form", "answer_type": "integer", "answer": "<answer>7</answer>",
                 "precision": None, "unit": ""}
    assert BENCHMARKS["mathvista"].grade(mathvista, r"\boxed{7}").correct is True  # integer rule
    assert BENCHMARKS["mathvista"].grade(mathvista, r"\boxed{8}").correct is False
    assert BENCHMARKS["logicvista"].grade({"answer": "<answer>A, C</answer>"}, r"\boxed{C, A}").correct is True
    digits = BENCHMARKS["digits"]  # strict: the training reward itself
    assert digits.grade({"answer": "<answer>0.5</answer>"}, r"\boxed{\frac{1}{2}}").correct is True
    assert digits.grade({"answer": "3"}, "< answer > 3 < / answer >") == Graded("3", True)


def test_training_reward_still_requires_the_boxed_form():
    # Free-text rules are for evaluation only: training must not pay for them (README, Reward).
    assert accuracy_reward("The answer is 7", "7") == 0.0
    assert accuracy_reward("<think>x</think> 7", "7") == 0.0
    assert accuracy_reward("(B)", "B", ["3", "5"]) == 0.0
    assert accuracy_reward(r"\boxed{7}", "7") == 1.0
    assert accuracy_reward(r"\boxed{3} <answer>5</answer>", "3") == 1.0  # training still prefers the box


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A. 20°\nB. 40°\nC. 60°", ("20°", "40°", "60°")),
        ("Choices:\nA:25°\nB:50°", ("25°", "50°")),
        ("A. 20°; B. 40°; C. 60°; D. 80°; E. No correct answer", ("20°", "40°", "60°", "80°", "No correct answer")),
        ("(A) 1\n(B) 2", ("1", "2")),
        ("B. 40°\nC. 60°", ()),  # letters must start at A
        ("no options here", ()),
        (None, ()),
    ],
)
def test_parse_choices(text, expected):
    assert parse_choices(text) == expected


HOSTILE = [
    "answer is " * 20_000,
    "(A) " * 50_000,
    "<think>" * 30_000,
    "</think>" * 30_000 + r"\boxed{1}",
    "9" * 100_000,
    "The answer is " + "\\boxed{" * 20_000,
    r"\boxed{9^{9^{9^{9^{9}}}}}",
    "<answer>" + "{" * 50_000,
    "yes no " * 30_000,
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_responses_come_back_in_time(text):
    start = time.monotonic()
    for name in ("mathvista", "mathverse", "logicvista", "hallusionbench"):
        doc = _minimal_doc(name)
        assert BENCHMARKS[name].grade(doc, text).correct in (True, False)
    assert time.monotonic() - start < 4 * 3 * grader.TIMEOUT_S


def _minimal_doc(name):
    return {
        "mathvista": {"question_type": "free_form", "answer_type": "integer", "answer": "1", "precision": None, "unit": ""},
        "mathverse": {"question_type": "multi-choice", "answer": "A", "question": "Choices:\nA:1\nB:2"},
        "logicvista": {"answer": "A, C"},
        "hallusionbench": {"gt_answer": "1"},
    }[name]


def test_grading_never_raises_on_odd_documents():
    graded = BENCHMARKS["mathvista"].grade({"question_type": "multi_choice", "choices": None, "answer": None}, "A")
    assert graded.correct is False
