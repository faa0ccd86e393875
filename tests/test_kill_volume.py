"""Kills at volume: a tiny run SIGKILLed a dozen times, at random moments of every phase, ends exactly as an
uninterrupted run of the same seed.

Each attempt is the same command (``mssr train ... --run-dir RUN``): a folder holding this run resumes from
its newest verifying checkpoint, or starts afresh when it has none. The kill moments are drawn (seeded)
after events seen from outside the process: the run folder printed (model load, tracker warm start or
checkpoint load), a metrics line written (generation and the optimizer step of the next RL step; after an
odd step, the validation of the next), a checkpoint being staged (checkpoint writing), the final model
being written. ``python -m pytest tests/test_kill_volume.py -s`` prints where each kill landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mssr_cli.runs.folder import RunFolder

RUN = ["train.max_steps=12", "train.save_every=2", "train.eval_every=2", "train.rollouts_per_step=8",
       "data.train_limit=16", "data.val_limit=20", "train.num_threads=2", "logging.wandb=disabled",
       "logging.progress=false", "train.log_samples_every=3", "train.log_samples=2"]
# (trigger, phase it aims at): drawn in this order, one per attempt; the last attempt runs to the end
SCHEDULE = [
    ("started", "model load / tracker warm start"),
    ("started", "model load / tracker warm start"),
    ("row", "generation / optimizer step"),
    ("staging", "checkpoint writing"),
    ("row", "generation / optimizer step"),
    ("odd_row", "validation"),
    ("started", "checkpoint load (resume)"),
    ("staging", "checkpoint writing"),
    ("row", "generation / optimizer step"),
    ("odd_row", "validation"),
    ("staging", "checkpoint writing"),
    ("final_model", "final model save"),
]


def _start(run: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mssr_cli", "train", *RUN, "--run-dir", str(run)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in RunFolder(run).read_metrics()]


def _wait(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """Poll ``ready()`` every 2 ms; False if the process ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.002)
    pytest.fail("the run made no progress for 300 s")


def _fresh(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def _attempt(run: Path, trigger: str, rng: random.Random) -> bool:
    """Start the command, wait for ``trigger`` (an event of this attempt, not a leftover of the last one),
    sleep a drawn moment, SIGKILL. True if the kill landed (the run was still going)."""
    started = time.time()
    proc = _start(run)
    if trigger == "started":
        ok = _wait(proc, lambda: _fresh(run / ".lock", started))
        delay = rng.uniform(0.5, 6.0)
    elif trigger in ("row", "odd_row"):
        def ready():  # a line this attempt wrote (resuming first rewrites the file up to its checkpoint)
            steps = _steps(run) if _fresh(run / "metrics.jsonl", started) else []
            return bool(steps) and steps[-1] > 0 and (trigger == "row" or steps[-1] % 2 == 1)
        ok = _wait(proc, ready)
        delay = rng.uniform(0.0, 1.0)
    elif trigger == "staging":
        ok = _wait(proc, lambda: any(_fresh(p, started) for p in (run / "checkpoints" / ".staging").glob("checkpoint-*")))
        delay = rng.uniform(0.0, 0.05)
    else:  # final_model
        ok = _wait(proc, lambda: _fresh(run / ".model.partial", started))
        delay = rng.uniform(0.0, 0.05)
    if ok:
        time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert alive or proc.returncode == 0, out[-3000:]
    return alive


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_a_dozen_random_kills_end_like_an_uninterrupted_run(tmp_path, tiny_policy_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    proc = _start(reference)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    rng = random.Random(12)
    landed = []
    for trigger, phase in SCHEDULE:
        if _attempt(killed, trigger, rng):
            steps = _steps(killed)
            landed.append(f"{phase} (after step {steps[-1] if steps else '-'})")
    print("\n".join(["kills survived:", *landed]))
    assert len(landed) >= 10, landed

    proc = _start(killed)  # the same command once more, left alone
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    # metrics: every step exactly once and in order, the same numbers as the uninterrupted run
    ours, theirs = RunFolder(killed).read_metrics(), RunFolder(reference).read_metrics()
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == list(range(13))
    for a, b in zip(ours, theirs, strict=True):
        for key in set(a) | set(b):
            if key.startswith("time/"):
                continue
            expected = b.get(key)
            if isinstance(expected, float):
                expected = pytest.approx(expected, rel=1e-5, abs=1e-7)
            assert a.get(key) == expected, (a["step"], key)
    # samples.jsonl: the same rollouts, each logged once (a replayed step's are not appended twice)
    samples = [json.loads(line) for line in (killed / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [3, 3, 6, 6, 9, 9, 12, 12]
    expected = [json.loads(line) for line in (reference / "samples.jsonl").read_text().splitlines()]
    for a, b in zip(samples, expected, strict=True):
        assert {k: a[k] for k in ("step", "id", "completion", "reward")} == {k: b[k] for k in ("step", "id", "completion", "reward")}
        assert (a["advantage"], a["entropy"]) == pytest.approx((b["advantage"], b["entropy"]), rel=1e-5, abs=1e-7)
    # the value tracker and detector state, and the final weights
    state = json.loads((killed / "checkpoints/checkpoint-12/mssr_state.json").read_text())
    assert state == json.loads((reference / "checkpoints/checkpoint-12/mssr_state.json").read_text())
    a, b = _safetensors(killed / "model" / "model.safetensors"), _safetensors(reference / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name].float() - b[name].float()).abs().max().item() <= 1e-5, name
    assert json.loads((killed / "summary.json").read_text())["steps"] == 12
    assert not (killed / ".lock").exists() and not (killed / ".model.partial").exists()
