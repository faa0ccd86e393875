"""Prompt formats shared by every data source.

Every dataset row has the same columns, so training never special-cases a source:
``prompt`` (conversational: a list of chat messages, text only; TRL inserts the image),
``image`` (a PIL image), ``answer`` (gold answer as a string) and ``id`` (a stable integer
prompt id: the row index in the source split, used later to key per-prompt state).
"""

from __future__ import annotations

BOXED_INSTRUCTION = "Put the final answer in \\boxed{}."


def user_prompt(question: str) -> list[dict[str, str]]:
    """The conversational prompt for one question (the image is added by the trainer)."""
    return [{"role": "user", "content": f"{question} {BOXED_INSTRUCTION}"}]


def boxed(answer: str) -> str:
    """The target completion the warm start teaches: the bare boxed answer."""
    return f"\\boxed{{{answer}}}"
