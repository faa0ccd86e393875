"""Where the config groups live, and which options each has (a directory listing: cheap)."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """conf/ shipped inside the wheel, else the repository's conf/ (editable installs)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def group_options(group: str) -> list[str]:
    """Option names of a config group, e.g. ``group_options("model") -> ["qwen2vl-2b", ..., "tiny"]``.

    Files starting with ``_`` are shared parts that options include (``experiment/_paper.yaml``)."""
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def accelerate_config_path(name_or_path: str) -> Path:
    """An accelerate config file: a name in conf/accelerate/ (``zero3.yaml``, or ``zero3``) or a path.

    conf/accelerate/ holds accelerate's own YAML format, not a Hydra group (GROUPS leaves it out)."""
    given = Path(name_or_path).expanduser()
    if given.is_file():
        return given.resolve()
    shipped = conf_dir() / "accelerate" / given.name
    return shipped if shipped.suffix else shipped.with_suffix(".yaml")
