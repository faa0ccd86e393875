"""How often the two graders (reward.grader: math_verify, mathruler) disagree on the grader's own test cases.

Reads the parametrize tables of the accuracy grader's tests (tests/test_rewards.py) as they stand, grades each
case with both graders and prints, per table, how many verdicts change and a few examples. Two more sections:
tests/test_graders.py's table (picked to show the differences, so not a rate), and the comparison step alone on
the eval matching table of tests/test_eval_grading.py (match_answer with the benchmark's rules vs mathruler's
grade_answer on the same extracted answer).

    .venv/bin/python bench/grader_agreement.py [--examples 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_eval_grading  # noqa: E402
import test_graders  # noqa: E402
import test_rewards  # noqa: E402

from mssr_cli.rewards import accuracy_reward, match_answer  # noqa: E402
from mssr_cli.rewards.reference_grader import matches  # noqa: E402


def table(test) -> list[dict]:
    """The rows of ``test``'s ``pytest.mark.parametrize``, each as {argument name: value}."""
    mark = next(m for m in test.pytestmark if m.name == "parametrize")
    names = mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0]
    rows = [getattr(v, "values", v) for v in mark.args[1]]  # pytest.param(...) or a plain tuple
    return [dict(zip([n.strip() for n in names], row if isinstance(row, tuple) else (row,), strict=True)) for row in rows]


def reward_cases() -> dict[str, list[tuple]]:
    """{table: [(completion, gold, choices)]} from the accuracy grader's tests."""
    gold_of = {"test_garbage_is_wrong_and_fast": "1"}  # these grade every completion against "1"
    choices_of = {"test_multiple_choice": test_rewards.CHOICES}
    out = {}
    for name in ("test_accuracy", "test_multiple_choice", "test_accuracy_normalises_gold_and_response_like_the_reference",
                 "test_garbage_is_wrong_and_fast"):
        rows = table(getattr(test_rewards, name))
        out[f"test_rewards.{name}"] = [(r["completion"], r.get("answer", gold_of.get(name)), choices_of.get(name))
                                       for r in rows]
    return out


def short(value, width: int = 48) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def report(title: str, verdicts: list[tuple[str, bool, bool]], examples: int) -> tuple[int, int]:
    """Print one section: how many of the (case, math_verify, mathruler) verdicts differ, and examples."""
    changed = [(case, mv, mr) for case, mv, mr in verdicts if mv != mr]
    only_ours = sum(1 for _, mv, _ in changed if mv)
    print(f"{title}: {len(changed)} of {len(verdicts)} change verdict "
          f"({only_ours} right only for math_verify, {len(changed) - only_ours} right only for mathruler)")
    for case, mv, mr in changed[:examples]:
        print(f"    {case}: math_verify {int(mv)}, mathruler {int(mr)}")
    return len(changed), len(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4, help="disagreements shown per table")
    args = parser.parse_args()
    started = time.perf_counter()

    def both(completion, gold, choices):
        case = f"{short(completion)} vs gold {short(gold, 28)}" + (f" (choices {choices})" if choices else "")
        return (case, accuracy_reward(completion, gold, choices) == 1.0,
                accuracy_reward(completion, gold, choices, grader="mathruler") == 1.0)

    changed = total = 0
    for name, cases in reward_cases().items():
        c, n = report(name, [both(*case) for case in cases], args.examples)
        changed, total = changed + c, total + n
    print(f"accuracy grader tables: {changed} of {total} cases change verdict between the graders\n")

    report("test_graders.CASES (chosen to differ)", [both(*row[:3]) for row in test_graders.CASES], args.examples)
    rows = table(test_eval_grading.test_match_answer)
    report("test_eval_grading.test_match_answer (comparison step only)",
           [(f"{short(r['pred'], 20)} vs gold {short(r['gold'], 20)} {r['kwargs'] or ''}",
             match_answer(r["pred"], r["gold"], **r["kwargs"]), matches(r["pred"], r["gold"])) for r in rows],
           args.examples)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
