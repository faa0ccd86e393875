"""Step time of the algorithms on the embedded default at equal rollouts per step, side by side.

Each round runs one short training of every algorithm, one after the other (GRPO, MVSR, MSSR,
then the next round in reverse order), so machine noise and position in the round hit all alike. Validation, checkpoints, W&B and the tracker
warm start are off: what is timed is the RL step (generation, rewards, advantages, the loss
with shaping, the update). The first step of each run is dropped (warm-up). Prints the median
step time of each algorithm and the ratios to GRPO. Goal: MSSR/GRPO and MVSR/GRPO <= 1.00
(the paper's own implementation pays 1.13-1.15).

    .venv/bin/python bench/step_time.py [--rounds 3] [--steps 12] [--algos grpo,mvsr,mssr] [--tracker-kl] [--before DIR]

--algos times other algorithms of conf/algo/ (e.g. grpo,rloo,reinforce_pp,mssr: the reference code's baselines);
GRPO and MSSR, the ratios' references, are always timed.

--tracker-kl adds what the value tracker's KL costs: MSSR with several optimizer updates per step
(mini-batch 32 of 128: the KL comes from TRL's generation-time log-probs), and MSSR with
algo.kl_coef=0, with and without the reference pass the tracker then needs for itself.
--before DIR adds MSSR run from another source tree (e.g. `git worktree add /tmp/before <rev>`),
interleaved with the rest, to time a change side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import os

ALGOS = ["grpo", "mvsr", "mssr"]
TRACKER_KL = {  # variant -> overrides on top of algo=mssr
    "mssr_4updates": ["algo=mssr", "train.minibatch_size=32"],
    "mssr_kl0": ["algo=mssr", "algo.kl_coef=0"],
    "mssr_kl0_no_ref": ["algo=mssr", "algo.kl_coef=0", "algo.tracker.always_measure_kl=false"],
}


def run_once(variant: str, steps: int, seed: int, folder: Path, before: str | None = None) -> list[float]:
    run = folder / f"{variant}-{seed}"
    chosen = TRACKER_KL.get(variant, [f"algo={variant.split('@')[0]}"])
    args = [*chosen, f"seed={seed}", f"train.max_steps={steps}", "train.eval_every=0", "train.save_every=0",
            "logging.wandb=disabled", "logging.progress=false", "algo.tracker.warm_start=false"]
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    env = dict(os.environ)
    if variant.endswith("@before"):  # import mssr_cli (and its conf/) from the other tree
        env["PYTHONPATH"] = before + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code, "train", *args, "--run-dir", str(run)],
                         capture_output=True, text=True, env=env, cwd=before if variant.endswith("@before") else None)
    if out.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{out.stderr[-3000:]}")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["time/step_seconds"] for m in lines if m.get("step", 0) > 1 and "time/step_seconds" in m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--algos", default=",".join(ALGOS), help="algorithms to time, comma-separated (grpo and mssr always)")
    parser.add_argument("--tracker-kl", action="store_true", help="also time the tracker-KL variants")
    parser.add_argument("--before", default=None, help="another source tree: also time its MSSR (mssr@before)")
    opts = parser.parse_args()
    algos = list(dict.fromkeys(["grpo", *opts.algos.split(","), "mssr"]))  # the ratios' references first and last
    variants = [*algos, *(TRACKER_KL if opts.tracker_kl else []), *(["mssr@before"] if opts.before else [])]
    before = str(Path(opts.before).resolve()) if opts.before else None
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            for variant in (variants if r % 2 == 0 else variants[::-1]):  # alternate: no variant always runs last
                times[variant] += run_once(variant, opts.steps, r, Path(tmp), before)
                print(f"round {r + 1}/{opts.rounds} {variant}: {len(times[variant])} steps timed", file=sys.stderr)
    base, mssr = statistics.median(times["grpo"]), statistics.median(times["mssr"])
    print(f"{'variant':<16} {'steps':>6} {'median s/step':>14} {'ratio to GRPO':>14} {'ratio to MSSR':>14}")
    for variant in variants:
        med = statistics.median(times[variant])
        print(f"{variant:<16} {len(times[variant]):>6} {med:>14.3f} {med / base:>14.2f} {med / mssr:>14.2f}")


if __name__ == "__main__":
    main()
