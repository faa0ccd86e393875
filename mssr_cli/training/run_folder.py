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

# Keys `mssr train --resume RUN_DIR` accepts as overrides: they change when the run stops, saves, validates or
# logs, or how it runs here, never what it learns (the learning rate schedule is constant, so neither does
# max_steps). Anything else would silently make the resumed steps a different run than the ones before.
RESUME_KEYS = (
    "train.max_steps", "train.save_every", "train.keep_checkpoints", "train.eval_every", "train.stop_on_collapse",
    "train.num_threads", "train.vllm_server_host", "train.vllm_server_port", "train.vllm_server_timeout",
    "logging.wandb", "logging.progress",
)


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


def wandb_id(run_name: str) -> str:
    """The W&B run id of a run folder: fixed by its name, so a resumed run continues the same W&B run."""
    return run_name.replace("__", "-")[-64:]


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class RunFolder:
    path: Path
    writes: bool = True  # False on every training process but rank 0: one process writes the folder

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
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_config(cfg, overrides)
        write_json_atomic(self.path / "meta.json", {"command": sys.argv, "overrides": list(overrides), **_provenance()})

    def write_resume(self, cfg, overrides: list[str], checkpoint: Path) -> None:
        """Resuming: the (possibly extended) config, and one more entry in meta.json's ``resumes``."""
        if not self.writes:
            return
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {"command": None}
        self._write_config(cfg, overrides)
        (self.path / "summary.json").unlink(missing_ok=True)  # unfinished again: compare must not read it as done
        meta["overrides"] = list(overrides)  # compose(meta["overrides"]) gives the config in use
        meta.setdefault("resumes", []).append({"command": sys.argv, "checkpoint": checkpoint.name, **_provenance()})
        write_json_atomic(meta_path, meta)

    def _write_config(self, cfg, overrides: list[str]) -> None:
        from omegaconf import OmegaConf

        (self.path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (self.path / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl's lines; a torn last line (the process was killed mid-write) is skipped."""
        if not self.metrics_path.exists():
            return []
        lines = [line for line in self.metrics_path.read_text().splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except ValueError:
                if i < len(lines) - 1:
                    raise
        return rows

    def truncate_metrics(self, last_step: int) -> list[dict]:
        """Drop lines after ``last_step`` (resuming from a checkpoint replays those steps); returns the kept ones."""
        kept = [m for m in self.read_metrics() if m["step"] <= last_step]
        if not self.writes:
            return kept
        tmp = self.metrics_path.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        os.replace(tmp, self.metrics_path)
        return kept

    def append_metrics(self, line: dict) -> None:
        if not self.writes:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()

    def write_summary(self, summary: dict) -> None:
        if not self.writes:
            return
        write_json_atomic(self.path / "summary.json", summary)


def _provenance() -> dict:
    return {
        "versions": versions(),
        "git_commit": git_commit(Path(__file__).parent),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def resume_config(run_dir: Path, extra_overrides: list[str]):
    """``mssr train --resume RUN_DIR``: (config, overrides) of the run saved in RUN_DIR, with the
    ``RESUME_KEYS`` overrides given applied. Raises ConfigError (one line) when RUN_DIR is no run
    folder, holds no checkpoint, or an override would change the run (it names the key)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mssr_cli.config.compose import ConfigError, validate
    from mssr_cli.config.schema import RootConfig

    folder = RunFolder(Path(run_dir))
    if not folder.path.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run folder")
    if not (folder.path / "config.yaml").is_file():
        raise ConfigError(f"--resume {run_dir}: not a run folder (no config.yaml)")
    if folder.latest_checkpoint() is None:
        raise ConfigError(f"--resume {run_dir}: no checkpoint in {folder.checkpoints} to resume from "
                          "(runs save one every train.save_every steps)")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RootConfig), OmegaConf.load(folder.path / "config.yaml"))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{folder.path / 'config.yaml'}: {str(err).strip().splitlines()[0]}") from err
    saved = OmegaConf.load(folder.path / "overrides.yaml") if (folder.path / "overrides.yaml").is_file() else []
    overrides = [str(o) for o in saved]
    for override in extra_overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep:
            raise ConfigError(f"{override}: not a key=value override")
        try:
            parsed = OmegaConf.select(OmegaConf.from_dotlist([f"{key}={value}"]), key)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{override}: {str(err).strip().splitlines()[0]}") from err
        if key not in RESUME_KEYS:
            absent = object()
            current = OmegaConf.select(cfg, key, default=absent)
            leaf = current is not absent and not OmegaConf.is_config(current)
            if leaf and current == parsed:
                continue  # the value the run already has: harmless
            has = f"; the run has {key}={current}" if leaf else ""
            raise ConfigError(
                f"{key}={value}: cannot change when resuming ({folder.path} keeps its saved config.yaml{has}); "
                f"with --resume only these keys may be given: {', '.join(RESUME_KEYS)}"
            )
        try:
            OmegaConf.update(cfg, key, parsed, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{override}: {str(err).strip().splitlines()[0]}") from err
        overrides = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key] + [override]
    validate(cfg)
    return cfg, overrides


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
