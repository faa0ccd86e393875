"""The local model cache (``$MSSR_CACHE``, default ``~/.cache/mssr``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("MSSR_CACHE") or Path.home() / ".cache" / "mssr")
