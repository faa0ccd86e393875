"""One folder per run: resolved config, overrides, versions, metrics.jsonl, summary.json, checkpoints, model.

Layout (README: "A run on disk")::

    <run>/config.yaml  overrides.yaml  meta.json  metrics.jsonl  summary.json  .lock (while running)
    <run>/samples.jsonl  rollbacks.json (train.on_collapse=rollback, once one happened)
    <run>/checkpoints/checkpoint-<update>/   (model, optimizer, scheduler, RNG, trainer state, mssr state,
                                              run/ copies of config and metrics, manifest.json)
    <run>/model/                             (final policy, Hugging Face format)
    <run>/wandb/                             (the W&B run; offline unless set online)

A folder holds one run: one writer at a time (``runs.lock``) and one config (a second command with other
settings is refused, naming the keys). Every file but the appended metrics.jsonl is written whole
(``fileio``); a torn metrics line is restored from the checkpoint's copy on resume.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from importlib import metadata
from pathlib import Path

from mssr_cli.config.schema import ExecutorConfig
from mssr_cli.fileio import write_json_atomic, write_text_atomic  # noqa: F401 (write_json_atomic: also imported from here)
from mssr_cli.secrets import redact_data
from mssr_cli.runs import checkpoints as ckpt
from mssr_cli.runs import trajectory

ROLLBACKS = "rollbacks.json"  # the collapse rollbacks a run made (train.on_collapse=rollback), in order

PACKAGES = ("mssr-cli", "torch", "torchvision", "transformers", "trl", "datasets", "accelerate", "wandb", "hydra-core")

# How a run runs here, never what it computes: the keys in which two runs of the same settings may differ.
HOW_IT_RUNS = ("train.num_threads", "train.vllm_server_host", "train.vllm_server_port", "train.vllm_server_timeout",
               "logging.wandb", "logging.progress",
               # several machines: each runs the same run with its own rank, and a restart may get another rank 0
               "launcher.machine_rank", "launcher.main_process_ip", "launcher.main_process_port",
               # where a run runs (this machine or a SLURM partition) is not what it computes: a run moves freely
               *(f"executor.{f.name}" for f in dataclass_fields(ExecutorConfig)))
# Keys `mssr train --resume RUN_DIR` accepts as overrides: they change when the run stops, saves, validates or
# logs, or how it runs here, never what it learns (the learning rate schedule is constant, so neither does
# max_steps). Anything else would silently make the resumed steps a different run than the ones before.
# train.on_collapse and train.rollback.max_times say what happens on a collapse alarm (a run that rolled back
# keeps its lowered lr and changed seed whatever they say now: rollbacks.json); the factors are not here.
RESUME_KEYS = ("train.max_steps", "train.save_every", "train.keep_checkpoints", "train.eval_every",
               "train.on_collapse", "train.rollback.max_times", "train.log_samples_every", "train.log_samples",
               *HOW_IT_RUNS)
RESUME_GROUPS = ("executor",)  # config groups --resume accepts whole (`executor=slurm`): they hold HOW_IT_RUNS keys only


class RunFolderError(Exception):
    """A run folder that cannot be used as asked (one line: what, where, and what to do)."""


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
        """The newest checkpoint folder, verified or not (``prepare`` picks the newest that verifies)."""
        found = ckpt.listed(self.checkpoints)
        return found[-1] if found else None

    def saved_config(self, warn=None):
        """(config, overrides) this folder's run was made with, or None for a folder without a run.

        A corrupt or missing config.yaml is restored from the newest checkpoint that verifies (each holds
        a copy); ``warn(message)`` hears about it. RunFolderError when neither can be read."""
        config = self.path / "config.yaml"
        if not config.exists() and not ckpt.listed(self.checkpoints):
            return None
        try:
            return _load_config(config), _load_overrides(self.path / "overrides.yaml")
        except (OSError, ValueError) as err:
            problem = str(err)
        chosen, _ = ckpt.newest_verified(self.checkpoints)
        if chosen is None:
            raise RunFolderError(f"{problem}, and no checkpoint in {self.checkpoints} holds a copy that verifies: "
                                 f"give the run a new --run-dir")
        copy = chosen / ckpt.RUN_COPY
        cfg, overrides = _load_config(copy / "config.yaml"), _load_overrides(copy / "overrides.yaml")
        if warn is not None:
            warn(f"{problem}: using the copy in {chosen.name}")
        if self.writes:  # put the good copy back, so the folder reads right again
            write_text_atomic(config, (copy / "config.yaml").read_text())
            if (copy / "overrides.yaml").is_file():
                write_text_atomic(self.path / "overrides.yaml", (copy / "overrides.yaml").read_text())
        return cfg, overrides

    def prepare(self, cfg, overrides: list[str], warn, updates_per_step: int = 1) -> Path | None:
        """Before a run writes here (under its lock): check the folder holds this run, choose where to
        start, and write the start. Returns the checkpoint to resume from, or None to start afresh.

        - A folder with a run of other settings is refused (RunFolderError naming the keys), as
          ``--resume`` refuses them; the keys of ``RESUME_KEYS`` may differ.
        - Resuming takes the newest checkpoint that verifies against its manifest, and says which newer
          ones it skipped and why; none verifying (but some present) is an error.
        - Starting afresh (no checkpoint: e.g. killed before the first) clears the earlier attempt's metrics;
          a finished run (summary.json) with no checkpoint (train.save_every=0) is refused, never wiped."""
        saved = self.saved_config(warn)
        if saved is not None:
            differing = config_diff(saved[0], cfg, ignore=RESUME_KEYS)
            if differing:
                shown = "; ".join(differing[:8]) + (f"; and {len(differing) - 8} more" if len(differing) > 8 else "")
                raise RunFolderError(
                    f"{self.path} holds a run made with other settings ({shown}): give a new "
                    f"--run-dir, or `mssr train --resume {self.path}` to continue that run as it was")
        chosen, skipped = ckpt.newest_verified(self.checkpoints)
        for checkpoint, why in skipped:
            warn(f"skipped {checkpoint.name}: {why}")
        if chosen is None and skipped:
            reasons = "; ".join(f"{c.name}: {why}" for c, why in skipped)
            raise RunFolderError(f"no checkpoint in {self.checkpoints} verifies ({reasons}); nothing to resume "
                                 f"from: give the run a new --run-dir")
        if chosen is None and (self.path / "summary.json").exists():
            raise RunFolderError(f"{self.path} holds a finished run and no checkpoint to continue it from "
                                 f"(train.save_every=0): give a new --run-dir to run it again")
        if chosen is None:
            self.write_start(cfg, overrides)
        else:
            self.write_resume(cfg, overrides, chosen, ckpt.step_of(chosen) // updates_per_step)
        return chosen

    def write_start(self, cfg, overrides: list[str]) -> None:
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        # an earlier attempt killed before its first checkpoint: its lines would repeat steps 0, 1, ...
        for stale in ("metrics.jsonl", "samples.jsonl", "summary.json", ROLLBACKS):
            (self.path / stale).unlink(missing_ok=True)
        ckpt.remove_tree(self.checkpoints / ".staging")
        self._write_config(cfg, overrides)
        write_json_atomic(self.path / "meta.json", {"overrides": redact_data(list(overrides)), **_provenance()})

    def write_resume(self, cfg, overrides: list[str], checkpoint: Path, rl_step: int) -> None:
        """Resuming: the (possibly extended) config, the metrics up to the checkpoint (from its verified copy
        when it has one), and one more entry in meta.json's ``resumes``."""
        if not self.writes:
            return
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {"command": None}
        self._write_config(cfg, overrides)
        (self.path / "summary.json").unlink(missing_ok=True)  # unfinished again: compare must not read it as done
        self.restore_metrics(checkpoint, rl_step)
        meta["overrides"] = redact_data(list(overrides))  # compose(meta["overrides"]) gives the config in use
        meta.setdefault("resumes", []).append({"checkpoint": checkpoint.name, **_provenance()})
        write_json_atomic(meta_path, meta)

    def restore_metrics(self, checkpoint: Path, rl_step: int) -> list[dict]:
        """metrics.jsonl and samples.jsonl up to ``rl_step`` (the checkpoint's): from the checkpoint's own
        verified copies, so lines torn or lost in the run folder since come back; else the run folder's
        lines. Lines of attempts a collapse rollback abandoned stay, whatever their step (``trajectory``).
        Returns the metrics lines."""
        kept = {}
        for name in ("metrics.jsonl", "samples.jsonl"):
            copy, live = checkpoint / ckpt.RUN_COPY / name, self.path / name
            rows = trajectory.restored(_parse_metrics(copy) if copy.is_file() else None, _parse_metrics(live), rl_step)
            if self.writes and (rows or live.exists()):
                write_text_atomic(live, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in rows))
            kept[name] = rows
        return kept["metrics.jsonl"]

    def abandon_after(self, rl_step: int, rollback: int) -> int:
        """A collapse rollback to the checkpoint of ``rl_step``: the later lines of metrics.jsonl and samples.jsonl
        are marked abandoned by rollback number ``rollback`` (each file rewritten whole). Returns the metrics
        lines newly marked."""
        marked = {}
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.path / name
            if not self.writes or not path.exists():
                continue
            rows, marked[name] = trajectory.mark_abandoned(_parse_metrics(path), rl_step, rollback)
            write_text_atomic(path, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in rows))
        return marked.get("metrics.jsonl", 0)

    @property
    def rollbacks_path(self) -> Path:
        return self.path / ROLLBACKS

    def read_rollbacks(self) -> list[dict] | None:
        """The collapse rollbacks this run made (<run>/rollbacks.json); None when there is no readable record."""
        try:
            data = json.loads(self.rollbacks_path.read_text())
        except (OSError, ValueError):
            return None
        rollbacks = data.get("rollbacks") if isinstance(data, dict) else None
        return rollbacks if isinstance(rollbacks, list) else None

    def write_rollbacks(self, rollbacks: list[dict]) -> None:
        if self.writes:
            write_json_atomic(self.rollbacks_path, {"rollbacks": rollbacks})

    def _write_config(self, cfg, overrides: list[str]) -> None:
        from omegaconf import OmegaConf

        write_text_atomic(self.path / "config.yaml", OmegaConf.to_yaml(cfg))
        write_text_atomic(self.path / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl's lines; lines that are not JSON (torn by a kill mid-write) are skipped."""
        return _parse_metrics(self.metrics_path)

    def append_samples(self, rows: list[dict]) -> None:
        """samples.jsonl: rollouts as the policy wrote them (README: A run on disk)."""
        if not self.writes or not rows:
            return
        with (self.path / "samples.jsonl").open("a") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()

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


def _parse_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _load_config(path: Path):
    """A saved config.yaml on the schema (keys added since default); ValueError naming the file if unreadable."""
    from omegaconf import OmegaConf

    from mssr_cli.config.schema import RootConfig

    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        loaded = OmegaConf.load(path)
        if not OmegaConf.is_dict(loaded):
            raise ValueError("not a mapping")
        return OmegaConf.merge(OmegaConf.structured(RootConfig), loaded)
    except Exception as err:  # OmegaConf's errors, and yaml's own on garbage (a scanner error)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is corrupt ({first})") from err


def _load_overrides(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    if not path.is_file():
        return []
    try:
        saved = OmegaConf.load(path)
    except Exception as err:
        raise ValueError(f"{path} is corrupt ({type(err).__name__})") from err
    if not OmegaConf.is_list(saved):
        raise ValueError(f"{path} is corrupt (not a list)")
    return [str(o) for o in saved]


def config_diff(saved, new, ignore=()) -> list[str]:
    """``key: A there, B here`` for every leaf in which two configs differ (keys under ``ignore`` skipped)."""
    from omegaconf import OmegaConf

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    a = flat(OmegaConf.to_container(saved, resolve=True))
    b = flat(OmegaConf.to_container(new, resolve=True))
    differing = [k for k in sorted(a.keys() | b.keys()) if k not in ignore and (k in a, a.get(k)) != (k in b, b.get(k))]
    return [f"{k}={a.get(k, '(unset)')} there, {b.get(k, '(unset)')} here" for k in differing]


def _provenance() -> dict:
    """Where and how a run started or resumed; ``command`` with secrets masked (a URL's password, a key's value)."""
    return {
        "command": redact_data(list(sys.argv)),
        "versions": versions(),
        "git_commit": git_commit(Path(__file__).parent),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _group_option(group: str, option: str, current):
    """The keys of conf/<group>/<option>.yaml over ``current`` (ConfigError naming the valid options)."""
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import ConfigError
    from mssr_cli.config.paths import conf_dir, group_options

    if option not in group_options(group):
        raise ConfigError(f"{group}={option}: unknown {group} option; valid choices: {', '.join(group_options(group))}")
    return OmegaConf.merge(current, OmegaConf.load(conf_dir() / group / f"{option}.yaml"))


def resume_config(run_dir: Path, extra_overrides: list[str]):
    """``mssr train --resume RUN_DIR``: (config, overrides) of the run saved in RUN_DIR, with the
    ``RESUME_KEYS`` overrides given applied. Raises ConfigError (one line) when RUN_DIR is no run
    folder, holds no checkpoint, or an override would change the run (it names the key)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mssr_cli.config.compose import ConfigError, validate

    folder = RunFolder(Path(run_dir), writes=False)  # the run itself restores files, under its lock
    if not folder.path.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run folder")
    if not (folder.path / "config.yaml").exists() and not ckpt.listed(folder.checkpoints):
        raise ConfigError(f"--resume {run_dir}: not a run folder (no config.yaml)")
    if folder.latest_checkpoint() is None:
        raise ConfigError(f"--resume {run_dir}: no checkpoint in {folder.checkpoints} to resume from "
                          "(runs save one every train.save_every steps)")
    try:
        cfg, overrides = folder.saved_config(warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    except RunFolderError as err:
        raise ConfigError(str(err)) from err
    for override in extra_overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep:
            raise ConfigError(f"{override}: not a key=value override")
        if key in RESUME_GROUPS:  # executor=slurm: a whole group of keys that say where the run runs
            cfg[key] = _group_option(key, value, cfg[key])
            overrides = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key] + [override]
            continue
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
    """summary.json: start, final and best validation accuracy, steps, wall time, from the kept lines (the lines
    of steps a collapse rollback abandoned are not the run's trajectory)."""
    metrics = trajectory.kept(metrics)
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
