"""Where the config groups live, and which options each has (a directory listing: cheap)."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """conf/ shipped inside the wheel, else the repository's conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def group_options(group: str) -> list[str]:
    """Option names of a config group, e.g. ``group_options("model") -> ["qwen2vl-2b", ..., "tiny"]``."""
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
