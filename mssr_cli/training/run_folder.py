"""One folder per run: resolved config, overrides, versions, metrics.jsonl, summary.json, checkpoints, model.

Layout (README: "A run on disk")::

    <run>/config.yaml  overrides.yaml  meta.json  metrics.jsonl  summary.json
    <run>/checkpoints/checkpoint-<update>/   (model, optimizer, scheduler, RNG, trainer state)
    <run>/model/                             (final policy, Hugging Face format)
    <run>/wandb/                             (the W&B run; offline unless set online)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = ("mssr-cli", "torch", "torchvision", "transformers", "trl", "datasets", "accelerate", "wandb", "hydra-core")


def run_name(cfg, when: float | None = None) -> str:
    """``{algo}__{data}__{model}__s{seed}__{time}``, as cleanrl names runs."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when or time.time()))
    return f"{cfg.algo.name}__{cfg.data.name}__{cfg.model.preset}__s{cfg.seed}__{stamp}"


def versions() -> dict[str, str | None]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(start: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class RunFolder:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model(self) -> Path:
        return self.path / "model"

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        found = [p for p in found if (p / "trainer_state.json").exists()]
        return found[-1] if found else None

    def write_start(self, cfg, overrides: list[str]) -> None:
        from omegaconf import OmegaConf

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (self.path / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        write_json_atomic(
            self.path / "meta.json",
            {
                "command": sys.argv,
                "overrides": list(overrides),
                "versions": versions(),
                "git_commit": git_commit(Path(__file__).parent),
                "host": platform.node(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines after ``last_step`` (resuming from a checkpoint replays those steps)."""
        kept = [m for m in self.read_metrics() if m["step"] <= last_step]
        tmp = self.metrics_path.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        os.replace(tmp, self.metrics_path)

    def append_metrics(self, line: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / "summary.json", summary)


def summarize(metrics: list[dict], wall_seconds: float, extra: dict) -> dict:
    """summary.json: start, final and best validation accuracy, steps, wall time."""
    val = [(m["step"], m["val/accuracy"]) for m in metrics if "val/accuracy" in m]
    best_step, best = max(val, key=lambda sv: (sv[1], -sv[0])) if val else (None, None)
    return {
        "steps": max((m["step"] for m in metrics), default=0),
        "start_val_accuracy": val[0][1] if val else None,
        "final_val_accuracy": val[-1][1] if val else None,
        "best_val_accuracy": best,
        "best_step": best_step,
        "wall_seconds": round(wall_seconds, 2),
        **extra,
    }
