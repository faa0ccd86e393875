"""Checkpoint manifests: each checkpoint lists its files' sizes and hashes; resuming takes the newest that verifies.

A checkpoint is written into ``checkpoints/.staging/`` and renamed into place whole, so a kill mid-save
cannot leave half of one. What the rename cannot guard against comes later: a disk or copy that
truncates a file, a hand edit, a sync tool that drops one. ``manifest.json`` (written last, before the
rename) records every file's size and xxh3-128 hash; a checkpoint is used only when all of them match.
xxh3 (the ``xxhash`` package, a datasets dependency) hashes at memory speed: a 7B checkpoint's 45 GB
cost the time the disk takes to read them once, not a cryptographic hash's minute per 50 GB.

Each checkpoint also carries a copy of the run folder's own files (``run/config.yaml``,
``run/overrides.yaml``, ``run/metrics.jsonl``, ``run/samples.jsonl``) as they were at that step, so a corrupt config or a
torn metrics line in the run folder is restored from the checkpoint instead of lost.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mssr_cli.fileio import write_json_atomic

MANIFEST = "manifest.json"
STATE_FILE = "mssr_state.json"  # estimator (value tracker) and other mssr state
REQUIRED = ("trainer_state.json", STATE_FILE)  # without these a resume would not be the same run
RUN_COPY = "run"  # the run folder's files, copied into the checkpoint
RUN_FILES = ("config.yaml", "overrides.yaml", "metrics.jsonl", "samples.jsonl")
PREFIX = "checkpoint-"
_CHUNK = 8 << 20


def file_hash(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_run_files(run_dir: Path, checkpoint: Path) -> None:
    """The run folder's config and metrics as of this checkpoint (absent ones are skipped)."""
    target = checkpoint / RUN_COPY
    target.mkdir(exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target / name)


def write_manifest(checkpoint: Path) -> dict:
    """Record every file under ``checkpoint`` (sizes and hashes) in its ``manifest.json``; returns it."""
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        rel = path.relative_to(checkpoint).as_posix()
        if rel != MANIFEST:
            files[rel] = {"size": path.stat().st_size, "xxh3_128": file_hash(path)}
    manifest = {"version": 1, "files": files}
    write_json_atomic(checkpoint / MANIFEST, manifest)
    return manifest


def verify(checkpoint: Path) -> str | None:
    """None when every file of the checkpoint matches its manifest, else why not (one short phrase)."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:
        return f"no {MANIFEST} (an unfinished save, or one by an mssr without manifests)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is corrupt"
    for name in REQUIRED:
        if name not in files:
            return f"{name} is not in its manifest"
    for rel, entry in files.items():
        path = checkpoint / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as err:
            return f"{rel} cannot be read ({err.strerror})"
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, the manifest says {entry.get('size')} (truncated or overwritten)"
        try:
            digest = file_hash(path)
        except OSError as err:
            return f"{rel} cannot be read ({err.strerror})"
        if digest != entry.get("xxh3_128"):
            return f"{rel} does not match its hash (corrupt)"
    return None


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def listed(root: Path) -> list[Path]:
    """The checkpoint folders under ``root``, oldest first (staging and stray names ignored)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


def newest_verified(root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that verifies or None, [(newer checkpoint skipped, why), ...] newest first)."""
    skipped = []
    for checkpoint in reversed(listed(root)):
        problem = verify(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append((checkpoint, problem))
    return None, skipped


def drop_old(root: Path, keep: int, keep_initial: bool = False, healthy_before: int | None = None) -> None:
    """Keep the ``keep`` newest checkpoints (``keep`` >= 1: the newest is never dropped); with ``keep_initial``
    also checkpoint-0, the policy before RL (a collapse rollback may need to go back that far); with
    ``healthy_before`` (an update step) also the newest checkpoint below it, the newest one a collapse alarm
    cannot implicate (CollapseDetector.healthy_before), however many newer ones were saved since."""
    found = listed(root)
    healthy = [c for c in found if healthy_before is not None and step_of(c) < healthy_before]
    kept = {healthy[-1]} if healthy else set()
    found = [c for c in found if c not in kept and not (keep_initial and step_of(c) == 0)]
    for old in found[: max(0, len(found) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)


def drop_after(root: Path, step: int) -> list[Path]:
    """Delete the checkpoints newer than update ``step`` (a collapse rollback abandons them); returns them."""
    newer = [c for c in listed(root) if step_of(c) > step]
    for checkpoint in newer:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return newer


def remove_tree(path: Path) -> None:
    """Delete a partial checkpoint (e.g. a staging folder after a failed save); absent is fine."""
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
