"""Reward functions by name or import path, in TRL's calling convention.

``reward.functions=[accuracy,format,mypkg.rewards:my_reward]`` with ``reward.weights=[1.0,0.0,0.5]``.
Built-ins go by short name:

- ``accuracy``: 1.0 when the completion's final answer matches the row's ``answer``, graded by
  ``reward.grader`` (``math_verify``, the default, or ``mathruler``, the paper recipes').
- ``format``: 1.0 when the completion is ``<think>...</think>...\\boxed{...}...``, the paper's
  reference check (ruiiu/MSSR ``examples/reward_function/math.py``, ``format_reward``, after the same
  whitespace normalisation), else 0.0.

Anything else is ``module:attribute`` (``mypkg.rewards:my_reward``), ``module.attribute`` or
``path/to/file.py:attribute``. A function is called as TRL calls its reward functions::

    f(prompts=[...], completions=[...], completion_ids=[...], trainer_state=..., answer=[...], id=[...], **other columns)

one list entry per rollout, and returns a list of floats, one per completion (None: not applicable,
left out of that function's mean). A function without ``**kwargs`` gets only the arguments it names.
Each function's batch mean is logged as ``train/reward/<name>``; the step's reward is the weighted
sum (``reward.weights``; null: 1.0 each, TRL's default).

Everything here is torch-free: the CLI resolves the functions (import, signature) before any model
loads, and a bad path or signature is a ``RewardFunctionError`` whose message is one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mssr_cli.rewards.grader import accuracy_reward, extract_boxed, grader_problem, normalize_response

# The arguments TRL passes to every reward function besides the data's columns (TRL 1.x
# GRPOTrainer._calculate_rewards); ``log_extra``/``log_metric``/``environments`` are TRL's too.
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments")


class RewardFunctionError(ValueError):
    """A reward function that cannot be used: bad name, import path, signature or return value."""


def completion_text(completion) -> str:
    """The text of one completion: conversational ones arrive as [{"role": "assistant", "content": text}]."""
    if isinstance(completion, list):
        return completion[0]["content"] if completion else ""
    return completion


def graded_accuracy(grader: str) -> Callable:
    """The ``accuracy`` reward with ``grader`` (``reward.grader``) bound: a closure, not a keyword, so
    that a data column of any name cannot replace the grader."""

    def accuracy(completions, answer, **kwargs) -> list[float]:
        """1.0 when the final answer matches the row's gold ``answer`` (multiple choice: ``choices``), else 0.0."""
        # a data column "choices" (multiple choice) counts only as lists of option texts; anything else is ignored
        given = kwargs.get("choices")
        choices = [c if isinstance(c, (list, tuple)) else None for c in given] if given else [None] * len(completions)
        return [accuracy_reward(completion_text(c), a, ch, grader)
                for c, a, ch in zip(completions, answer, choices, strict=True)]

    return accuracy


accuracy = graded_accuracy("math_verify")  # the default grader's; resolve() binds reward.grader


def think_boxed_format(text: str) -> bool:
    """Whether ``text`` fully matches the reference's ``<think>.*</think>.*\\\\boxed\\{.*\\}.*`` (DOTALL), after
    its whitespace normalisation (``normalize_response``).

    Decided in linear time: the regex (fullmatch) needs the text to start with ``<think>``, then some
    ``</think>`` (the earliest leaves the most room), then after it a ``\\boxed{`` (again the earliest)
    with a ``}`` somewhere after its brace. The regex itself backtracks cubically on long completions."""
    if not isinstance(text, str):
        return False
    text = normalize_response(text)
    if not text.startswith("<think>"):
        return False
    close = text.find("</think>", len("<think>"))
    if close < 0:
        return False
    box = text.find("\\boxed{", close + len("</think>"))
    return box >= 0 and text.find("}", box + len("\\boxed{")) >= 0


def format(completions, **kwargs) -> list[float]:  # noqa: A001 - TRL names the metric after the function
    """1.0 when the completion is ``<think>...</think>...\\boxed{...}``, as the reference's format reward."""
    return [float(think_boxed_format(completion_text(c))) for c in completions]


def has_boxed(completions) -> list[bool]:
    """Whether each completion holds a ``\\boxed{}`` answer at all (``train/format_rate``, the collapse detector)."""
    return [extract_boxed(completion_text(c)) is not None for c in completions]


BUILT_INS: dict[str, Callable] = {"accuracy": accuracy, "format": format}


@dataclass(frozen=True)
class RewardFunction:
    """One configured reward: its metric name (``train/reward/<name>``), where it came from, the function."""

    name: str
    spec: str
    func: Callable
    takes_any_keyword: bool  # has **kwargs: gets every argument; else only those it names
    parameters: tuple[str, ...]  # the names it accepts
    required: tuple[str, ...]  # the names it must get


def _load_attribute(spec: str) -> Callable:
    """``module:attr``, ``module.attr`` or ``file.py:attr`` -> the object; RewardFunctionError if absent."""
    where, sep, attr = spec.rpartition(":") if ":" in spec else spec.rpartition(".")
    if not sep or not where or not attr:
        import difflib

        valid = ", ".join(BUILT_INS)
        close = difflib.get_close_matches(spec, BUILT_INS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RewardFunctionError(
            f"reward.functions: '{spec}' is neither a built-in ({valid}){hint} nor an import path (module:function, "
            "module.function or file.py:function)"
        )
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise RewardFunctionError(f"reward.functions: '{spec}': no such file {path}")
        name = f"mssr_user_rewards_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:  # the config check and the trainer share one import
            module = sys.modules[name]
            return _attribute(module, where, attr)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            module_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - any error in the user's file is reported in one line
            sys.modules.pop(name, None)
            raise RewardFunctionError(f"reward.functions: '{spec}': importing {path} failed: {type(err).__name__}: {err}") from err
    else:
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # `mssr` is an entry point: let a module beside the user be found
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            raise RewardFunctionError(
                f"reward.functions: '{spec}': no module named '{err.name}' (install it, or run from the folder that holds it)"
            ) from err
        except Exception as err:  # noqa: BLE001
            raise RewardFunctionError(f"reward.functions: '{spec}': importing {where} failed: {type(err).__name__}: {err}") from err
    return _attribute(module, where, attr)


def _attribute(module, where: str, attr: str):
    try:
        return getattr(module, attr)
    except AttributeError:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise RewardFunctionError(
            f"reward.functions: '{where}:{attr}': {where} has no attribute '{attr}'; its functions: {', '.join(public) or 'none'}"
        ) from None


def _describe(spec: str, func) -> RewardFunction:
    if not callable(func):
        raise RewardFunctionError(f"reward.functions: '{spec}' is a {type(func).__name__}, not a function")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as err:
        raise RewardFunctionError(f"reward.functions: '{spec}': cannot read its signature ({err})") from err
    params = list(signature.parameters.values())
    positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional_only:
        raise RewardFunctionError(
            f"reward.functions: '{spec}': parameter(s) {', '.join(positional_only)} are positional-only; TRL passes "
            "keywords (prompts=, completions=, answer=, ...)"
        )
    if any(p.kind is p.VAR_POSITIONAL for p in params) and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise RewardFunctionError(f"reward.functions: '{spec}': takes *args only; TRL passes keywords (completions=, ...)")
    named = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    required = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty)
    if "completions" not in named and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise RewardFunctionError(
            f"reward.functions: '{spec}': takes no 'completions' argument (signature {signature}); a reward function is "
            "f(completions, **kwargs) -> list of floats, TRL's convention"
        )
    name = spec if spec in BUILT_INS else getattr(func, "__name__", None) or spec.rpartition(":")[2] or spec
    return RewardFunction(name=name, spec=spec, func=func, takes_any_keyword=any(p.kind is p.VAR_KEYWORD for p in params),
                          parameters=named, required=required)


def resolve(functions, weights, grader: str = "math_verify") -> tuple[list[RewardFunction], list[float]]:
    """The configured reward functions (built-in or imported, signatures checked) and one weight each.

    Args:
        functions: names or import paths (``reward.functions``), at least one.
        weights: one float per function (``reward.weights``), or None for 1.0 each.
        grader: what the built-in ``accuracy`` grades with (``reward.grader``: math_verify | mathruler).

    Raises RewardFunctionError (one line naming the entry) on an unknown name, a failed import, a
    missing attribute, a signature TRL cannot call, duplicate metric names or a weight count that
    differs from the function count."""
    specs = [str(s).strip() for s in (functions or [])]
    if not specs or any(not s for s in specs):
        raise RewardFunctionError(f"reward.functions={list(functions or [])}: give at least one function; built-ins: {', '.join(BUILT_INS)}")
    if problem := grader_problem(grader):  # an unknown name, or mathruler not installed: now, not at step 1
        raise RewardFunctionError(f"reward.grader={grader}: {problem}")
    built_ins = {**BUILT_INS, "accuracy": graded_accuracy(grader)}
    resolved = [_describe(s, built_ins[s]) if s in built_ins else _describe(s, _load_attribute(s)) for s in specs]
    seen: dict[str, str] = {}
    for fn in resolved:
        if fn.name in seen:
            raise RewardFunctionError(
                f"reward.functions: '{seen[fn.name]}' and '{fn.spec}' both log as train/reward/{fn.name}: give each function its own name"
            )
        seen[fn.name] = fn.spec
    if weights is None:
        chosen = [1.0] * len(resolved)
    else:
        chosen = [float(w) for w in weights]
        if len(chosen) != len(resolved):
            raise RewardFunctionError(
                f"reward.weights has {len(chosen)} value(s) for {len(resolved)} reward.functions ({', '.join(specs)}): "
                "give one weight per function, or null for 1.0 each"
            )
        bad = [w for w in chosen if not math.isfinite(w)]
        if bad:
            raise RewardFunctionError(f"reward.weights={list(weights)}: {bad[0]} is not a finite number")
    return resolved, chosen


def check_columns(functions: list[RewardFunction], columns: list[str]) -> None:
    """Every argument a function requires is one TRL passes or a column of the training data."""
    available = [*TRL_ARGUMENTS, *(c for c in columns if c not in ("prompt", "completion", "completion_ids"))]
    for fn in functions:
        missing = [p for p in fn.required if p not in available]
        if missing:
            raise RewardFunctionError(
                f"reward.functions: '{fn.spec}' needs argument(s) {', '.join(missing)}, which neither TRL nor the data "
                f"provides; available: {', '.join(available)}"
            )


def trl_callable(fn: RewardFunction) -> Callable:
    """``fn`` as TRL calls it: only the keywords it accepts, its output checked (one float or None per
    completion), named ``fn.name`` so TRL logs ``rewards/<name>/mean``."""

    def reward(**kwargs):
        given = kwargs if fn.takes_any_keyword else {k: v for k, v in kwargs.items() if k in fn.parameters}
        out = fn.func(**given)
        n = len(kwargs["completions"])
        try:
            values = list(out)
        except TypeError:
            raise RewardFunctionError(
                f"reward function '{fn.spec}' returned {type(out).__name__}, not a list of {n} floats"
            ) from None
        if len(values) != n:
            raise RewardFunctionError(f"reward function '{fn.spec}' returned {len(values)} values for {n} completions")
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, (bool, int, float)):
                values[i] = float(v)
            elif hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a numpy or torch scalar
                values[i] = float(v.item())
            else:
                raise RewardFunctionError(
                    f"reward function '{fn.spec}' returned {v!r} ({type(v).__name__}) for completion {i}: return floats or None"
                )
        return values

    reward.__name__ = reward.__qualname__ = fn.name
    return reward


def from_config(reward_cfg) -> tuple[list[RewardFunction], list[float]]:
    """``resolve`` on a config's ``reward`` section."""
    weights = reward_cfg.weights
    return resolve(list(reward_cfg.functions), None if weights is None else list(weights), reward_cfg.grader)
