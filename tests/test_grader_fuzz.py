"""The reward grader under fuzzing (issue 12, part 6): over 10,000 generated completion and gold pairs
(nested and unbalanced braces, huge exponents and power towers, unicode digits, LaTeX bombs, empty
and whitespace strings, NUL bytes, random unicode, megabyte strings, and mixtures of these) go
through ``accuracy_reward``; no call raises, each returns 0.0 or 1.0, and each takes under
``BOUND_S``. ``bench/grader_fuzz.py`` runs the same strategies and prints p50/p99/max per call.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

# Hypothesis caches unicode tables under ./.hypothesis by default: keep the work tree clean.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "mssr_hypothesis"))

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mssr_cli.rewards import accuracy_reward, grader  # noqa: E402

# The grader's own limit: a call that reaches it was killed, and the next call waits for a new
# child. Under it sit math-verify's 1 s alarms, which ordinary pairs can meet too (sympy spends
# over a second deciding that 2^{30} is not \log{5}); the caps keep known bombs far below.
BOUND_S = grader.TIMEOUT_S
BATCH = 10  # pairs per hypothesis example
EXAMPLES = 1_000  # x BATCH = 10,000 accuracy_reward calls (about 10 s)
MEGABYTE = 1 << 20

# --- strategies ------------------------------------------------------------------------------

UNICODE_DIGITS = (
    "0123456789"
    "٠١٢٣٤٥٦٧٨٩"  # Arabic-Indic
    "۰۱۲۳۴۵۶۷۸۹"  # extended Arabic-Indic (Persian)
    "０１２３４５６７８９"  # fullwidth
    "⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉"  # super- and subscripts: not decimals for float()
    "०१२३४५६७८९"  # Devanagari
    "𝟎𝟏𝟐𝟑𝟘𝟙𝟚𝟛"  # mathematical bold and double-struck
    "½¾⅓ⅫⅣ①②"  # vulgar fractions, Roman numerals, circled digits
)

ordinary = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.floats().map(repr),  # includes nan, inf, -0.0, 1e+300, 5e-324
    st.builds(lambda a, b: f"\\frac{{{a}}}{{{b}}}", st.integers(-99, 99), st.integers(-99, 99)),
    st.sampled_from(
        ["x", "2\\sqrt{2}", "\\pi", "(1, 2)", "A", "(B)", "C.", "\\text{yes}", "30^\\circ", "1,000", "x^{2}+1",
         "\\infty", "[0, 1)", "\\{1,2\\}", "-\\frac{\\sqrt{3}}{2}", "e^{-x^{2}}", "3!", "\\binom{5}{2}"]
    ),
)

nested_braces = st.one_of(
    # unbalanced runs either side
    st.builds(lambda n, x, m: "{" * n + x + "}" * m, st.integers(0, 3000), ordinary, st.integers(0, 3000)),
    # a deep but balanced box, and runs of box openers
    st.builds(lambda n, x: "\\boxed{" + "{" * n + x + "}" * (n + 1), st.integers(0, 3000), ordinary),
    st.builds(lambda n, x: "\\boxed{" * n + x, st.integers(1, 3000), ordinary),
    st.lists(st.sampled_from(["{", "}", "\\{", "\\}", "\\boxed{", "\\fbox{", "x", "1"]), max_size=60).map("".join),
)

huge_exponents = st.one_of(
    st.sampled_from(
        ["1e999999", "-1e999999", "1e-999999", "1e99999999999", "10^{10^{10}}", "2**99999999", "9^9^9^9",
         "9**9**9**9", "9^{9^{9^{9}}}", "2^{2^{30}}", "10^{-10000000}", "e^{10^{10}}", "(10^{10})!", "1000000!",
         "10^{10}!", "\\binom{1000000}{500000}", "(99999^{99999})^{99999}", "{10^{5}}^{10^{5}}",
         "\\sqrt[1000000]{2}", "10^{1000000}", "(2^{3})^{10^{9}}", "10^{10}^{10}", "9999^{9999\\cdot 9999}",
         "(9999\\cdot 9999)!", "9^{9 \\times 9 \\times 9 \\times 9 \\times 9 \\times 9}", "\\sum_{n=1}^{9999} n^{2}"]
    ),
    st.builds(lambda b, e: f"{b}^{{{e}}}", st.integers(-(10**6), 10**6), st.integers(-(10**15), 10**15)),
    st.builds(lambda b, e: f"{b}**{e}", st.integers(-(10**6), 10**6), st.integers(-(10**15), 10**15)),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-9, 9), st.integers(-(10**15), 10**15)),
    st.builds(lambda n, e: f"{n}!" if e else f"({n})!", st.integers(0, 10**9), st.booleans()),
    # power towers, braced, bare or parenthesised
    st.lists(st.integers(2, 99).map(str), min_size=2, max_size=6).map(lambda xs: "^{".join(xs) + "}" * (len(xs) - 1)),
    st.lists(st.integers(2, 99).map(str), min_size=2, max_size=6).map("^".join),
    st.lists(st.integers(2, 99).map(str), min_size=2, max_size=6).map(lambda xs: "(" * len(xs) + ")^".join(xs)),
)

unicode_digits = st.text(alphabet=UNICODE_DIGITS + ".,-+/^{} ", max_size=40)

BOMB_PARTS = [
    ("\\frac{1}{", "}"), ("\\frac{", "}{2}"), ("\\sqrt{", "}"), ("\\sqrt[3]{", "}"), ("\\left(", "\\right)"),
    ("(", ")"), ("[", "]"), ("{", "}"), ("({", "})"), ("x^{", "}"), ("2^{", "}"), ("\\text{", "}"),
    ("\\mathrm{", "}"), ("\\boxed{", "}"), ("<answer>", "</answer>"), ("\\left|", "\\right|"), ("|", "|"),
    ("|x", ""), ("\\|", "\\|"), ("x!", ""),
]
latex_bombs = st.builds(
    lambda part, n, x, closed: part[0] * n + x + (part[1] * n if closed else ""),
    st.sampled_from(BOMB_PARTS), st.integers(1, 500), ordinary, st.booleans(),
)

# Well-formed formulas reach math-verify and sympy; sizes straddle the grader's caps.
formula = st.recursive(
    st.one_of(st.integers(0, 10**6).map(str), st.sampled_from(["x", "y", "\\pi", "e", "0.5", "\\infty"])),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"\\frac{{{a}}}{{{b}}}", inner, inner),
        st.builds(lambda a, b: f"{a}^{{{b}}}", inner, inner),
        st.builds(lambda a, b: f"({a})**({b})", inner, inner),
        st.builds(lambda a, b, op: f"{a}{op}{b}", inner, inner, st.sampled_from(["+", "-", "\\cdot ", "*", "/", ","])),
        inner.map(lambda a: f"\\sqrt{{{a}}}"),
        inner.map(lambda a: f"({a})!"),
        inner.map(lambda a: f"\\left|{a}\\right|"),
        inner.map(lambda a: f"\\left({a}\\right)"),
        st.builds(lambda a, b: f"\\binom{{{a}}}{{{b}}}", inner, inner),
        st.builds(lambda f, a: f"\\{f}{{{a}}}", st.sampled_from(["sin", "cos", "ln", "log", "exp", "arcsin"]), inner),
        st.builds(lambda op, a, b, c: f"\\{op}_{{n={a}}}^{{{b}}} {c}", st.sampled_from(["sum", "prod"]), inner, inner,
                  inner),
        st.builds(lambda a, b, c: f"\\int_{{{a}}}^{{{b}}} {c} \\, dx", inner, inner, inner),
        st.builds(lambda a, b: f"\\lim_{{x \\to {a}}} {b}", inner, inner),
    ),
    max_leaves=10,
)

# Long runs of one motif: math-verify's time grows with length even without nesting.
repeated = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x^{y}+", "\\{1\\},", "(1,2)\\cup", "x=", "\\pi^{\\pi}", "ab ", "|x", "1,", "\\frac{x}{y}+",
                     "xy+"]),
    st.integers(1, 300),
)

blank = st.one_of(
    st.sampled_from(["", " ", "\n", "\t \r\n", "\u00a0", "\u2003\u3000", "$$", "{}", "\\boxed{}", "\\boxed{ }",
                     "<answer></answer>", "<answer> </answer>", "\\text{}", "\\!", "."]),
    st.text(alphabet=" \t\r\n\u00a0\u2028\u200b\ufeff", max_size=50),
)

nul_bytes = st.builds(lambda a, b: a + "\x00" * 3 + b, st.text(max_size=30), st.text(max_size=30))

random_unicode = st.text(max_size=200)  # hypothesis draws no surrogates by default

LATEX_TOKENS = ["{", "}", "(", ")", "[", "]", "^", "_", "\\", "!", "$", "<", ">", "/", " ", "0", "1", "9", ".",
                ",", "+", "-", "*", "=", "x", "e", "A", "\\boxed{", "\\frac", "\\sqrt", "\\left", "\\right",
                "<answer>", "</answer>", "\\text{", "^\\circ", "\\!", "\\,", "\\cdot", "\\infty", "\\pi", "\x00"]
latex_soup = st.lists(st.sampled_from(LATEX_TOKENS), max_size=80).map("".join)

fragment = st.one_of(ordinary, formula, nested_braces, huge_exponents, unicode_digits, latex_bombs, repeated, blank,
                     nul_bytes, random_unicode, latex_soup)
answer = st.one_of(fragment, st.lists(fragment, min_size=2, max_size=4).map("".join))  # mixtures


def _boxed(a: str) -> str:
    return f"\\boxed{{{a}}}"


completion = st.one_of(
    answer,
    answer.map(_boxed),
    answer.map(lambda a: f"<answer>{a}</answer>"),
    st.builds(lambda pre, a, post: f"{pre}{_boxed(a)}{post}", st.text(max_size=40), answer, st.text(max_size=40)),
    st.builds(lambda think, a: f"<think>{think}</think>{_boxed(a)}", answer, answer),
)
gold = st.one_of(answer, answer.map(lambda a: f"<answer>{a}</answer>"))
choices = st.one_of(st.none(), st.lists(st.one_of(ordinary, fragment), max_size=6))
pair = st.one_of(
    st.tuples(completion, gold, choices),
    answer.map(lambda a: (_boxed(a), a, None)),  # the same answer on both sides: the matching paths
    st.tuples(ordinary.map(_boxed), answer, st.none()),
    st.tuples(formula.map(_boxed), formula, st.none()),
)



def big_pairs(size: int):
    """Pairs with ``size``-character strings: one motif repeated, then a short tail (``999...9x``)."""
    big = st.builds(
        lambda unit, tail: unit * (size // len(unit)) + tail,
        st.sampled_from(["1", "9", "{", "}", "\\boxed{", "(", "^", "x^{", "\\frac{1}{", " ", "<answer>", "\x00", "٣",
                         "ab ", "1,"]),
        st.sampled_from(["", "x", "}", "1", "\\boxed{1}", " 1"]),
    )
    return st.one_of(
        st.tuples(big, gold),
        st.tuples(gold.map(_boxed), big),
        st.tuples(big.map(_boxed), big),
        st.tuples(big.map(lambda m: _boxed(m[: size // 2]) + m), st.just("1")),
    )


# --- the property, shared with bench/grader_fuzz.py --------------------------------------------


def timed_reward(args: tuple) -> tuple[float, float]:
    """``accuracy_reward(*args)`` and the seconds it took."""
    start = time.perf_counter()
    reward = accuracy_reward(*args)
    return reward, time.perf_counter() - start


def fuzz_accuracy_reward(strategy, examples: int, batch: int, bound_s: float = BOUND_S) -> list[float]:
    """Grade ``examples`` hypothesis draws of ``batch`` pairs each; return the seconds of every call.

    A draw is ``(completion, gold)`` or ``(completion, gold, choices)``. Each call must return 0.0 or
    1.0 without raising and take under ``bound_s``; a failure names its pair. Derandomized, so the
    same inputs come every run, and not shrunk: each shrinking step would replay seconds-long calls.
    """
    timings: list[float] = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(strategy, min_size=batch, max_size=batch))
    def run(pairs):
        for args in pairs:
            reward, elapsed = timed_reward(args)
            timings.append(elapsed)  # the first timing, stalls included: what the summary reports
            assert type(reward) is float and reward in (0.0, 1.0), (reward, args)
            if elapsed >= bound_s:  # a busy machine can stall one call; a blowup is slow every time
                elapsed = min(elapsed, timed_reward(args)[1], timed_reward(args)[1])
            assert elapsed < bound_s, f"{elapsed:.2f} s for {[a[:200] if isinstance(a, str) else a for a in args]}"

    assert accuracy_reward(r"\boxed{0.5}", r"\frac{1}{2}") == 1.0  # starts the math-verify child untimed
    run()
    return timings


def percentiles(timings: list[float]) -> str:
    """``p50, p99 and max`` of per-call seconds, in milliseconds."""
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    p50, p99, top = cuts[49] * 1e3, cuts[98] * 1e3, max(timings) * 1e3
    return f"{len(timings)} calls: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {top:.1f} ms"


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_fuzzed_pairs_never_raise_and_are_bounded():
    timings = fuzz_accuracy_reward(pair, examples=EXAMPLES, batch=BATCH)
    print("\nfuzzed pairs:", percentiles(timings))
    assert len(timings) >= 10_000


@pytest.mark.timeout(300)
def test_megabyte_pairs_never_raise_and_are_bounded():
    # 64 KB first: a super-linear path (a backtracking regex) fails there within seconds, where
    # 1 MB would hang the run; the regex engine holds the GIL, so pytest-timeout can't stop it.
    for size in (1 << 16, MEGABYTE):
        timings = fuzz_accuracy_reward(big_pairs(size), examples=30, batch=2)
        print(f"\n{size >> 10} KB pairs:", percentiles(timings))
        assert len(timings) == 60


# What the caps keep from math-verify: each would cost a second or more there (its alarm or the kill).
CAPPED = [
    "{{{{{{{{{{{{1}}}}}}}}}}}}", "\\frac{1}{" * 12 + "2" + "}" * 12, "|x" * 20, "x^{y}+" * 40,
    "10^{10^{10}}", "10^{10000000}", "9^{9^{9^{9}}}", "(99999^{99999})^{99999}", "9999^{9999\\cdot 9999}",
    "1000000!", "(10^{10})!", "(9999\\cdot 9999)!", "\\binom{\\pi}{6486}", "\\binom{1000000}{500000}", "(215-e)!",
    "\\int_{\\infty}^{528} \\infty \\, dx",
]


def test_caps_keep_slow_inputs_from_math_verify(monkeypatch):
    reached = []
    monkeypatch.setattr(grader, "_math_equal", lambda pred, gold: reached.append(pred) or False)
    for text in CAPPED:
        assert accuracy_reward(_boxed(text), "1") == 0.0
        assert accuracy_reward(_boxed("1"), text) == 0.0
    assert reached == []
    # ordinary answers, factorials and binomials of small numbers still get there
    for text in ["\\frac{1}{2}", "2^{10} \\cdot 3^{5}", "\\frac{10!}{3!7!}", "\\binom{10}{3}", "e^{-x^{2}}", "|x|+|y|"]:
        accuracy_reward(_boxed(text), "0.25")
    assert len(reached) == 6


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ordinary)
def test_ordinary_answers_still_match_themselves(a):
    # The caps that bound the fuzzed calls must leave ordinary answers graded as before.
    assert accuracy_reward(_boxed(a), a) == 1.0
    assert accuracy_reward(f"<answer>{a}</answer>", f"<answer>{a}</answer>") == 1.0
