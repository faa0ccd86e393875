"""``mssr status DIR`` and ``mssr cancel DIR``: a batch folder's runs, read from disk and the scheduler.

One line per run: done, queued, running (step N of M, the last val/accuracy), failed (its error's line, or the
step a cancelled job stopped at), preempted, timed out, or, for a run no job holds, stopped (resumable by running the
batch's command again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mssr_cli.executors.planned import ERROR_LOG, last_line, steps_done


class StatusError(Exception):
    """DIR is not a batch folder (one line)."""


@dataclass
class RunStatus:
    name: str
    status: str  # done | queued | running | failed | preempted | timed out | stopped | unknown
    detail: str = ""

    def line(self, width: int) -> str:
        return f"{self.name:<{width}}  {self.status:<10}  {self.detail}".rstrip()


def _max_steps(folder: Path) -> int | None:
    try:
        from omegaconf import OmegaConf

        return int(OmegaConf.load(folder / "config.yaml").train.max_steps)
    except Exception:  # noqa: BLE001 - no config yet (a job that has not started): the count is unknown
        return None


def _progress(folder: Path) -> str:
    """``step N of M, val/accuracy X at step S`` from the run folder's metrics.jsonl."""
    done, total = steps_done(folder), _max_steps(folder)
    text = f"step {done} of {total if total is not None else '?'}"
    val = None
    if (folder / "metrics.jsonl").exists():
        for raw in (folder / "metrics.jsonl").read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line being written
            if "val/accuracy" in line and not line.get("abandoned"):
                val = (line["val/accuracy"], line.get("step"))
    return text + (f", val/accuracy {val[0]:.3f} at step {val[1]}" if val else "")


def _finished(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    final = summary.get("final_val_accuracy")
    stopped = f"; stopped early: {summary['stopped']}" if summary.get("stopped") else ""
    return f"{summary.get('steps')} steps" + (f", val/accuracy {final:.3f}" if final is not None else "") + stopped


def _error(folder: Path, fallback: str) -> str:
    log = folder / ERROR_LOG
    return last_line(log) if log.exists() else fallback


def batch_status(out: Path) -> list[RunStatus]:
    """Every run of the batch folder ``out`` (the runs its jobs.json records and the run folders inside it), each
    followed by its evaluation job's line when ``--eval`` submitted one."""
    from mssr_cli.executors import slurm
    from mssr_cli.executors.records import read_jobs

    out = Path(out)
    if not out.is_dir():
        raise StatusError(f"{out}: no such folder (give an ablation or sweep folder, e.g. runs/ablate__mssr__...)")
    records = read_jobs(out)
    names = sorted({r.run for r in records.values() if r.stage in ("train", "eval")}
                   | {p.name for p in out.iterdir() if p.is_dir() and (p / "config.yaml").exists()})
    agents = sorted(key for key, r in records.items() if r.stage == "agent")
    if not names and not agents:
        raise StatusError(f"{out}: no runs here (no jobs.json and no run folder with a config.yaml)")
    known = slurm.states(out, records) if records else {}
    rows = []
    for name in names:
        rows.append(_run_status(out, name, records, known))
        if f"{name}:eval" in records:
            rows.append(_eval_status(out, f"{name}:eval", records[f"{name}:eval"], known))
    return rows + [_agent_status(records[key], known.get(key, "UNKNOWN")) for key in agents]


def _agent_status(record, state: str) -> RunStatus:
    """A `mssr agents` job: its runs are the sweep's (on its W&B page); here only the job's state."""
    from mssr_cli.executors import slurm

    if state == "PENDING":
        return RunStatus(record.run, "queued", f"job {record.job_id}")
    if state in slurm.ACTIVE:
        return RunStatus(record.run, "running", f"job {record.job_id}: wandb agent")
    if state == "COMPLETED":
        return RunStatus(record.run, "done", f"job {record.job_id}: the agent stopped (--count reached or sweep over)")
    return RunStatus(record.run, "failed" if state != "UNKNOWN" else "unknown", f"job {record.job_id} ended {state}")


def _eval_status(out: Path, key: str, record, known: dict) -> RunStatus:
    """The evaluation job of a run (``--eval``): it writes ``<run>/eval/``; its failure's stderr is there too."""
    from mssr_cli.executors import slurm

    folder, state, job = out / record.run / "eval", known.get(key, "UNKNOWN"), record.job_id
    if state == "PENDING":
        return RunStatus(key, "queued", f"job {job} (waits for its run's training job)")
    if state in slurm.ACTIVE:
        return RunStatus(key, "running", f"job {job}")
    if state == "COMPLETED" and (folder / "summary.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
        accuracies = ", ".join(f"{b} {r['accuracy']:.3f}" for b, r in (summary.get("benchmarks") or {}).items())
        return RunStatus(key, "done", accuracies)
    if state == "CANCELLED":
        return RunStatus(key, "failed", f"job {job} was cancelled; the batch's command submits it again")
    return RunStatus(key, slurm.STATUS_OF.get(state, state.lower()), _error(folder, f"job {job} ended {state}"))


def _run_status(out: Path, name: str, records: dict, known: dict) -> RunStatus:
    """A run's line: its folder (summary.json, metrics, error.log, lock) and, for a SLURM job, sacct's state."""
    from mssr_cli.executors import slurm
    from mssr_cli.runs.lock import busy_holder

    folder, state = out / name, known.get(name, "UNKNOWN")
    if (folder / "summary.json").exists() and state not in slurm.ACTIVE:  # a queued job may extend a finished run
        return RunStatus(name, "done", _finished(folder))
    if name not in records:  # a local run
        if busy_holder(folder) is not None:
            return RunStatus(name, "running", _progress(folder))
        if (folder / ERROR_LOG).exists():
            return RunStatus(name, "failed", _error(folder, ""))
        return RunStatus(name, "stopped", f"{_progress(folder)}; the batch's command resumes it")
    job = records[name].job_id
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return RunStatus(name, "queued", f"job {job} ({state.lower()})")
    if state in slurm.ACTIVE:
        return RunStatus(name, "running", f"{_progress(folder)} (job {job})")
    if state == "UNKNOWN":
        return RunStatus(name, "unknown", f"job {job}: sacct has no state for it")
    status = slurm.STATUS_OF.get(state, state.lower())
    if state == "CANCELLED":  # scancel: no error of its own to show
        detail = f"job {job} was cancelled at {_progress(folder)}; the batch's command resubmits it as a resume"
    elif status == "failed":
        detail = _error(folder, f"job {job} ended {state}")
    else:
        detail = f"{_progress(folder)} (job {job} {state}); the batch's command resubmits it as a resume"
    return RunStatus(name, status, detail)


def print_status(rows: list[RunStatus], console) -> None:
    width = max(len(r.name) for r in rows)
    for row in rows:
        console.print(row.line(width), markup=False, highlight=False, soft_wrap=True)
    done = sum(r.status == "done" for r in rows)
    console.print(f"{done}/{len(rows)} done", markup=False, highlight=False)


def cancel_batch(out: Path) -> list[str]:
    """scancel the batch's queued and running jobs; returns the runs whose job was cancelled."""
    from mssr_cli.executors import slurm
    from mssr_cli.executors.records import read_jobs

    records = read_jobs(Path(out))
    if not records:
        raise StatusError(f"{out}: no SLURM jobs recorded here (no jobs.json); a local batch stops with Ctrl-C")
    known = slurm.states(Path(out), records)
    live = {name: rec for name, rec in records.items() if known.get(name) in slurm.ACTIVE}
    slurm.cancel(live)
    return sorted(live)


def watch_status(out: Path, console, every_s: float = 5.0) -> list[RunStatus] | None:
    """``mssr status --watch``: the table refreshed in place until every run is done; None on Ctrl-C."""
    import time

    from rich.live import Live
    from rich.text import Text

    def render(rows):
        width = max(len(r.name) for r in rows)
        done = sum(r.status == "done" for r in rows)
        return Text("\n".join([*(r.line(width) for r in rows), f"{done}/{len(rows)} done"]))

    rows = batch_status(out)
    try:
        with Live(render(rows), console=console, auto_refresh=False) as live:
            while not all(r.status == "done" for r in rows):
                time.sleep(every_s)
                rows = batch_status(out)
                live.update(render(rows), refresh=True)
    except KeyboardInterrupt:
        return None
    return rows
