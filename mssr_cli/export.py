"""``mssr export``: a run's policy as a standalone Hugging Face folder (a LoRA adapter merged into its base).

What is exported: ``<run>/model/`` (the final policy), else, for a run stopped before its end, the newest
checkpoint that verifies against its manifest (newer ones that do not are named and skipped).

- Full-weight run: the model and processor files are copied as they are (bit for bit); training state
  (optimizer, scheduler, RNG, trainer and mssr state, manifest, training_args.bin) stays behind.
- LoRA run (the source is a PEFT adapter): only with ``merge_lora``. The base named by the adapter
  (``base_model_name_or_path``, as transformers and ``mssr eval`` resolve it) loads in the dtype the run
  trained in (``model.dtype``; ``auto``: the base's stored dtype), peft loads the adapter over it,
  ``merge_and_unload`` folds it into the weights, and the merged model is saved with the run's processor.
  Without ``merge_lora`` the export is refused: an adapter alone is not a standalone model.

The folder gets ``mssr_export.json`` (run, source, merged, base model). It is written into a sibling
temporary folder and renamed into place, so ``out`` never holds half an export; an existing ``out`` is
replaced only when it is empty or a previous export (it holds ``mssr_export.json``).

This module sits at the package root beside cli.py: it reads run folders (``runs``: manifests and saved
config) and writes a model folder for evaluation and transformers, so it belongs to neither.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import time
import uuid
import warnings
from pathlib import Path

from mssr_cli.fileio import write_json_atomic
from mssr_cli.runs import checkpoints as ckpt

EXPORT_FILE = "mssr_export.json"
ADAPTER_CONFIG = "adapter_config.json"
# Files beside a model that are training state, not part of the model (Trainer's, then mssr's own)
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "trainer_state.json",
                  "training_args.bin", ckpt.STATE_FILE, ckpt.MANIFEST)


class ExportError(Exception):
    """A run that cannot be exported as asked (one line: what, where, and what to do)."""


def export_run(run_dir: Path, out: Path, merge_lora: bool = False, console=None) -> Path:
    """Write the policy of the run folder ``run_dir`` into ``out`` as a Hugging Face model folder; returns ``out``.

    Raises ExportError (one-line message) for a folder that is not a run, a run with neither a model nor a
    checkpoint that verifies, a LoRA run without ``merge_lora``, a base model that cannot load here, or an
    ``out`` that is a file or a non-empty folder other than a previous export."""
    from mssr_cli.runs.folder import RunFolder, RunFolderError

    if console is None:
        from mssr_cli.console import stdout_console

        console = stdout_console()
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser().absolute()
    if not run_dir.exists():
        raise ExportError(f"{run_dir}: no such folder (give a run folder, e.g. runs/<run>)")
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is a file, not a run folder")

    def note(message: str) -> None:
        console.print(f"note: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)

    try:
        saved = RunFolder(run_dir, writes=False).saved_config(warn=note)
    except RunFolderError as err:
        raise ExportError(str(err)) from None
    if saved is None:
        raise ExportError(f"{run_dir}: not a run folder (no config.yaml, no checkpoints/); give a folder `mssr train` wrote")
    cfg = saved[0]
    source = _source(run_dir, note)
    lora = (source / ADAPTER_CONFIG).is_file()
    if lora and not merge_lora:
        raise ExportError(f"{run_dir} is a LoRA run: {source} holds a PEFT adapter, not a standalone model; pass "
                          f"--merge-lora to merge it into its base model")
    if merge_lora and not lora:
        note(f"{run_dir} trained every weight (no LoRA adapter): nothing to merge, its weights are copied")
    base = _adapter_base(source) if lora else cfg.model.name_or_path
    _check_out(out, source)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(out, "partial")
    try:
        if lora:
            _merge(source, base, cfg.model, staging)
        else:
            _copy_model(source, staging)
        write_json_atomic(staging / EXPORT_FILE, {
            "run": run_dir.name,
            "run_dir": str(run_dir.absolute()),
            "source": source.relative_to(run_dir).as_posix(),  # model, or checkpoints/checkpoint-<update>
            "merged": lora,  # True: a LoRA adapter merged into base_model
            "base_model": base,  # the starting model (null: the tiny preset, built locally)
            "preset": cfg.model.preset,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    how = f"LoRA adapter merged into {base}" if lora else "weights copied"
    console.print(f"Exported {run_dir.name} ({source.relative_to(run_dir).as_posix()}, {how}) to {out}",
                  markup=False, highlight=False, soft_wrap=True)
    return out


def _source(run_dir: Path, note) -> Path:
    """The run's model/ (the final policy), else its newest checkpoint that verifies."""
    from mssr_cli.models.loading import CONFIG_FILES

    model = run_dir / "model"
    if any((model / name).is_file() for name in CONFIG_FILES):  # model/ is renamed into place whole
        return model
    chosen, skipped = ckpt.newest_verified(run_dir / "checkpoints")
    why = "; ".join(f"{path.name} skipped: {problem}" for path, problem in skipped)
    if chosen is None:
        raise ExportError(f"{run_dir}: no model/ (the run has not finished) and no checkpoint in "
                          f"{run_dir / 'checkpoints'} that verifies{f' ({why})' if why else ''}")
    note(f"{run_dir} has no model/ (stopped before its end): exporting {chosen.name}{f' ({why})' if why else ''}")
    return chosen


def _adapter_base(source: Path) -> str:
    """The adapter's base model (a Hub id or folder), checked to load here in seconds."""
    from mssr_cli.models.loading import ModelNotFoundError, ensure_loadable

    config = source / ADAPTER_CONFIG
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise ExportError(f"{config}: cannot be read ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(base, str) or not base:
        raise ExportError(f"{config} names no base_model_name_or_path: the adapter's base model is unknown")
    try:
        ensure_loadable(base, f"the LoRA adapter's base model {base} (base_model_name_or_path in {config})",
                        pass_folder=f"DIR as base_model_name_or_path in {config}")
    except ModelNotFoundError as err:
        raise ExportError(str(err)) from None
    return base


def _check_out(out: Path, source: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out == source.absolute() or source.absolute() in out.parents:
        raise ExportError(f"--out {out} is inside {source}, the folder it exports: give a folder outside it")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise ExportError(f"--out {out} is not empty and not a previous export (no {EXPORT_FILE}): give a new or "
                          "empty folder")


def _training_state(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in TRAINING_STATE)


def _copy_model(source: Path, staging: Path) -> None:
    """The model and processor files of ``source`` (its top level: a checkpoint's run/ copy stays behind)."""
    for path in sorted(source.iterdir()):
        if path.is_file() and not _training_state(path.name):
            shutil.copyfile(path, staging / path.name)


def _merge(source: Path, base: str, model_cfg, staging: Path) -> None:
    """Base + adapter (peft) -> merged weights, saved with the run's processor into ``staging``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    remote_code = model_cfg.trust_remote_code is True  # as the run loaded it
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(model_cfg.dtype, "auto")
    try:
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, trust_remote_code=remote_code)
        with warnings.catch_warnings():  # peft asks transformers a deprecated question: not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            merged = PeftModel.from_pretrained(model, str(source)).merge_and_unload()
        processor = AutoProcessor.from_pretrained(str(source), trust_remote_code=remote_code)
    except Exception as err:  # a base that is not this adapter's, a torn adapter file: one line
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise ExportError(f"cannot merge the LoRA adapter in {source} into {base}: {detail}") from None
    merged.save_pretrained(str(staging))
    processor.save_pretrained(str(staging))


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; a previous export there is moved aside first, then deleted."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = _sibling(out, "old")
        out.replace(old)  # old is empty: the rename replaces it
    try:
        staging.replace(out)  # so is an empty out
    except OSError:
        if old is not None:
            old.replace(out)  # the previous export goes back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sibling(out: Path, kind: str) -> Path:
    """A new empty hidden folder beside ``out`` (same file system, so renames between them are atomic).

    mkdir, not mkdtemp: the folder gets the permissions the user's umask gives, as ``out`` would."""
    folder = out.parent / f".{out.name}.{kind}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder
