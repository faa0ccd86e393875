"""Shared by the tests that train on several processes (test_multiprocess, test_multinode): one small run
configuration, a way to start `mssr train` as a subprocess, and the comparison with one process.

Both compare a run on several processes with the same run on one process at the same global batch
(conftest's session fixture ``one_process_run`` trains the latter once for both files).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

# One optimizer update per RL step made of 2 micro-batches (gradient accumulation): with 2
# processes each takes half of every micro-batch, so the global batch is the same 8 rollouts.
# top_p -> 0 makes sampling greedy (test_multiprocess.test_two_processes_train_like_one says why);
# the tracker warm start is off (greedy rollouts would make every advantage 0).
COMMON = ["train.max_steps=3", "train.rollouts_per_step=8", "train.micro_batch_size=4", "data.train_limit=64",
          "data.val_limit=16", "train.eval_every=3", "train.save_every=3", "train.num_threads=1",
          "logging.wandb=disabled", "logging.progress=false",
          "train.top_p=1e-6", "algo.tracker.warm_start=false"]

COMPARED = ["train/reward", "train/accuracy", "train/loss", "collapse/entropy", "collapse/kl_ref", "collapse/grad_norm",
            "collapse/adv_abs_mean", "collapse/adv_std", "collapse/adv_max", "collapse/shaping_mean",
            "collapse/shaping_cap_frac", "tracker/rho", "tracker/value_mean", "tracker/prompts"]


def mssr(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``mssr ARGS`` in a subprocess, to the end."""
    return subprocess.run([sys.executable, "-m", "mssr_cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start_mssr(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``mssr ARGS`` started in its own process group (``finish`` can stop it with everything it launched)."""
    return subprocess.Popen([sys.executable, "-m", "mssr_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: int) -> list[subprocess.CompletedProcess]:
    """Wait for processes started together; past ``timeout`` seconds (a rendezvous that never completes)
    stop the process groups they started and fail."""
    done, deadline = [], time.monotonic() + timeout
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: mssr, accelerate, its workers
            proc.communicate()
        pytest.fail(f"still running after {timeout} s: {[p.args[3:] for p in procs]}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tracker(run) -> dict:
    return json.loads((run / "checkpoints" / "checkpoint-3" / "mssr_state.json").read_text())["estimator"]["tracker"]


def assert_trains_like_one(one, many) -> None:
    """The run in ``many`` (several processes) logged the same metrics and ended with the same value tracker as
    the one-process run in ``one``."""
    a, b = metrics(one), metrics(many)
    assert [m["step"] for m in b] == [0, 1, 2, 3], "one line per step, written once"
    assert any(m["collapse/adv_abs_mean"] > 0.1 for m in a[1:]), "the test needs a real learning signal"
    for x, y in zip(a, b, strict=True):
        for key in [k for k in COMPARED if k in x] + [k for k in ("val/accuracy", "val/format_rate") if k in x]:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), (x["step"], key)

    ta, tb = tracker(one), tracker(many)
    assert ta["num_updates"] == tb["num_updates"] == 3
    assert tb["kl_window"] == pytest.approx(ta["kl_window"], rel=1e-4, abs=1e-8)
    assert tb["last_rho"] == pytest.approx(ta["last_rho"], rel=1e-6)
    pa, pb = ({p[0]: p[1:] for p in t["prompts"]} for t in (ta, tb))
    assert pa.keys() == pb.keys() and len(pa) == 24  # 3 steps x 8 prompts, none seen twice
    for prompt, (alpha, beta) in pa.items():
        assert pb[prompt] == pytest.approx([alpha, beta], rel=1e-5), prompt
