"""Find run folders under the paths given to ``mssr compare`` and read them (README: "A run on disk").

A path is either a run folder or a folder holding run folders at any depth (an ablation
folder). Runs are read from their files only (offline); a run without ``summary.json`` is a
crashed or unfinished run: it is kept, read from ``metrics.jsonl``, and marked incomplete.
A run's benchmark results are those ``mssr eval --model <run>`` wrote in ``<run>/eval/summary.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.runs.trajectory import is_abandoned

# Files that only `mssr train` writes at a run folder's top level. config.yaml alone is not
# enough: a W&B run's files/ folder holds one too.
RUN_MARKERS = ("metrics.jsonl", "summary.json", "meta.json")
EVAL_SUMMARY = Path("eval") / "summary.json"  # where `mssr eval --model <run>` writes (evaluation/runner.py)


class CompareError(ValueError):
    """A one-line error the CLI prints as is (bad path, unknown metric or reference variant)."""


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    variant: str
    seed: int | None
    metrics: list[dict]  # metrics.jsonl's kept lines (not a rollback's abandoned ones), one per step, sorted by step; non-finite values as None
    summary: dict | None  # summary.json; None when the run did not finish
    config: dict = field(default_factory=dict)  # config.yaml as plain data ({} when absent)
    benchmarks: dict[str, float] = field(default_factory=dict)  # eval/summary.json: benchmark -> accuracy ({}: no eval)
    benchmark_items: dict[str, int] = field(default_factory=dict)  # benchmark -> items scored (n; --limit lowers it)
    eval_grader: str | None = None  # what graded them (mssr eval --grader; None: no eval)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return self.summary is not None

    @property
    def label(self) -> str:
        """How a table names this run among its variant's seeds."""
        return f"seed {self.seed}" if self.seed is not None else self.name

    @property
    def rollouts_per_step(self) -> int | None:
        value = _get(self.config, "train", "rollouts_per_step")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_run_folder(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def find_run_folders(paths: list[Path]) -> list[Path]:
    """Run folders at or under each path, in the order given (each folder's runs sorted), without repeats."""
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise CompareError(f"not a folder: {path}")
        under = [path] if is_run_folder(path) else _run_folders_below(path)
        if not under:
            raise CompareError(f"no run folders in {path} (a run folder holds metrics.jsonl or summary.json)")
        for folder in under:
            key = folder.resolve()
            if key not in seen:
                seen.add(key)
                found.append(folder)
    return found


def _run_folders_below(root: Path) -> list[Path]:
    found = []
    for here, dirs, _files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(here)
        if here != root and is_run_folder(here):
            found.append(here)
            dirs[:] = []  # a run's own subfolders (checkpoints, model, wandb) hold no runs
    return found


def read_run(path: Path, warnings: list[str]) -> Run | None:
    """The run in ``path``; None (and a warning naming it) when it has no metrics.jsonl."""
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        warnings.append(f"skipped {path}: no metrics.jsonl")
        return None
    metrics = _read_metrics(metrics_path, warnings)
    summary = _read_json(path / "summary.json", warnings)
    config = _read_yaml(path / "config.yaml", warnings)
    variant = (
        (summary or {}).get("variant")
        or _get(config, "logging", "variant")
        or _get(config, "algo", "name")
        or (summary or {}).get("algo")
        or path.name.split("__", 1)[0]  # run names start with the algorithm: {algo}__{data}__...
    )
    seed = (summary or {}).get("seed", _get(config, "seed"))
    seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None
    benchmarks, items, grader = _read_eval(path / EVAL_SUMMARY, warnings)
    return Run(path=path, variant=str(variant), seed=seed, metrics=metrics, summary=summary, config=config,
               benchmarks=benchmarks, benchmark_items=items, eval_grader=grader)  # fmt: skip


def read_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every readable run at or under ``paths``, and the warnings (skipped folders, damaged lines)."""
    warnings: list[str] = []
    runs = [run for folder in find_run_folders(paths) if (run := read_run(folder, warnings)) is not None]
    return runs, warnings


def _read_metrics(path: Path, warnings: list[str]) -> list[dict]:
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            # A crash while appending leaves a cut last line; the earlier steps are still good.
            warnings.append(f"{path}: line {number} is not valid JSON, ignored")
            continue
        # lines of steps a collapse rollback abandoned are not the run's trajectory (runs/trajectory.py)
        if isinstance(line, dict) and isinstance(line.get("step"), (int, float)) and not is_abandoned(line):
            lines.append({k: _finite_or_none(v) for k, v in line.items()})
    return sorted(lines, key=lambda m: m["step"])


def _read_json(path: Path, warnings: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        warnings.append(f"{path}: not valid JSON, the run is read as incomplete")
        return None
    return data if isinstance(data, dict) else None


def _read_eval(path: Path, warnings: list[str]) -> tuple[dict[str, float], dict[str, int], str | None]:
    """Accuracy and item count per benchmark from an eval summary, and its grader; ({}, {}, None) when there
    is none. A summary written before ``mssr eval --grader`` existed was graded by ``math_verify``.

    The shape is ``{"benchmarks": {name: {"n": int, "accuracy": float, ...}}}``. Read as plain JSON:
    reporting does not import evaluation (tests/test_layering.py). A damaged file or entry is a warning,
    not a crash: the run is still compared on its training metrics."""
    if not path.is_file():
        return {}, {}, None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        warnings.append(f"{path}: not valid JSON, the run's benchmark results are ignored")
        return {}, {}, None
    results = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        warnings.append(f"{path}: no 'benchmarks' table, the run's benchmark results are ignored")
        return {}, {}, None
    accuracies, items = {}, {}
    for name, result in results.items():
        accuracy = _finite_or_none(result.get("accuracy")) if isinstance(result, dict) else None
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
            warnings.append(f"{path}: benchmark {name!r} has no accuracy, ignored")
            continue
        accuracies[str(name)] = float(accuracy)
        n = result.get("n")
        if isinstance(n, int) and not isinstance(n, bool):
            items[str(name)] = n
    return accuracies, items, str(data.get("grader") or "math_verify") if accuracies else None


def _read_yaml(path: Path, warnings: list[str]) -> dict:
    if not path.is_file():
        return {}
    import yaml  # PyYAML comes with omegaconf; plain YAML needs no config composition

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        warnings.append(f"{path}: not valid YAML, ignored")
        return {}
    return data if isinstance(data, dict) else {}


def _get(data: dict, *keys):
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
