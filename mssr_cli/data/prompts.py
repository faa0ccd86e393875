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


# The paper's prompt (Hub and local data): reasoning in <think></think>, the answer in \boxed{}. The
# wording is the reference implementation's (ruiiu/MSSR examples/format_prompt/math.jinja, EasyR1's
# math prompt), so rewards and response lengths compare with the paper's runs.
THINK_BOXED_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in \\boxed{}."
)


def think_boxed_prompt(question: str) -> list[dict[str, str]]:
    """The paper's conversational prompt: the question, then the think-then-box instruction (image added by the trainer)."""
    return [{"role": "user", "content": f"{question.strip()} {THINK_BOXED_INSTRUCTION}"}]


# The built-in reasoning task's prompt (digit_sum): the same think-then-box structure in one short
# sentence, since every prompt token costs the tiny model's CPU runs time.
THINK_INSTRUCTION = "Think in <think></think>, then put the final answer in \\boxed{}."


def think_prompt(question: str) -> list[dict[str, str]]:
    """The short think-then-box prompt of the built-in reasoning task (image added by the trainer)."""
    return [{"role": "user", "content": f"{question} {THINK_INSTRUCTION}"}]


def boxed(answer: str) -> str:
    """The target completion the warm start teaches: the bare boxed answer."""
    return f"\\boxed{{{answer}}}"
