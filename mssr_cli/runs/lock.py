"""One writer per run folder: ``<run>/.lock`` holds the owner's pid, host and process start time.

Two ``mssr train`` processes on one folder would interleave metrics.jsonl and overwrite each other's
checkpoints. The lock is created with O_EXCL (atomic on local and NFSv3+ file systems); a second
writer is refused with the holder's name. A lock whose process is gone (same host, pid not running,
or running but started at another time: the pid was reused) is stale: a SIGKILLed run leaves one,
and the next run takes it over with a warning. A lock from another host cannot be checked from here
and is never taken over.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = ".lock"
_UNREADABLE_GRACE_S = 10.0  # a lock with no content yet may be one being written this instant


class RunFolderBusy(Exception):
    """Another live process holds the run folder; the message names it."""

    def __init__(self, folder: Path, holder: dict | None):
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder} is in use by {describe(holder)}: one run writes a run folder at a time; "
                         f"wait for it to finish or stop it (if it is gone, delete {folder / LOCK_FILE})")


def describe(holder: dict | None) -> str:
    if not holder:
        return "a process whose lock is still being written"
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('since')})"


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def read_holder(folder: Path) -> dict | None:
    return read_holder_file(Path(folder) / LOCK_FILE)


def read_holder_file(path: Path) -> dict | None:
    try:
        holder = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def holder_alive(holder: dict | None) -> bool:
    """Whether the lock's process may still run (a process on another host always may)."""
    if holder is None:
        return False
    if holder.get("host") != platform.node():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _start_time(pid)
    if started is None:
        return False
    recorded = holder.get("created")
    return not isinstance(recorded, (int, float)) or abs(started - recorded) < 1.0  # else: a reused pid


def busy_holder(folder: Path) -> dict | None:
    """The live holder of ``folder``'s lock, or None when it is free or stale."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return None
    holder = read_holder(folder)
    if holder is None:  # unreadable: being written right now, or torn by a kill long ago
        try:
            fresh = time.time() - path.stat().st_mtime < _UNREADABLE_GRACE_S
        except FileNotFoundError:
            return None
        return {} if fresh else None
    return holder if holder_alive(holder) else None


@dataclass
class RunLock:
    path: Path
    mine: dict

    def release(self) -> None:
        """Remove the lock if it is still ours (a stale takeover by someone else leaves theirs alone)."""
        holder = read_holder_file(self.path)
        if holder is not None and (holder.get("pid"), holder.get("host")) == (self.mine["pid"], self.mine["host"]):
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(folder: Path, warn=print) -> RunLock:
    """Take ``folder``'s lock (creating the folder); RunFolderBusy if a live process holds it.

    ``warn(message)`` hears about a stale lock taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    mine = {"pid": os.getpid(), "host": platform.node(), "created": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(folder)
            if busy_holder(folder) is not None:
                raise RunFolderBusy(folder, holder) from None
            # stale: move it aside under a name of our own; of two racing takers only one rename succeeds
            aside = folder / f"{LOCK_FILE}.stale-{os.getpid()}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            moved = read_holder_file(aside)
            if moved != holder and holder_alive(moved):  # another taker was faster and this is its live lock
                try:
                    os.link(aside, path)  # put it back (fails only if a third process locked meanwhile)
                except FileExistsError:
                    pass
                aside.unlink(missing_ok=True)
                raise RunFolderBusy(folder, moved)
            aside.unlink(missing_ok=True)
            warn(f"took over a stale lock on {folder}: {describe(holder)} is no longer running")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(mine))
        return RunLock(path, mine)
    raise RunFolderBusy(folder, read_holder(folder))
