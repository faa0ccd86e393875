"""Step time of GRPO, MVSR and MSSR on the embedded default at equal rollouts per step, side by side.

Each round runs one short training of every algorithm, one after the other (GRPO, MVSR, MSSR,
GRPO, ...), so machine noise hits all three alike. Validation, checkpoints, W&B and the tracker
warm start are off: what is timed is the RL step (generation, rewards, advantages, the loss
with shaping, the update). The first step of each run is dropped (warm-up). Prints the median
step time of each algorithm and the ratios to GRPO. Goal: MSSR/GRPO and MVSR/GRPO <= 1.00
(the paper's own implementation pays 1.13-1.15).

    .venv/bin/python bench/step_time.py [--rounds 3] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ALGOS = ["grpo", "mvsr", "mssr"]


def run_once(algo: str, steps: int, seed: int, folder: Path) -> list[float]:
    run = folder / f"{algo}-{seed}"
    args = [f"algo={algo}", f"seed={seed}", f"train.max_steps={steps}", "train.eval_every=0", "train.save_every=0",
            "logging.wandb=disabled", "logging.progress=false", "algo.tracker.warm_start=false"]
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    out = subprocess.run([sys.executable, "-c", code, "train", *args, "--run-dir", str(run)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{algo} run failed:\n{out.stderr[-3000:]}")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["time/step_seconds"] for m in lines if m.get("step", 0) > 1 and "time/step_seconds" in m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    opts = parser.parse_args()
    times: dict[str, list[float]] = {a: [] for a in ALGOS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            for algo in ALGOS:
                times[algo] += run_once(algo, opts.steps, r, Path(tmp))
                print(f"round {r + 1}/{opts.rounds} {algo}: {len(times[algo])} steps timed", file=sys.stderr)
    base = statistics.median(times["grpo"])
    print(f"{'algorithm':<10} {'steps':>6} {'median s/step':>14} {'ratio to GRPO':>14}")
    for algo in ALGOS:
        med = statistics.median(times[algo])
        print(f"{algo:<10} {len(times[algo]):>6} {med:>14.3f} {med / base:>14.2f}")


if __name__ == "__main__":
    main()
