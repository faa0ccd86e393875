"""Time per `accuracy_reward` call on the fuzzed completion and gold pairs of tests/test_grader_fuzz.py.

Runs the test's hypothesis strategies (the same derandomized draws for the same sizes) and prints
p50, p99 and max seconds per call, for the mixed pairs and the megabyte pairs. Every call must
also pass the test's checks (a 0.0/1.0 reward, under the grader's TIMEOUT_S).

    .venv/bin/python bench/grader_fuzz.py [--examples 1000] [--batch 10] [--megabyte-examples 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_grader_fuzz as fuzz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=fuzz.EXAMPLES, help="hypothesis draws of mixed pairs")
    parser.add_argument("--batch", type=int, default=fuzz.BATCH, help="pairs per draw")
    parser.add_argument("--megabyte-examples", type=int, default=30, help="draws of 2 megabyte pairs")
    args = parser.parse_args()

    started = time.perf_counter()
    mixed = fuzz.fuzz_accuracy_reward(fuzz.pair, examples=args.examples, batch=args.batch)
    print("fuzzed pairs:  ", fuzz.percentiles(mixed))
    if args.megabyte_examples:
        huge = fuzz.fuzz_accuracy_reward(fuzz.big_pairs(fuzz.MEGABYTE), examples=args.megabyte_examples, batch=2)
        print("megabyte pairs:", fuzz.percentiles(huge))
        print("all:           ", fuzz.percentiles(mixed + huge))
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
