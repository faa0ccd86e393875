"""The image cell of a source dataset, in whichever form it is stored, as ``datasets.Image`` values.

Accepted forms of one image: a file path (``str``; a relative path resolves against the image
root), raw ``bytes``, a ``{"bytes": ..., "path": ...}`` dict (how a ``datasets.Image`` feature stores
an image when not decoded, and how plain parquet files keep one), or a decoded ``PIL.Image``. A
list of these is a multi-image row: every image is kept, in order (Qwen-VL takes several images
per prompt); an empty list is a row without an image.

Each image becomes again a ``{"bytes", "path"}`` dict, so bytes pass through without being decoded
and re-encoded, and a file is read only when a row is used.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path


class BadImage(ValueError):
    """An image cell that gives no readable image: ``kind`` is the short reason (for counts), the message the
    detail; in a list cell the message starts with which image (``images[1]: ...``, the cell's column name)."""

    def __init__(self, kind: str, detail: str = "", where: str = ""):
        super().__init__(f"{where}: {kind}{detail}" if where else f"{kind}{detail}")
        self.kind = kind


def image_values(value, image_root: Path | None, check: bool = True, column: str = "images") -> list[dict]:
    """Every image of a cell, in order, each as ``{"bytes": ..., "path": ...}``: one image gives a list of one.

    Each image is checked as ``image_value`` checks one; a bad one raises ``BadImage`` whose message names
    it by its place in the list (``column[i]``, 0-based). An empty list (or a missing cell) has no image.
    """
    if not isinstance(value, (list, tuple)):  # one image
        return [image_value(value, image_root, check)]
    if not value:
        raise BadImage("no image", " (an empty list)")
    cells = []
    for index, item in enumerate(value):
        try:
            cells.append(image_value(item, image_root, check))
        except BadImage as err:
            raise BadImage(err.kind, str(err)[len(err.kind):], where=f"{column}[{index}]") from None
    return cells


def image_value(value, image_root: Path | None, check: bool = True) -> dict:
    """``value`` (one image, any accepted form) as ``{"bytes": ..., "path": ...}``; a list is ``image_values``'.

    With ``check``, the image is opened and checked (PNG: every chunk's checksum, much cheaper than
    decoding; other formats: decoded, JPEG at 1/8 scale), and one over PIL's decompression-bomb
    pixel limit is refused before any decoding, so a truncated, unreadable or huge image fails
    here, naming its row, rather than in the middle of a training step. Raises ``BadImage``.
    """
    from PIL import Image

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
        raise BadImage("not an image", f" ({type(value).__name__})")
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
    where = f" {path}" if path else ""
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; over the limit is a bad row, never decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(cell["bytes"]) if path is None else path) as image:
                if image.format == "PNG":
                    image.verify()  # every chunk's checksum up to IEND: finds truncation without decoding pixels
                else:  # verify() checks nothing for JPEG and most formats; decode (JPEG at 1/8 scale, ~1 ms)
                    image.draft(image.mode, (1, 1))
                    image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("image too large", f"{where} ({' '.join(str(err).split())})") from None
    except Exception as err:  # PIL raises many types on broken bytes (OSError, SyntaxError, EOFError, ...)
        if isinstance(err, UnidentifiedImageError):  # its text is the file's repr: the path is named, a buffer is noise
            text = "cannot identify image: unknown format or broken header"
        else:
            text = " ".join(str(err).split())[:80]
        raise BadImage("unreadable image", f"{where} ({type(err).__name__}: {text})") from None


def undecoded(rows, column: str):
    """``rows`` (a ``datasets.Dataset``) with an image feature in ``column`` left as stored bytes/paths (no decode,
    no re-encode); other columns and features as they are."""
    import datasets

    feature = rows.features[column]
    if isinstance(feature, datasets.Image):
        return rows.cast_column(column, datasets.Image(decode=False))
    if isinstance(getattr(feature, "feature", None), datasets.Image):  # a list of images (Sequence / List)
        return rows.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return rows
