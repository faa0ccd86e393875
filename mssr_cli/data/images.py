"""One image cell of a source dataset, in whichever form it is stored, as a ``datasets.Image`` value.

Accepted forms: a file path (``str``; a relative path resolves against the image root), raw
``bytes``, a ``{"bytes": ..., "path": ...}`` dict (how a ``datasets.Image`` feature stores an image
when not decoded, and how plain parquet files keep one), or a decoded ``PIL.Image``. A list of
these is a multi-image row: the first image is used (one image per prompt; multi-image prompts
are out of scope for now).

The result is again a ``{"bytes", "path"}`` dict, so bytes pass through without being decoded and
re-encoded, and a file is read only when a row is used.
"""

from __future__ import annotations

import io
from pathlib import Path


class BadImage(ValueError):
    """An image cell that gives no readable image: ``kind`` is the short reason (for counts), the message the detail."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}{detail}")
        self.kind = kind


def first_image(value):
    """The first image of a list cell, the cell itself otherwise; None when there is none."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def image_value(value, image_root: Path | None, check: bool = True) -> dict:
    """``value`` (any accepted form, or a list of them) as ``{"bytes": ..., "path": ...}``.

    With ``check``, the image is opened and verified (header and, for PNG, checksums; much cheaper
    than decoding every pixel), so an unreadable image fails here, naming its row, rather than
    in the middle of a training step. Raises ``BadImage``.
    """
    from PIL import Image

    value = first_image(value)
    if value is None:
        raise BadImage("no image")
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format=value.format or "PNG")
        return {"bytes": buffer.getvalue(), "path": None}  # already decoded: nothing to check
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            cell = {"bytes": bytes(data), "path": None}
        elif path:
            cell = {"bytes": None, "path": _resolve(path, image_root)}
        else:
            raise BadImage("no image", " (neither bytes nor path)")
    elif isinstance(value, (bytes, bytearray)):
        if not value:
            raise BadImage("no image", " (empty bytes)")
        cell = {"bytes": bytes(value), "path": None}
    elif isinstance(value, str):
        if not value.strip():
            raise BadImage("no image", " (empty path)")
        cell = {"bytes": None, "path": _resolve(value, image_root)}
    else:
        raise BadImage("not an image", f": a {type(value).__name__}")
    if check:
        _verify(cell)
    return cell


def _resolve(path: str, image_root: Path | None) -> str:
    # Hub copies keep a bare file name in "path" next to the bytes; only path-only cells get here.
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and image_root is not None:
        candidate = image_root / candidate
    return str(candidate)


def _verify(cell: dict) -> None:
    from PIL import Image, UnidentifiedImageError

    path = cell["path"]
    if path is not None and not Path(path).is_file():
        raise BadImage("image file not found", f": {path}")
    try:
        with Image.open(io.BytesIO(cell["bytes"]) if path is None else path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # PIL raises all of these
        where = f" {path}" if path else ""
        raise BadImage("unreadable image", f"{where} ({type(err).__name__}: {' '.join(str(err).split())[:80]})") from None
