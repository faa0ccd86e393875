"""`mssr eval --benchmarks mathvista,mathverse` as written: no --model evaluates the newest finished run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error

from mssr_cli.runs.finished import finished_runs, newest_finished_run
from mssr_cli.runs.lock import acquire
from test_eval_data import write_local_copy

NOW = time.time()


def _run(root: Path, name: str, finished_hours_ago: float | None, model: Path | None = None, summary: str = "{}") -> Path:
    """A run folder: model/ (a copy of ``model``, else a config.json alone) and, when it finished, summary.json
    dated ``finished_hours_ago``; metrics.jsonl either way, as `mssr train` writes it from the first step."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 0, "val/accuracy": 0.1}\n')
    if model is not None:
        shutil.copytree(model, folder / "model")
    else:
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text("{}")
    if finished_hours_ago is not None:
        (folder / "summary.json").write_text(summary)
        when = NOW - 3600 * finished_hours_ago
        os.utime(folder / "summary.json", (when, when))
    return folder


def _mssr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])})




def test_the_newest_finished_run_is_chosen_and_the_others_are_not(tmp_path):
    runs = tmp_path / "runs"
    old = _run(runs, "mssr__digits__tiny__s0__a", finished_hours_ago=30)
    newest = _run(runs, "grpo__digits__tiny__s0__b", finished_hours_ago=2)
    nested = _run(runs / "ablate__mssr__x", "no_shaping__s0", finished_hours_ago=5)  # an ablation's run
    _run(runs, "mssr__digits__tiny__s1__crashed", finished_hours_ago=None)  # no summary.json
    _run(runs, "mssr__digits__tiny__s2__torn", finished_hours_ago=0.5, summary='{"steps": 3')  # not JSON
    no_model = _run(runs, "mssr__digits__tiny__s3__nomodel", finished_hours_ago=0.5)
    shutil.rmtree(no_model / "model")
    running = _run(runs, "mssr__digits__tiny__s4__running", finished_hours_ago=0.1)  # being resumed right now
    (runs / "eval__tiny__20260101-000000").mkdir()  # `mssr eval --model tiny`'s output: no run
    (runs / "eval__tiny__20260101-000000" / "summary.json").write_text("{}")
    with acquire(running):
        assert [r.path for r in finished_runs(runs)] == [newest, nested, old]
        assert newest_finished_run(runs).path == newest
        assert newest_finished_run(runs).finished == pytest.approx(NOW - 2 * 3600)
    assert newest_finished_run(runs).path == running  # its lock released: finished, and the newest
    assert newest_finished_run(tmp_path / "missing") is None and finished_runs(tmp_path / "missing") == []


def test_eval_without_model_evaluates_the_newest_finished_run(tmp_path, tiny_policy_path):
    """The promised line, with local copies of the two benchmarks and a short answer length."""
    data = tmp_path / "data"
    for name in ("mathvista", "mathverse"):
        write_local_copy(name, data)
    runs = tmp_path / "runs"
    _run(runs, "mssr__digits__tiny__s0__older", finished_hours_ago=24)  # a config.json alone: would fail to load
    chosen = _run(runs, "mssr__digits__tiny__s1__newest", finished_hours_ago=1, model=Path(tiny_policy_path))
    out = _mssr("eval", "--benchmarks", "mathvista,mathverse", "--data-dir", str(data), "--limit", "2",
                "--max-new-tokens", "8", "--batch-size", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 3600))
    first = out.stdout.splitlines()[0]
    assert first == f"evaluating the newest finished run: runs/{chosen.name} (finished {when})", out.stdout
    summary = json.loads((chosen / "eval" / "summary.json").read_text())
    assert summary["run"] == f"runs/{chosen.name}" and list(summary["benchmarks"]) == ["mathvista", "mathverse"]
    assert not (runs / "mssr__digits__tiny__s0__older" / "eval").exists()


def test_eval_without_model_and_no_finished_run_says_how_to_pass_one(tmp_path):
    out = _mssr("eval", "--benchmarks", "mathvista,mathverse", cwd=tmp_path)  # no runs folder at all
    one_line_error(out, "no --model given", "no runs folder runs", "pass --model")
    runs = tmp_path / "runs"
    _run(runs, "mssr__digits__tiny__s0__crashed", finished_hours_ago=None)
    running = _run(runs, "mssr__digits__tiny__s1__running", finished_hours_ago=1)
    with acquire(running):  # a live process holds it (this one): not finished
        out = _mssr("eval", "--benchmarks", "mathvista,mathverse", cwd=tmp_path)
    one_line_error(out, "no --model given", "no finished run in runs", "pass --model", "tiny")
    out = _mssr("eval", "--benchmarks", "mathvista", "--runs-root", str(tmp_path / "elsewhere"), cwd=tmp_path)
    one_line_error(out, f"no runs folder {tmp_path / 'elsewhere'}", "--model")
    out = _mssr("eval", "--benchmarks", "mathvista", "--model", "tiny", "--runs-root", "runs", cwd=tmp_path)
    one_line_error(out, "--model and --runs-root")
