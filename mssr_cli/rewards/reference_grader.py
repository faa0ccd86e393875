"""The paper recipes' grader (``reward.grader=mathruler``): the reference's accuracy reward, with mathruler.

ruiiu/MSSR ``examples/reward_function/math.py``: the response loses the spaces around ``<``, ``>``
and ``/`` and the gold its ``<answer>`` tags (rule 0 of ``grader``: ``normalize_response``,
``gold_answer``), then ``grade_answer(extract_boxed_content(response), gold)``, both mathruler's.
Only the last ``\\boxed{}`` counts: no ``<answer>``-tag fallback, no ``\\fbox``, no option letters.

mathruler's own behaviour is kept, quirks included: with no complete box it extracts the string
``"None"``, which a gold ``None`` (any case) grades right, as in the reference. One thing differs:
``grade_answer`` runs in the grader's child process and counts as wrong after ``grader.TIMEOUT_S``
(the reference would wait: sympy simplifies ``9**9**9*x`` against ``x`` for minutes).
"""

from __future__ import annotations

import importlib.util

from mssr_cli.rewards.grader import _math_equal, gold_answer, normalize_response

# mathruler.grader imports pylatexenc and sympy without declaring them (the reference lists pylatexenc itself)
PACKAGES = ("mathruler", "pylatexenc", "sympy")
NO_BOX = "None"  # what extract_boxed_content returns when there is no complete \boxed{}


def missing_packages() -> list[str]:
    """The packages the mathruler grader needs that this Python cannot import (checked without importing)."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def boxed_content(completion: str) -> str:
    """mathruler's ``extract_boxed_content`` of the normalised completion: the stripped content of
    the last ``\\boxed{``, or ``"None"`` when there is none or it never closes."""
    from mathruler.grader import extract_boxed_content  # sympy: loaded on first use, not at import

    return extract_boxed_content(normalize_response(completion))


def matches(pred: str, answer: str) -> bool:
    """mathruler's ``grade_answer(pred, gold_answer(answer))``, bounded in time (``grader._math_equal``)."""
    return isinstance(pred, str) and isinstance(answer, str) and _math_equal(pred, gold_answer(answer), "mathruler")


def reference_reward(completion: str, answer: str) -> float:
    """1.0 when mathruler grades the completion's last box equal to the gold answer, else 0.0
    (non-strings: 0.0); see the module docstring."""
    if not isinstance(completion, str):
        return 0.0
    return 1.0 if matches(boxed_content(completion), answer) else 0.0
