"""Every image of a split resized into the model's pixel bounds (``model.min_pixels``, ``model.max_pixels``)
when the split is built, so the rollouts and the loss see the same pixels.

Why in the data: the trainer's processor gets the bounds, but TRL builds its vLLM engine without processor
arguments, so vLLM's processor keeps the model folder's own bounds (the Qwen2-VL and Qwen2.5-VL Instruct
folders: 3,136 to 12,845,056 px, 4 to 16,384 image tokens) and would give an image outside ours other
pixels and another number of image tokens than the trainer's: the policy would be trained on an image it
did not answer. The reference (ruiiu/MSSR, an EasyR1 fork) also resizes in its dataset, before both paths.

The size is the Qwen-VL processor's own ``smart_resize`` under our bounds: each side a multiple of 28 px,
width x height within the bounds. The reference's rule alone (scale by sqrt(bound / pixels), truncate) is
not enough here: its images land on a bound, and the processor's rounding to 28 px then crosses the bound
for the processor that has it and not for the other (a 512x512 image for min 262,144 px becomes 532x532
with that bound, 504x504 without; for the paper's bounds, 27% of random sizes of 100 to 5,000 px a side
end apart). An image already on that grid is left as it is by every processor whose bounds hold its
pixels, so both paths agree.
"""

from __future__ import annotations

import io
import math

from mssr_cli.data.columns import IMAGES, image_column
from mssr_cli.data.images import undecoded
from mssr_cli.data.sources import DataSourceError, quiet_datasets

GRID = 28  # px: Qwen2-VL and Qwen2.5-VL cut 14 px patches and merge them 2x2, so their processors round sides to 28


def fit_to_bounds(image, min_pixels: int | None, max_pixels: int | None):
    """``image`` (PIL) as a Qwen-VL processor with these bounds would resize it, done once here.

    Returns an RGB image whose sides are multiples of 28 px and whose width x height lies within
    ``[min_pixels, max_pixels]``, the aspect ratio kept as closely as that allows (the processor's
    ``smart_resize``; bicubic, as the processor resamples). Transparency is laid on white, as the processor
    does (the reference drops the alpha channel instead). A null bound sets no bound on its side; both null:
    ``image`` as it is. Returns ``image`` itself when it already fits (nothing decoded). Raises
    ``ValueError`` for an aspect ratio over 200, which no Qwen-VL processor takes.
    """
    if min_pixels is None and max_pixels is None:
        return image
    from PIL import Image
    from transformers.image_transforms import convert_to_rgb

    width, height = fitted_size(image.width, image.height, min_pixels, max_pixels)
    if image.mode != "RGB" or image.info.get("transparency") is not None:
        image = Image.fromarray(convert_to_rgb(image, return_numpy=True))  # RGB before resizing: no palette resampling
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


def fitted_size(width: int, height: int, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    """``(width, height)`` of ``fit_to_bounds``' result: the Qwen-VL processor's ``smart_resize`` (factor 28) under
    these bounds, a null bound no bound. Bounds closer than a 28 px step may hold no such size for some aspect
    ratios; the processor itself cannot keep such an image either."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = smart_resize(height, width, factor=GRID, min_pixels=min_pixels or 1, max_pixels=max_pixels or math.inf)
    return width, height


def fit_split(rows, min_pixels: int | None, max_pixels: int | None):
    """``rows`` (a ``datasets.Dataset`` of common columns) with every image, ``image`` or each of a row's
    ``images``, passed through ``fit_to_bounds``. An image that already fits keeps its stored bytes; a resized
    one is stored as PNG, lossless, so the pixels read back are the ones resized. ``rows`` itself when both
    bounds are null. Raises ``DataSourceError`` naming the row id for an image no processor takes."""
    if min_pixels is None and max_pixels is None:
        return rows
    column = image_column(rows.column_names)
    feature = rows.features[column]
    stored = undecoded(rows, column)

    def fit(row: dict) -> dict:
        cells = row[column] if column == IMAGES else [row[column]]
        fitted = [_fit_cell(cell, min_pixels, max_pixels, f"row id {row['id']}, {column}[{index}]")
                  for index, cell in enumerate(cells)]
        return {column: fitted if column == IMAGES else fitted[0]}

    with quiet_datasets():
        # never a cached map: the bounds are not in the source's fingerprint
        fitted = stored.map(fit, features=stored.features, load_from_cache_file=False)
    return fitted.cast_column(column, feature)


def _fit_cell(cell: dict, min_pixels: int | None, max_pixels: int | None, where: str) -> dict:
    """One stored image cell (``{"bytes", "path"}``) fitted to the bounds, as a stored cell again."""
    from PIL import Image

    with Image.open(io.BytesIO(cell["bytes"]) if cell["bytes"] else cell["path"]) as image:
        try:
            fitted = fit_to_bounds(image, min_pixels, max_pixels)
        except ValueError as err:
            raise DataSourceError(f"{where}: a {image.width}x{image.height} px image: {err}") from None
        if fitted is image:
            return cell
        buffer = io.BytesIO()
        fitted.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}
