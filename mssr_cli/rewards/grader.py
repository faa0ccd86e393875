"""Answer grader: does a completion's final answer match the gold answer?

Two graders (``accuracy_reward(..., grader=)``, ``reward.grader``): ``math_verify``, the rules
below, and ``mathruler``, the paper's reference reward (rule 0, then mathruler on the last box
alone: ``reference_grader``). Rules of ``math_verify``, in order:

0. Normalisation, as the paper's reference reward does (EasyR1 fork ruiiu/MSSR,
   ``examples/reward_function/math.py``) in training and in evaluation alike: the gold answer
   is the content of its first ``<answer>...</answer>`` when it has one (``gold_answer``: the
   Vision-R1-rl training data stores ``<answer>0.5</answer>``), and the response loses the
   spaces around ``<``, ``>`` and ``/`` (``normalize_response``: ``< / think >`` is
   ``</think>``, ``1 / 2`` is ``1/2``) before anything is extracted from it.
1. Extraction. The answer is the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``)
   in the completion; failing that, the last ``<answer>...</answer>`` (its boxed content
   if it holds a box). An unbalanced or empty box or tag means no answer. Free text is
   never searched for a number: paying for "the first digit in the text" let the output
   format decay into junk while the reward still paid.
2. Cheap comparison. Both sides are normalised (whitespace, surrounding ``$``,
   ``\\text{}``/``\\mathrm{}`` wrappers, a trailing period, ``\\left``/``\\right``, ``\\!``,
   degree marks, thousands separators; case only where no LaTeX command is left) and
   compared as strings. Multiple choice: with ``choices`` (option texts for A, B, C, ...)
   a letter (``B``, ``(B)``, ``B.``) stands for its option text, on either side.
3. math-verify, for numeric/symbolic equivalence (``0.5`` == ``\\frac{1}{2}``). Skipped
   when either side is plain words, which math-verify would read as a product of symbols
   (``left`` == ``felt``), or would cost it seconds (``_too_costly``): longer than ``MAX_LEN``
   characters, brackets nested deeper than ``MAX_DEPTH``, powers that sympy would expand
   digit by digit (``10^{10^{10}}``), factorials and binomials of more than small integers, or
   integrals, limits, sums and products.

Evaluation (``extract_final_answer``, ``match_answer``) reads more than training pays for:
after rule 0 (the response in ``extract_final_answer``, the gold in ``match_answer``),
``<think>`` is stripped, then ``<answer>`` tags, the last box, "the answer is ...", and a last
option letter, number or yes/no; matching is rules 2-3 plus MathVista's unit, precision and
integer conventions and multi-letter answers. Training still pays for the boxed form only.

Time bound: math-verify (and mathruler's ``grade_answer``) runs in a child Python process (one
per concurrently calling thread and library, reused across calls) that is killed when a comparison takes longer than
``TIMEOUT_S``, which then counts as wrong. A process, not math-verify's own signal.alarm
timeout, because the alarm works only in the main thread and would clobber the caller's
own SIGALRM (pytest-timeout uses it), and not a thread, because a thread stuck in
sympy on ``9^{9^{9^{9}}}`` can't be stopped. The first call in a thread waits for the
child to start (about a second); the child exits when this process closes its pipe.
The kill is a backstop: the caps of rule 3 keep the inputs known to be slow from reaching
the child at all (a kill also makes the next call wait for a new child). Fuzzing
(tests/test_grader_fuzz.py) checks that no call of 10,000 needs the kill.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import warnings

GRADERS = ("math_verify", "mathruler")  # accuracy_reward's grader=; reward.grader, mssr eval --grader
TIMEOUT_S = 2.0  # wall-clock limit of one math-verify (or mathruler) comparison
START_TIMEOUT_S = 60.0  # a loaded training machine can take a while to import sympy
# Longer or deeper answers are compared by normalisation only: math-verify's time grows with
# both (0.3 s for 200 characters of "x^{y}+x^{y}+...", seconds at 1000; 0.4 s at depth 8, 1 s at 12).
MAX_LEN = 200
MAX_DEPTH = 4

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)  # escaped chars (\{, \}) don't group
_WRAPPER = re.compile(r"\\(?:text|textrm|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_DROP = re.compile(r"\\(?:left|right)(?![A-Za-z])|\\!|\^\s*(?:\{\s*\\circ\s*\}|\\circ)|°|\\degree(?![A-Za-z])")
_SPACE = re.compile(r"\\[,;: ]")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:[, ]\d{3})+(?:\.\d+)?")
_LETTER = re.compile(r"\(?([A-Za-z])\)?:?")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")  # not \d+\.?\d*: quadratic backtracking on 9999...x
_BRACKET = re.compile(r"[{}()\[\]]")
_POWER = re.compile(r"\^|\*\*")
_LONG_INTEGER = re.compile(r"(?<![\d.])\d{5,}")  # an integer part of 10,000 or more
# 10^{10}, (2)**3, 99\cdot 99: a power or product of numbers; group 1 is the operator
_NUMERIC_OP = re.compile(r"\d[\s)}\]]*(\^|\*\*|\*|\\cdot|\\times)(?=[\s{(\[]*[-+]?\d)")
_CHAINED_POWER = re.compile(r"\d\s*(?:\^|\*\*)\s*(?:\{\s*[-+]?\d+\s*\}|[-+]?\d+)\s*(?:\^|\*\*)")  # 9^9^9
_COMBINATORIC = re.compile(r"(?<!\\)!(?!=)|\\(?:[dt]?binom|choose)(?![A-Za-z])")
_CALCULUS = re.compile(r"\\(?:i*int|oint|lim|sum|prod)(?![A-Za-z])")
_SMALL_INTEGER = r"\s*\d{1,4}\s*"
_SMALL_COMBINATORIC = re.compile(  # 7!, \binom{10}{3}: what sympy computes at once
    rf"(?<![\w.\\]){_SMALL_INTEGER}!|\\[dt]?binom\s*\{{{_SMALL_INTEGER}\}}\s*\{{{_SMALL_INTEGER}\}}"
)
_WORDS = re.compile(r"[^\W\d_]{2,}(?:\s+[^\W\d_]+)*")
_GOLD_OPEN = re.compile("<answer>", re.I)
_GOLD_CLOSE = re.compile("</answer>", re.I)
_WHITESPACE_RUN = re.compile(r"\s+")
_TAG_CHARS = "<>/"


def gold_answer(answer: str) -> str:
    """The gold answer to grade against: the stripped content of the first ``<answer>...</answer>``
    (any case) when ``answer`` has one, else ``answer`` unchanged (non-strings too).

    The paper's reference (ruiiu/MSSR ``examples/reward_function/math.py``,
    ``extract_ground_truth``): ``re.search(r"<answer>\\s*(.*?)\\s*</answer>", gold, re.DOTALL |
    re.IGNORECASE).group(1).strip()``. Same result without the regex's quadratic rescans: that
    search matches from the first opening tag when any closing tag follows it (lazily, to the
    nearest one), and not at all otherwise.
    """
    if not isinstance(answer, str):
        return answer
    opening = _GOLD_OPEN.search(answer)
    closing = _GOLD_CLOSE.search(answer, opening.end()) if opening else None
    return answer[opening.end() : closing.start()].strip() if closing else answer


def normalize_response(response: str) -> str:
    """``response`` without whitespace around ``<``, ``>`` and ``/`` (``< / think >`` -> ``</think>``,
    ``1 / 2`` -> ``1/2``); non-strings unchanged.

    The paper's reference (ruiiu/MSSR ``examples/reward_function/math.py``, ``compute_score``,
    "handle qwen2.5vl-32b format"): ``re.sub(r"\\s*(<|>|/)\\s*", r"\\1", response)``. Same result:
    a whitespace run goes exactly when a ``<``, ``>`` or ``/`` touches it on either side; matching
    whole runs keeps it linear where the reference regex rescans a long run from each of its spaces.
    """
    if not isinstance(response, str):
        return response

    def run(m: re.Match) -> str:
        before = response[m.start() - 1] if m.start() else ""
        after = response[m.end()] if m.end() < len(response) else ""
        return "" if (before and before in _TAG_CHARS) or (after and after in _TAG_CHARS) else m.group()

    return _WHITESPACE_RUN.sub(run, response)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}``/``\\fbox{}``; None if absent, unbalanced or empty."""
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX.finditer(text):
        pass
    if last is None:
        return None
    depth = 1
    for token in _BRACE_TOKEN.finditer(text, last.end()):
        depth += {"{": 1, "}": -1}.get(token.group(), 0)
        if depth == 0:
            return text[last.end() : token.start()].strip() or None
    return None  # a truncated box is no answer, not a guess at a previous one


def extract_answer(text: str) -> str | None:
    """Last boxed content, else the last ``<answer>`` tag's content, else None; read from
    ``normalize_response(text)`` (rule 0), so ``< answer >`` is a tag."""
    if not isinstance(text, str):
        return None
    text = normalize_response(text)
    if (boxed := extract_boxed(text)) is not None:
        return boxed
    return _answer_tag(text)


def accuracy_reward(completion: str, answer: str, choices: list[str] | None = None, grader: str = "math_verify") -> float:
    """1.0 if the completion's extracted answer matches ``answer``, else 0.0; never raises on strings.

    Rule 0 first, as the paper's reference reward: ``normalize_response(completion)`` and
    ``gold_answer(answer)`` (``<answer>0.5</answer>`` is the gold ``0.5``). ``grader``:
    ``math_verify`` (rules 1-3 above, ``choices`` read as option texts) or ``mathruler`` (the
    reference's: the last ``\\boxed{}`` alone, by mathruler; ``choices`` unused; ``reference_grader``).
    An unknown ``grader`` is a ValueError naming the valid ones."""
    if grader not in GRADERS:
        raise ValueError(f"grader={grader!r}: valid choices: {', '.join(GRADERS)}")
    try:
        if grader == "mathruler":
            from mssr_cli.rewards.reference_grader import reference_reward

            return reference_reward(completion, answer)
        return _grade(completion, answer, choices)
    except Exception:  # a reward function must not take training down
        return 0.0


def grader_problem(grader: str) -> str | None:
    """Why ``grader`` cannot grade here (an unknown name; mathruler's packages missing), or None."""
    if grader not in GRADERS:
        return f"valid choices: {', '.join(GRADERS)}"
    if grader == "mathruler":
        from mssr_cli.rewards.reference_grader import missing_packages

        if missing := missing_packages():
            return f"needs {', '.join(missing)}, not installed here (pyproject.toml pins them: reinstall mssr-cli)"
    return None


def _grade(completion, answer, choices) -> float:
    if not isinstance(completion, str) or not isinstance(answer, str):
        return 0.0
    choices = list(choices or ())
    if not all(isinstance(c, str) for c in choices):
        return 0.0
    pred = extract_answer(completion)  # rule 0: extract_answer reads normalize_response(completion)
    if pred is None:
        return 0.0
    return 1.0 if _match(pred, gold_answer(answer), choices) else 0.0


def _match(pred: str, answer: str, choices: list[str]) -> bool:
    """Rules 2 and 3: does an extracted answer equal the gold answer?"""
    pred_letter, gold_letter = _letter(pred, choices), _letter(answer, choices)
    if pred_letter is not None and pred_letter == gold_letter:
        return True
    pred_text, gold_text = _clean(_as_option(pred, choices)), _clean(_as_option(answer, choices))
    if not pred_text or not gold_text:
        return False
    if _key(pred_text) == _key(gold_text):
        return True
    numbers = _as_number(pred_text), _as_number(gold_text)
    if None not in numbers:  # plain numbers on both sides: no need for the math-verify worker
        return math.isclose(numbers[0], numbers[1], rel_tol=1e-9, abs_tol=1e-12)
    if _too_costly(pred_text) or _too_costly(gold_text) or _WORDS.fullmatch(pred_text) or _WORDS.fullmatch(gold_text):
        return False
    return _math_equal(pred_text, gold_text)


def _too_costly(s: str) -> bool:
    """Would math-verify take seconds on ``s``? Longer than ``MAX_LEN``, nested deeper than
    ``MAX_DEPTH``, a power that sympy expands digit by digit (``_huge_power``), or a factorial or
    binomial of anything but integers below 10,000: sympy expands ``\\binom{\\pi}{6486}`` into
    thousands of factors, ``(10^{10})!`` digit by digit, and simplifies ``\\binom{92}{x}`` for
    over a second. Benchmark answers carry no factorials beyond the likes of ``\\frac{10!}{3!7!}``,
    and equal symbolic ones (``n!``) still match as strings (rule 2). Nor are integrals, limits,
    sums or products final answers; sympy may evaluate them for seconds."""
    if len(s) > MAX_LEN or _nesting_depth(s) > MAX_DEPTH or _huge_power(s) or _CALCULUS.search(s):
        return True
    return bool(_COMBINATORIC.search(_SMALL_COMBINATORIC.sub("", s)))


def _nesting_depth(s: str) -> int:
    """Deepest nesting of ``()``, ``[]`` and ``{}`` together (unmatched closers ignored), plus one
    level per pair of ``|``: a bar may open or close an absolute value, and ``|x|x|x|...`` parses
    as nested ones."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(s):
        depth = depth + 1 if bracket in "([{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest + s.count("|") // 2


def _huge_power(s: str) -> bool:
    """Does ``s`` raise a number to a power that sympy would expand into millions of digits?
    Sympy evaluates integer powers eagerly, so ``10^{10^{10}}`` never returns. Flagged: a power
    beside an integer of five digits or more (``10^{1000000}``), a chained power (``9^9^9``),
    and a power or product of numbers inside an exponent or under another power
    (``2^{2^{30}}``, ``9^{99 \\cdot 99}``, ``(9^{9})^{9}``). Symbolic towers (``e^{-x^{2}}``)
    pass: sympy keeps them unevaluated."""
    if not _POWER.search(s):
        return False
    if _LONG_INTEGER.search(s) or _CHAINED_POWER.search(s):
        return True
    operators = [m.start(1) for m in _NUMERIC_OP.finditer(s)]
    if not operators:
        return False
    groups = []  # (where a bracket opened, whether it opens an exponent)
    before = ""  # the last two non-space characters so far
    for i, ch in enumerate(s):
        if ch in "([{":
            groups.append((i, before.endswith("^") or before == "**"))
        elif ch in ")]}" and groups:
            start, exponent = groups.pop()
            computes = any(start < op < i for op in operators)
            if computes and (exponent or _POWER.match(s[i + 1 :].lstrip())):
                return True
        if not ch.isspace():
            before = (before + ch)[-2:]
    return False


def _as_number(s: str) -> float | None:
    """``s`` as a float when it is a plain decimal number (``-3``, ``0.50``), else None."""
    return float(s) if _NUMBER.fullmatch(s) else None


def _clean(s: str) -> str:
    """Drop notation that doesn't change the value; keeps spaces, which LaTeX needs (``\\pi r``)."""
    s = s.strip().strip("$").strip()
    for _ in range(3):  # nested wrappers are rare; a bound keeps hostile nesting linear
        s = _WRAPPER.sub(r"\1", s)
    s = _SPACE.sub(" ", _DROP.sub("", s)).replace("{,}", ",").strip()
    s = s[:-1].rstrip() if s.endswith(".") else s
    return re.sub(r"[, ]", "", s) if _THOUSANDS.fullmatch(s) else s


def _key(s: str) -> str:
    s = re.sub(r"\s+", "", s)
    return s if "\\" in s else s.lower()  # LaTeX commands are case-sensitive (\Delta, \delta)


def _letter(s: str, choices: list[str]) -> str | None:
    """The option letter ``s`` names (``B``, ``(B)``, ``B.``), lower-cased, or None."""
    m = _LETTER.fullmatch(_clean(s))
    if m is None:
        return None
    letter = m.group(1).lower()
    return letter if not choices or ord(letter) - ord("a") < len(choices) else None


def _as_option(s: str, choices: list[str]) -> str:
    letter = _letter(s, choices) if choices else None
    return choices[ord(letter) - ord("a")] if letter else s


# --- Evaluation: lenient extraction and benchmark matching rules -------------------------
#
# Training pays only for the boxed/answer-tag form (``extract_answer``): paying for free text let
# the format decay. Benchmarks score models trained elsewhere too, so evaluation also reads
# "the answer is ...", then a last option letter, number or yes/no; comparison is ``_match``,
# the same rules as the reward, plus the MathVista unit/precision/integer conventions.

TAIL_CHARS = 4000  # free-text rules look at the end of a response only: linear time, final answer
_PHRASE = re.compile(
    r"\b(?:final\s+answer|correct\s+answer|correct\s+option|answer|option|choice)\s*(?:is\b\s*:?|:|=)\s*([^\n]*)",
    re.I,
)
_SENTENCE_END = re.compile(r"[.;。](?:\s|$)")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_BARE_LETTER = re.compile(r"(?<![A-Za-z0-9\\])([A-Z])(?![A-Za-z0-9])")
_LEADING_LETTER = re.compile(r"\s*(?:[Oo]ption|[Cc]hoice)?\s*\(?([A-Z])\)?(?:[.:)\s]|$)")
_ANY_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def strip_think(text: str) -> str:
    """``text`` without its reasoning: what follows the last ``</think>``; an unclosed ``<think>``
    (a response cut off while still thinking) drops everything from it on."""
    if not isinstance(text, str):
        return ""
    close = text.rfind("</think>")
    if close >= 0:
        text = text[close + len("</think>") :]
    start = text.find("<think>")
    return text[:start] if start >= 0 else text


def extract_final_answer(text: str, num_choices: int = 0, fallback: str | None = None) -> str | None:
    """The final answer of a response, for evaluation; None if it gives none.

    After ``normalize_response`` (rule 0) and ``strip_think``, in order: the last
    ``<answer>...</answer>`` (its boxed content if boxed), the last ``\\boxed{}``, the last "the
    answer is X" / "answer: X" phrase (to the end of its sentence), then ``fallback``: ``"letter"``
    the last option letter (``(B)`` forms first) among ``num_choices`` options (A-E when unknown),
    ``"number"`` the last number, ``"yes_no"`` the last yes or no. With options, an answer that
    starts with a letter (``(B) 8/11``, ``B. 8/11``) is that letter; for yes/no questions one that
    starts with yes or no is that word.
    """
    if not isinstance(text, str):
        return None
    body = strip_think(normalize_response(text))
    answer = _answer_tag(body)
    if answer is None:
        answer = extract_boxed(body)
    tail = body[-TAIL_CHARS:]
    if answer is None:
        answer = _phrase_answer(tail)
    if answer is None and fallback == "letter":
        answer = _last_letter(tail, num_choices)
    elif answer is None and fallback == "number":
        found = _ANY_NUMBER.findall(tail)
        answer = found[-1] if found else None
    elif answer is None and fallback == "yes_no":
        found = _YES_NO.findall(tail)
        answer = found[-1] if found else None
    if answer is None:
        return None
    if fallback == "letter" or num_choices:
        leading = _LEADING_LETTER.match(answer)
        if leading and leading.group(1).upper() in _letters(num_choices) and len(answer.strip()) > 1:
            answer = leading.group(1).upper()
    if fallback == "yes_no" and (word := re.match(r"\s*(yes|no)\b", _clean(answer), re.I)):
        answer = word.group(1)
    return answer.strip() or None


def _answer_tag(text: str) -> str | None:
    start = text.rfind("<answer>")
    end = text.find("</answer>", start)
    if start < 0 or end < 0:
        return None
    inner = text[start + len("<answer>") : end]
    return extract_boxed(inner) if _BOX.search(inner) else (inner.strip() or None)


def _phrase_answer(tail: str) -> str | None:
    last = None
    for last in _PHRASE.finditer(tail):
        pass
    if last is None:
        return None
    value = last.group(1)
    end = _SENTENCE_END.search(value)
    value = (value[: end.start()] if end else value).strip().strip("*_\"'` ").strip()
    return value or None


def _letters(num_choices: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: num_choices if 0 < num_choices <= 26 else 5]


def _last_letter(tail: str, num_choices: int) -> str | None:
    allowed = _letters(num_choices)
    for pattern in (_PAREN_LETTER, _BARE_LETTER):
        found = [m for m in pattern.findall(tail) if m in allowed]
        if found:
            return found[-1]
    return None


def match_answer(
    pred: str,
    gold: str,
    choices: list[str] | None = None,
    *,
    precision: int | None = None,
    integer: bool = False,
    unit: str | None = None,
    multi_select: bool = False,
) -> bool:
    """Does an extracted answer equal the gold answer? Never raises; bounded in time.

    The reward's rules (``choices``: option texts for A, B, ...; a letter and its text are the
    same answer, on either side), plus benchmark conventions: ``unit`` is dropped from the end of
    the prediction (MathVista); with ``precision`` two numbers match when equal after rounding to
    that many decimals, with ``integer`` after truncation to an integer (MathVista's float and
    integer answers); with ``multi_select`` the sets of option letters must be equal (``A, C``).
    The gold is ``gold_answer(gold)`` first (rule 0), as in training: ``<answer>7</answer>`` is ``7``.
    """
    try:
        return _match_rules(pred, gold, choices, precision, integer, unit, multi_select)
    except Exception:  # scoring must not take an evaluation down
        return False


def _match_rules(pred, gold, choices, precision, integer, unit, multi_select) -> bool:
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    gold = gold_answer(gold)
    choices = list(choices or ())
    if not all(isinstance(c, str) for c in choices):
        return False
    if unit and isinstance(unit, str):
        pred = _strip_unit(pred, unit)
    if multi_select:
        pred_set, gold_set = _letter_set(pred), _letter_set(gold)
        return bool(gold_set) and pred_set == gold_set
    if precision is not None or integer:
        numbers = _as_number(_clean(pred)), _as_number(_clean(gold))
        if None not in numbers:
            if integer:
                return int(numbers[0]) == int(numbers[1])
            return round(numbers[0], int(precision)) == round(numbers[1], int(precision))
    return _match(pred, gold, choices)


def _strip_unit(pred: str, unit: str) -> str:
    text, unit = _clean(pred), _clean(unit)
    if unit and len(text) > len(unit) and text.lower().endswith(unit.lower()):
        return text[: -len(unit)].strip()
    return pred


def _letter_set(s: str) -> frozenset[str] | None:
    """``A, C`` / ``(A) and (C)`` / ``AC`` as a set of letters; None if ``s`` is not only letters."""
    text = _clean(s)
    if re.fullmatch(r"[A-Z]{1,26}", text):
        return frozenset(text)
    tokens = [t.strip("()") for t in re.split(r"\s*(?:,|;|/|&|\band\b|\s)\s*", text) if t.strip("()")]
    if tokens and all(re.fullmatch(r"[A-Za-z]", t) for t in tokens):
        return frozenset(t.upper() for t in tokens)
    return None


# --- math-verify in a killable child process -------------------------------------------


class _Worker:
    """A child Python running ``_serve(library)``: one request line in, one reply line out."""

    def __init__(self, library: str = "math_verify") -> None:
        # Run this file as a script so the child imports neither mssr_cli nor torch.
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), library],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            encoding="utf-8",
        )
        if self._reply(START_TIMEOUT_S) != "ready":
            self.close()
            raise RuntimeError(f"{library} worker did not start")

    def _reply(self, timeout: float) -> str | None:
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if readable else None

    def equal(self, pred: str, gold: str) -> bool | None:
        """math-verify's verdict, or None if the child timed out or died."""
        try:
            self.proc.stdin.write(json.dumps([pred, gold]) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        return {"1": True, "0": False}.get(self._reply(TIMEOUT_S))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


_idle: dict[str, list[_Worker]] = {}  # library -> its idle children
_idle_lock = threading.Lock()
_UNAVAILABLE = {"math_verify": "math-verify unavailable, grading by normalisation only",
                "mathruler": "mathruler unavailable, every answer graded wrong"}


def _math_equal(pred: str, gold: str, library: str = "math_verify") -> bool:
    """``library``'s verdict on ``pred`` == ``gold`` in a child process: math-verify's ``verify``, or
    mathruler's ``grade_answer(pred, gold)``; False when the child takes longer than ``TIMEOUT_S``."""
    with _idle_lock:
        pool = _idle.setdefault(library, [])
        worker = pool.pop() if pool else None
    if worker is None or worker.proc.poll() is not None:
        try:
            worker = _Worker(library)
        except Exception as e:
            warnings.warn(f"{_UNAVAILABLE[library]}: {e}", stacklevel=3)
            return False
    verdict = worker.equal(pred, gold)
    if verdict is None:
        worker.close()  # it may still be computing: never hand it another request
        return False
    with _idle_lock:
        _idle.setdefault(library, []).append(worker)
    return verdict


@atexit.register
def _close_idle() -> None:
    for pool in _idle.values():
        while pool:
            pool.pop().close()


def _forget_parent_workers() -> None:
    # A forked child shares its parent's pipes; talking to those workers would interleave.
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_workers)


def _math_verify_equal():
    """math-verify's equivalence, ``(pred, gold) -> bool``, both read as the content of a box."""
    import logging

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # no "Timeout during parsing: <junk>" spam
    config = [LatexExtractionConfig(), ExprExtractionConfig()]

    def equal(pred: str, gold: str) -> bool:
        # Here in the child's main thread math-verify's own alarms work: most runaway
        # inputs end in 1 s and the child survives; the parent's kill is the backstop.
        gold_parsed = parse(f"\\boxed{{{gold}}}", config, parsing_timeout=1)
        pred_parsed = parse(f"\\boxed{{{pred}}}", config, parsing_timeout=1)
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=1))

    return equal


def _mathruler_equal():
    """mathruler's ``grade_answer(given, ground_truth)``: its sympy step has no time limit of its own."""
    import logging

    from mathruler.grader import grade_answer

    logging.getLogger("pylatexenc").setLevel(logging.ERROR)  # no "macro '\\frac' failed its substitution" per junk answer

    return lambda pred, gold: bool(grade_answer(pred, gold))


def _serve(library: str = "math_verify") -> None:
    """Child side: answer ``[pred, gold]`` JSON lines with ``1``/``0`` until stdin closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    equal = {"math_verify": _math_verify_equal, "mathruler": _mathruler_equal}[library]()
    replies, sys.stdout = sys.stdout, sys.stderr  # stray prints must not corrupt the protocol
    print("ready", file=replies, flush=True)
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            ok = equal(pred, gold)
        except BaseException:  # includes math-verify's TimeoutException, a BaseException
            ok = False
        print("1" if ok else "0", file=replies, flush=True)


if __name__ == "__main__":
    _serve(*sys.argv[1:2])
