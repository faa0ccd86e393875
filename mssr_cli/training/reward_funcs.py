"""Reward functions in TRL's calling convention (one float per completion).

``accuracy`` is the training reward. ``format`` is logged with weight 0 so TRL reports the
share of completions with a boxed answer (``train/format_rate``) without paying for it.
"""

from __future__ import annotations

from mssr_cli.rewards import accuracy_reward, extract_boxed


def _text(completion) -> str:
    # Conversational completions arrive as [{"role": "assistant", "content": text}]
    return completion[0]["content"] if isinstance(completion, list) else completion


def accuracy(completions, answer, **kwargs) -> list[float]:
    choices = kwargs.get("choices") or [None] * len(completions)
    return [accuracy_reward(_text(c), a, ch) for c, a, ch in zip(completions, answer, choices, strict=True)]


def format(completions, **kwargs) -> list[float]:  # noqa: A001 - TRL names the metric after the function
    return [float(extract_boxed(_text(c)) is not None) for c in completions]


REWARD_FUNCS = [accuracy, format]
REWARD_WEIGHTS = [1.0, 0.0]
