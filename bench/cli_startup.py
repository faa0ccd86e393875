"""Start-up time of `mssr --help` and `mssr train --help` against `trl grpo --help`, side by side.

The commands run interleaved (A, B, C, A, B, C, ...) so machine noise hits all alike; the script
prints each median and the ratios. Target: `mssr --help` median <= 0.3 s.

    .venv/bin/python bench/cli_startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def command(name: str, *args: str) -> list[str]:
    exe = BIN / name
    return [str(exe if exe.exists() else shutil.which(name) or name), *args]


COMMANDS = {
    "mssr --help": command("mssr", "--help"),
    "mssr train --help": command("mssr", "train", "--help"),
    "trl grpo --help": command("trl", "grpo", "--help"),
}


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    for argv in COMMANDS.values():  # warm the file cache once
        time_once(argv)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, argv in COMMANDS.items():
            samples[name].append(time_once(argv))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    reference = medians["trl grpo --help"]
    print(f"{'command':<20} {'median s':>9} {'min s':>7} {'vs trl grpo --help':>19}")
    for name, times in samples.items():
        print(f"{name:<20} {medians[name]:>9.3f} {min(times):>7.3f} {medians[name] / reference:>18.2f}x")
    verdict = "OK" if medians["mssr --help"] <= 0.3 else "OVER"
    print(f"mssr --help median {medians['mssr --help']:.3f} s (target <= 0.3 s): {verdict}")


if __name__ == "__main__":
    main()
