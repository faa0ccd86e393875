"""Every command's bad arguments end the same way, through the command line: exit 2, one line
``error: ...`` on stderr naming what, where and the valid choices, no traceback, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error

from mssr_cli.config.paths import group_options

SWEEP_COMMAND = 'command: [mssr, train, "${args_no_hyphens}"]\n'
# Were a refusal missing, the runs would start: keep them seconds long, so such a test fails, not hangs.
CHEAP = ["train.max_steps=1", "train.rollouts_per_step=8", "data.val_limit=4", "logging.wandb=disabled",
         "algo.tracker.warm_start=false", "train.save_every=0"]


def _mssr(*args: str, env: dict | None = None, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    return out, time.monotonic() - started




@pytest.fixture()
def empty_hf_home(tmp_path):
    """A Hugging Face home with nothing cached, and the Hub unreachable (offline mode)."""
    home = tmp_path / "hf_home"
    home.mkdir()
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}


# --- mssr eval --------------------------------------------------------------------------------


def test_eval_unknown_benchmark():
    out, _ = _mssr("eval", "--benchmarks", "digits,mathvistaa", "--model", "tiny")
    one_line_error(out, "unknown benchmark 'mathvistaa'", "valid names: digits, mathvista")


def test_eval_model_path_that_does_not_exist_says_so():
    out, took = _mssr("eval", "--benchmarks", "digits", "--model", "/no/such/path")
    line = one_line_error(out, "--model /no/such/path", "no such folder /no/such/path", "a run folder", "tiny")
    assert "repo" not in line.lower() and took < 30


@pytest.mark.parametrize("model", ["empty", "file"])
def test_eval_model_folder_that_is_no_model(tmp_path, model):
    path = tmp_path / model
    path.mkdir() if model == "empty" else path.write_text("x")
    out, _ = _mssr("eval", "--benchmarks", "digits", "--model", str(path))
    one_line_error(out, f"--model {path}", "neither a run folder" if model == "empty" else "is a file")


def test_eval_empty_model():
    out, _ = _mssr("eval", "--benchmarks", "digits", "--model", "")
    one_line_error(out, "--model is empty", ", ".join(group_options("model")))


@pytest.mark.parametrize("model", ["no-such-org/no-such-model", "qwen2vl-2b"])
def test_eval_hub_id_offline_and_not_cached(model, empty_hf_home):
    out, took = _mssr("eval", "--benchmarks", "digits", "--model", model, env=empty_hf_home)
    hub_id = "Qwen/Qwen2-VL-2B-Instruct" if model == "qwen2vl-2b" else model
    one_line_error(out, f"cannot load --model {model}", empty_hf_home["HF_HUB_CACHE"], "HF_HUB_OFFLINE=1",
                    f"hf download {hub_id} --local-dir DIR", "then pass --model DIR")
    assert took < 30, took


def test_eval_bad_judge_timeout():
    out, _ = _mssr("eval", "--benchmarks", "digits", "--model", "tiny", "--judge-timeout", "0")
    one_line_error(out, "--judge-timeout must be > 0")


# --- mssr train (the model check it shares with eval) -------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["model=qwen2vl-2b", "model.name_or_path=/no/such/model"])
def test_train_model_that_cannot_load_fails_in_seconds(tmp_path, model, empty_hf_home):
    # data=digits: the preset's own data (Vision-R1) would fail first, offline; launcher=none: no GPU here
    out, took = _mssr("train", model, "data=digits", "launcher=none", "--run-dir", str(tmp_path / "run"),
                      env=empty_hf_home, timeout=240)
    if model == "model=qwen2vl-2b":
        one_line_error(out, "model.name_or_path=Qwen/Qwen2-VL-2B-Instruct", empty_hf_home["HF_HUB_CACHE"],
                        "HF_HUB_OFFLINE=1", "hf download Qwen/Qwen2-VL-2B-Instruct --local-dir DIR",
                        "then pass model.name_or_path=DIR")
    else:
        one_line_error(out, "model.name_or_path=/no/such/model: no such folder /no/such/model")
    assert took < 120, took  # no retries: before, 8 s offline to a traceback, 2.5 min without network


# --- mssr compare -------------------------------------------------------------------------------


def test_compare_missing_and_empty_folders(tmp_path):
    out, _ = _mssr("compare", str(tmp_path / "missing"))
    one_line_error(out, f"not a folder: {tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    out, _ = _mssr("compare", str(tmp_path / "empty"))
    one_line_error(out, f"no run folders in {tmp_path / 'empty'}")


def test_compare_unknown_metric(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "val/accuracy": 0.5}) + "\n")
    out, _ = _mssr("compare", str(run), "--metric", "val/acc")
    one_line_error(out, "no run logged metric 'val/acc'", "logged: val/accuracy")


# --- mssr ablate --------------------------------------------------------------------------------


def test_ablate_unknown_variant_and_bad_seeds():
    out, _ = _mssr("ablate", "--variants", "no_shaping,bogus")
    one_line_error(out, "unknown variant(s) bogus", "valid variants: ", "no_shaping")
    out, _ = _mssr("ablate", "--seeds", "0")
    one_line_error(out, "--seeds 0")


def test_ablate_without_validation_is_refused_before_any_run(tmp_path):
    out, took = _mssr("ablate", "--no-shaping", "train.eval_every=0", *CHEAP, "--out", str(tmp_path / "ablation"))
    one_line_error(out, "train.eval_every=0", "val/accuracy", "train.eval_every=N")
    assert not (tmp_path / "ablation").exists() and took < 30


def test_ablate_with_nothing_to_compare_is_one_line(tmp_path):
    """Runs finished earlier (summary.json) but without metrics: compare has nothing; one line, not a traceback."""
    out_dir = tmp_path / "ablation"
    for name in ("mssr__s0", "no_shaping__s0"):  # the planned runs, skipped as finished
        (out_dir / name).mkdir(parents=True)
        (out_dir / name / "summary.json").write_text("{}")
    out, _ = _mssr("ablate", "--no-shaping", "--out", str(out_dir))
    one_line_error(out, "compare after the runs:", "no readable runs")


# --- mssr sweep ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    (None, ["no such sweep file"]),
    ("folder", ["a folder, not a sweep file"]),
    (b"\xff\xfe\x00", ["not a text file"]),
    ("method: grid\nparameters: [\n", ["not valid YAML"]),
    ("method: sideways\nparameters: {}\n" + SWEEP_COMMAND, ["method=sideways", "grid, random, bayes"]),
    ("method: random\nparameters: {algo.shaping.alpha: {distribution: uniform}}\n" + SWEEP_COMMAND,
     ["parameter algo.shaping.alpha", "needs numeric min and max"]),
    ("method: grid\nparameters: {algo.shaping.alpha: {values: []}}\n" + SWEEP_COMMAND,
     ["parameter algo.shaping.alpha", "non-empty list"]),
    ("method: grid\nparameters: {train.bogus: {values: [1]}}\n" + SWEEP_COMMAND, ["unknown key 'train.bogus'"]),
    ("method: grid\nmetric: 3\nparameters: {seed: {values: [0]}}\n" + SWEEP_COMMAND, ["metric must be a mapping"]),
], ids=["missing", "folder", "binary", "yaml", "method", "distribution", "empty_values", "unknown_key", "metric"])
def test_sweep_bad_files(tmp_path, text, words):
    path = tmp_path / "sweep.yaml"
    if text == "folder":
        path.mkdir()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    out, _ = _mssr("sweep", str(path), "--local", "--dry-run")
    one_line_error(out, *words)


def test_sweep_bad_options_and_no_validation(tmp_path):
    path = Path(__file__).resolve().parents[1] / "sweeps" / "mssr_shaping.yaml"
    out, _ = _mssr("sweep", str(path), "--local", "--max-runs", "0")
    one_line_error(out, "--max-runs 0")
    out, _ = _mssr("sweep", str(path))
    one_line_error(out, "wandb agent", "--local")
    out, _ = _mssr("sweep", str(path), "train.eval_every=0", *CHEAP, "--local", "--max-runs", "1", "--out", str(tmp_path / "sweep"))
    one_line_error(out, "train.eval_every=0", "val/accuracy")
    assert not (tmp_path / "sweep").exists()


def test_sweep_with_nothing_to_compare_is_one_line(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("method: grid\nparameters: {algo.shaping.alpha: {values: [0.1]}}\n" + SWEEP_COMMAND)
    (tmp_path / "sweep" / "000__base").mkdir(parents=True)  # the one planned run, finished earlier without metrics
    (tmp_path / "sweep" / "000__base" / "summary.json").write_text("{}")
    out, _ = _mssr("sweep", str(path), "--local", "--out", str(tmp_path / "sweep"))
    one_line_error(out, "compare after the runs:", "no readable runs")
