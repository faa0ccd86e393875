"""Rewards for RL on answers. Light at import: math-verify loads only in a grading child process."""

from mssr_cli.rewards.grader import (
    accuracy_reward,
    extract_answer,
    extract_boxed,
    extract_final_answer,
    gold_answer,
    match_answer,
    normalize_response,
    strip_think,
)

__all__ = [
    "accuracy_reward",
    "extract_answer",
    "extract_boxed",
    "extract_final_answer",
    "gold_answer",
    "match_answer",
    "normalize_response",
    "strip_think",
]
