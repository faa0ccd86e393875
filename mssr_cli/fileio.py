"""Whole-or-nothing file writes, and OS errors told in one line.

A run folder outlives the process that writes it (kills, full disks, two terminals): every file in it is
written to a temporary name in the same folder, flushed to disk, and renamed over the old one, so a
reader sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (the temporary file is unique per writer)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is shared as open() would share it
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the bytes do
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


_PLAIN = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.ENOENT: "no such file or folder",
}


def describe_os_error(err: OSError) -> str:
    """``disk full (No space left on device): /runs/x/checkpoints``: what went wrong and where, one line."""
    what = _PLAIN.get(err.errno)
    strerror = err.strerror or str(err)
    what = f"{what} ({strerror})" if what and what.lower() != strerror.lower() else (what or strerror)
    where = [str(f) for f in (err.filename, err.filename2) if f]
    return f"{what}: {' -> '.join(where)}" if where else what
