"""W&B sweeps for real: under `wandb agent` a run reports online to the agent's sweep, and the metric each
sweep file ranks on is in every run's final W&B summary. Never contacts a server: ``wandb.init`` is a spy."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.experiments.sweep import load_sweep
from mssr_cli.runs import wandb_run
from mssr_cli.runs.folder import RunFolder, wandb_id
from mssr_cli.runs.wandb_run import RECORD, SWEEP_METRICS
from mssr_cli.training import runner

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
AGENT = {"WANDB_SWEEP_ID": "swp0abc1", "WANDB_RUN_ID": "agentrun7", "WANDB_PROJECT": "agent-project",
         "WANDB_ENTITY": "agent-team"}


@pytest.fixture()
def agent_env(monkeypatch, tmp_path):
    """The environment `wandb agent` starts `mssr train ${args_no_hyphens}` in (wandb/wandb_agent.py)."""
    for key, value in AGENT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(tmp_path / "config-agentrun7.yaml"))
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the agent sets none; conftest's offline would hide the bug
    return AGENT


@pytest.fixture()
def no_agent_env(monkeypatch):
    for key in wandb_run.AGENT_VARS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture()
def init_spy(monkeypatch):
    """``wandb.init`` replaced: records its keyword arguments and returns a run as W&B would name it."""
    import wandb

    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(id=kwargs.get("id") or AGENT["WANDB_RUN_ID"], project=kwargs.get("project") or "agent-project",
                               entity=kwargs.get("entity") or "agent-team", settings=SimpleNamespace(mode=kwargs["mode"]))

    monkeypatch.setattr(wandb, "init", spy)
    return calls


def _init(tmp_path, overrides):
    folder = RunFolder(tmp_path / "mssr__digits__tiny__s0__20260101-000000")
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder, runner._init_wandb(compose(overrides), folder, overrides)


# --- what wandb.init receives --------------------------------------------------------------------


def test_under_the_agent_the_default_offline_becomes_online_under_the_agents_run(agent_env, init_spy, tmp_path):
    overrides = ["algo.shaping.alpha=0.4"]  # what ${args_no_hyphens} gives
    assert compose(overrides).logging.wandb == "offline"  # the default the agent must override
    folder, run = _init(tmp_path, overrides)
    (kwargs,) = init_spy
    assert kwargs["mode"] == "online"
    # no id, project or entity of ours: wandb takes WANDB_RUN_ID, WANDB_PROJECT and WANDB_ENTITY from the agent
    assert not {"id", "project", "entity"} & set(kwargs), kwargs
    assert kwargs["resume"] == "allow" and kwargs["dir"] == str(folder.path)
    assert json.loads((folder.path / RECORD).read_text()) == {
        "id": "agentrun7", "project": "agent-project", "entity": "agent-team", "mode": "online", "sweep_id": "swp0abc1"}


def test_without_the_agent_the_default_stays_offline_under_our_own_id(no_agent_env, init_spy, tmp_path):
    folder, _ = _init(tmp_path, [])
    (kwargs,) = init_spy
    assert kwargs["mode"] == "offline"
    assert kwargs["id"] == wandb_id(folder.name) and kwargs["project"] == "mssr" and kwargs["entity"] is None
    assert kwargs["resume"] == "allow"


def test_explicit_disabled_wins_under_the_agent(agent_env, init_spy, tmp_path):
    folder, run = _init(tmp_path, ["logging.wandb=disabled", "algo.shaping.alpha=0.4"])
    assert run is None and init_spy == [] and not (folder.path / RECORD).exists()
    plan = runner._wandb_plan(compose(["logging.wandb=disabled"]), folder, ["logging.wandb=disabled"])
    assert "disabled" in plan.note and "swp0abc1" in plan.note


def test_explicit_offline_under_the_agent_is_honoured_with_a_warning(agent_env, init_spy, tmp_path):
    folder, _ = _init(tmp_path, ["logging.wandb=offline"])
    (kwargs,) = init_spy
    assert kwargs["mode"] == "offline" and "id" not in kwargs and "project" not in kwargs
    plan = runner._wandb_plan(compose(["logging.wandb=offline"]), folder, ["logging.wandb=offline"])
    assert "wandb sync" in plan.warning and "swp0abc1" in plan.warning


def test_explicit_online_without_the_agent_keeps_our_id(no_agent_env, init_spy, tmp_path):
    folder, _ = _init(tmp_path, ["logging.wandb=online"])
    assert init_spy[0]["mode"] == "online" and init_spy[0]["id"] == wandb_id(folder.name)


def test_resume_outside_the_agent_continues_the_agents_run(no_agent_env, init_spy, tmp_path):
    """`mssr train --resume` of a folder an agent started logs to the agent's run, not a new one."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RECORD).write_text(json.dumps({"id": "agentrun7", "project": "agent-project", "entity": "agent-team",
                                             "mode": "online", "sweep_id": "swp0abc1"}))
    runner._init_wandb(compose([]), RunFolder(folder), [])
    (kwargs,) = init_spy
    assert (kwargs["id"], kwargs["project"], kwargs["entity"]) == ("agentrun7", "agent-project", "agent-team")


def test_the_run_folder_is_named_after_the_agents_run_id(agent_env, monkeypatch):
    assert wandb_run.folder_name("mssr__digits__tiny__s0__20260101-000000") == "mssr__digits__tiny__s0__20260101-000000__agentrun7"
    monkeypatch.delenv("WANDB_SWEEP_ID")
    assert wandb_run.folder_name("mssr__digits__tiny__s0__20260101-000000") == "mssr__digits__tiny__s0__20260101-000000"


@pytest.mark.parametrize(("overrides", "given"), [
    ([], None), (["logging.wandb=disabled"], "disabled"), (["+logging.wandb='offline'"], "offline"),
    (["logging.wandb=online", "logging.wandb=disabled"], "disabled"), (["logging.project=x"], None)])
def test_explicit_mode_reads_the_command_line(overrides, given):
    assert wandb_run.explicit_mode(overrides) == given


def test_the_final_summary_holds_val_accuracy():
    summary = {"final_val_accuracy": 0.4, "best_val_accuracy": 0.5, "start_val_accuracy": 0.1, "stopped": None}
    assert wandb_run.final_summary(summary) == {"val/accuracy": 0.4, "final_val_accuracy": 0.4,
                                                "best_val_accuracy": 0.5, "start_val_accuracy": 0.1}
    assert "val/accuracy" not in wandb_run.final_summary({"final_val_accuracy": None})  # never validated


# --- sweep files: the metric they rank on ---------------------------------------------------------


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_file_ranks_on_a_metric_mssr_logs(path):
    assert load_sweep(path)["metric"]["name"] in SWEEP_METRICS


def test_a_metric_mssr_never_logs_is_refused_naming_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('method: grid\nmetric: {name: val_accuracy, goal: maximize}\n'
                    'parameters: {seed: {values: [0]}}\ncommand: [mssr, train, "${args_no_hyphens}"]\n')
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert "metric.name=val_accuracy" in str(err.value) and ", ".join(SWEEP_METRICS) in str(err.value)
    from cli_helpers import one_line_error as _one_line_error
    from test_cli_errors import _mssr

    out, _ = _mssr("sweep", str(path), "--local", "--dry-run")
    _one_line_error(out, "metric.name=val_accuracy", "val/accuracy, val/format_rate")
    out, _ = _mssr("sweep", str(SWEEPS[0]))  # no --local: what a W&B sweep needs, one line
    _one_line_error(out, "wandb login", "WANDB_API_KEY", f"wandb sweep {SWEEPS[0]}", "wandb agent <entity/project/sweep_id>")


def test_a_summary_only_metric_compares_locally_on_its_per_step_metric(tmp_path):
    from rich.console import Console

    from mssr_cli.experiments.sweep import run_local_sweep

    path = tmp_path / "best.yaml"
    path.write_text('method: grid\nmetric: {name: best_val_accuracy, goal: maximize}\n'
                    'parameters: {seed: {values: [0]}}\ncommand: [mssr, train, "${args_no_hyphens}"]\n')
    with pytest.raises(ConfigError, match="train.eval_every=0.*val/accuracy"):  # compare reads metrics.jsonl's val/accuracy
        run_local_sweep(path, None, tmp_path / "out", True, Console(file=None), ["train.eval_every=0"])


# --- a real run under the agent ------------------------------------------------------------------


def _wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``: a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, chunks = path.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B", raw[:7]
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (length, kind) == (0, 0):
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        chunks = data if kind in (1, 2) else chunks + data  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record


def _final_summary(run_file: Path) -> dict:
    summary = {}
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


@pytest.mark.timeout(600)
def test_a_run_under_the_agent_reports_val_accuracy_to_the_sweep(agent_env, tiny_policy_path, tmp_path, monkeypatch,
                                                                 capsys):
    """The whole `mssr train` under the agent's environment, W&B really writing (offline: the spy turns the
    mode it was asked for, online, into offline so that nothing reaches a server)."""
    import wandb

    from mssr_cli.training.runner import run_training

    from wandb.sdk.lib import config_util

    # the sweep's parameters for this run, as the agent writes them before it starts the command
    config_util.save_config_file_from_dict(os.environ["WANDB_SWEEP_PARAM_PATH"], {"algo.shaping.alpha": {"value": 0.4}})
    real_init, asked = wandb.init, []

    def offline_init(**kwargs):
        asked.append(dict(kwargs))
        return real_init(**{**kwargs, "mode": "offline"})

    monkeypatch.setattr(wandb, "init", offline_init)
    wandb.teardown()  # settings come from the environment once per process: read the agent's (as the agent does)
    overrides = ["algo.shaping.alpha=0.4", "train.max_steps=2", "train.eval_every=5", "train.rollouts_per_step=8",
                 "data.val_limit=8", "train.save_every=0", "train.log_samples_every=0", "algo.tracker.warm_start=false",
                 "logging.progress=false", f"logging.runs_root={tmp_path / 'runs'}"]
    try:
        summary = run_training(compose(overrides), overrides, None)
    finally:
        wandb.teardown()
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.endswith("__agentrun7")
    out = capsys.readouterr().out
    assert "W&B: online under `wandb agent`: run agentrun7 of sweep swp0abc1 (agent-team/agent-project)" in out
    (kwargs,) = asked
    assert kwargs["mode"] == "online" and not {"id", "project", "entity"} & set(kwargs)
    (run_file,) = (folder / "wandb").glob("offline-run-*-agentrun7/run-agentrun7.wandb")  # the agent's run id
    final = _final_summary(run_file)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "val/accuracy" in m] == [0, 2]  # validated at the last step
    assert final["val/accuracy"] == metrics[-1]["val/accuracy"] == summary["final_val_accuracy"]
    assert not [m for m in SWEEP_METRICS if m not in final], sorted(final)  # every name a sweep may rank on
