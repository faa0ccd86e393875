"""A run folder's W&B run: the mode, id and project ``wandb.init`` gets, with and without a sweep agent.

Without an agent: mode ``logging.wandb`` (offline by default), project and entity from ``logging.*``, and
an id fixed by the run folder (``folder.wandb_id``), so ``--resume`` continues the same W&B run.

Under ``wandb agent`` (README: mssr sweep): the agent starts ``mssr train ${args_no_hyphens}`` with
``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``, ``WANDB_PROJECT``, ``WANDB_ENTITY`` and ``WANDB_SWEEP_PARAM_PATH``
in the environment (wandb/wandb_agent.py). The run must report to the sweep's server or the sweep has
nothing to rank, so it logs online and passes no id, project or entity of its own: wandb takes the
agent's from the environment (in a sweep it drops explicit ones anyway, with a warning; offline mode it
keeps). Only the command line can say otherwise: ``logging.wandb=disabled`` is honoured, and so is
``logging.wandb=offline``, with a warning (the sweep sees the run only after ``wandb sync``). The run
folder is named after the agent's run id (``<algo>__<data>__<model>__s<seed>__<time>__<run id>``).

``<run>/wandb_run.json`` records the W&B run a folder logged to (id, project, entity, mode, sweep):
``mssr train --resume`` and ``mssr eval`` on the folder continue that run, the agent's included.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.fileio import write_json_atomic

RECORD = "wandb_run.json"
AGENT_VARS = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_SWEEP_PARAM_PATH")

# What a sweep file's metric.name may be: what every run, of any algorithm, leaves in its W&B summary at the
# end (the last value of a per-step metric; summary.json's numbers). val/ ones need train.eval_every >= 1;
# val/accuracy is also written to the summary explicitly (``final_summary``). Algorithm-only metrics
# (tracker/, grpo/, collapse/shaping_*) are left out: a sweep across algorithms could not rank on them.
SWEEP_METRICS = ("val/accuracy", "val/format_rate", "best_val_accuracy", "final_val_accuracy",
                 "train/reward", "train/accuracy", "train/format_rate", "train/response_length", "train/tokens",
                 "train/loss", "collapse/entropy", "collapse/entropy_ratio", "collapse/grad_norm",
                 "time/elapsed", "wall_seconds")


@dataclass(frozen=True)
class WandbPlan:
    """How a run logs to W&B. ``init``: the keyword arguments of ``wandb.init`` about where (empty: no W&B
    run); ``note``/``warning``: one line each to print, or None; ``sweep_id``: the agent's sweep."""

    init: dict = field(default_factory=dict)
    note: str | None = None
    warning: str | None = None
    sweep_id: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.init)


def sweep_agent(environ=None) -> dict | None:
    """The agent's ``{sweep_id, run_id, project, entity}`` when this process runs under ``wandb agent``
    (``WANDB_SWEEP_ID`` set), else None."""
    env = os.environ if environ is None else environ
    if not env.get("WANDB_SWEEP_ID"):
        return None
    return {"sweep_id": env["WANDB_SWEEP_ID"], "run_id": env.get("WANDB_RUN_ID") or None,
            "project": env.get("WANDB_PROJECT") or None, "entity": env.get("WANDB_ENTITY") or None}


def explicit_mode(overrides) -> str | None:
    """``logging.wandb`` as the command line gave it (the last one wins, as in Hydra), else None."""
    given = None
    for override in overrides or ():
        key, sep, value = str(override).partition("=")
        if sep and key.lstrip("+~") == "logging.wandb":
            given = value.strip().strip("'\"")
    return given


def folder_name(base: str, environ=None) -> str:
    """The default run folder's name: ``base`` (``folder.run_name``), and under an agent its run id after it,
    so the folder, the agent's log line and the W&B run share one name."""
    agent = sweep_agent(environ)
    run_id = re.sub(r"[^A-Za-z0-9._-]+", "-", (agent or {}).get("run_id") or "")
    return f"{base}__{run_id}" if run_id else base


def read_record(run_dir: Path) -> dict | None:
    """``<run>/wandb_run.json``, or None when absent or unreadable."""
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def write_record(run_dir: Path, run, sweep_id: str | None) -> None:
    """What ``wandb.init`` gave: the run's id, project, entity and mode, and the sweep it reports to."""
    run_id = getattr(run, "id", None)
    if not isinstance(run_id, str):
        return
    mode = getattr(getattr(run, "settings", None), "mode", None)
    write_json_atomic(Path(run_dir) / RECORD, {
        "id": run_id, "project": _text(getattr(run, "project", None)), "entity": _text(getattr(run, "entity", None)),
        "mode": mode if isinstance(mode, str) else None, "sweep_id": sweep_id})


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def plan(configured_mode: str, overrides, project: str | None, entity: str | None, run_dir: Path,
         fallback_id: str, environ=None) -> WandbPlan:
    """Where a run logs: the agent's sweep (see the module's docstring), else ``configured_mode`` under the
    id recorded in ``run_dir`` (a resumed run) or ``fallback_id`` (``folder.wandb_id``)."""
    agent = sweep_agent(environ)
    given = explicit_mode(overrides)
    if agent is None:
        if configured_mode == "disabled":
            return WandbPlan()
        record = read_record(run_dir)
        if record is not None:  # continue the run it logged to, wherever that was (an agent's sweep too)
            project, entity = record.get("project") or project, record.get("entity") or entity
        run_id = record["id"] if record is not None else fallback_id
        return WandbPlan({"mode": configured_mode, "id": run_id, "project": project, "entity": entity,
                          "resume": "allow"}, sweep_id=(record or {}).get("sweep_id"))
    sweep, run = agent["sweep_id"], agent["run_id"] or "(id from the agent)"
    if given == "disabled":
        return WandbPlan(note=f"W&B: logging.wandb=disabled on the command line: run {run} of sweep {sweep} "
                              f"reports nothing, so the sweep cannot rank it", sweep_id=sweep)
    mode = "offline" if given == "offline" else "online"
    warning = (f"logging.wandb=offline on the command line under `wandb agent`: sweep {sweep} sees run {run} "
               f"only after `wandb sync {run_dir / 'wandb'}`") if mode == "offline" else None
    where = "/".join(p for p in (agent["entity"], agent["project"]) if p)
    note = f"W&B: {mode} under `wandb agent`: run {run} of sweep {sweep}" + (f" ({where})" if where else "")
    # no id, project or entity: wandb takes the agent's (WANDB_RUN_ID, WANDB_PROJECT, WANDB_ENTITY)
    return WandbPlan({"mode": mode, "resume": "allow"}, note=note, warning=warning, sweep_id=sweep)


def final_summary(summary: dict) -> dict:
    """What a finished run writes to its W&B summary: summary.json's values, and ``val/accuracy`` set to the
    last validation's, so a sweep ranking on it finds it even when the last step did not validate (a run
    stopped on collapse)."""
    out = {k: v for k, v in summary.items() if v is not None}
    if summary.get("final_val_accuracy") is not None:
        out["val/accuracy"] = summary["final_val_accuracy"]
    return out
