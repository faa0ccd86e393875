"""The README's pictures of the toy suite: one PNG per benchmark, the first items side by side, upscaled.

Writes ``docs/toy_suite_<name>.png`` for ``digits`` (the unshifted images, for comparison) and each of the
five toy benchmarks: the same first ``--items`` validation images, each ``--scale`` times its 56 px
(nearest pixel, so what is shown is what the model gets), grey, a 4 px grey gap between items.

    .venv/bin/python bench/toy_suite_examples.py [--items 6] [--scale 2] [--out docs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from mssr_cli.data.digits import load_digits_split
from mssr_cli.data.toy_suite import TOY_SUITE, load_toy_benchmark, toy_rows

GAP, GAP_GREY = 4, 128  # px between items (after scaling) and their grey: each frame shows


def strip(images: list, scale: int) -> Image.Image:
    """The images in a row, each upscaled ``scale`` times (nearest pixel), one grey channel."""
    tiles = [np.asarray(image.convert("L").resize((image.width * scale, image.height * scale), Image.NEAREST))
             for image in images]
    gap = np.full((tiles[0].shape[0], GAP), GAP_GREY, dtype=np.uint8)
    return Image.fromarray(np.hstack([part for tile in tiles for part in (tile, gap)][:-1]), mode="L")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    by_id = {row["id"]: row["image"] for row in load_digits_split("validation")}
    pictures = {"digits": [by_id[row] for row in toy_rows()[:args.items]]}  # the toy items' own originals
    pictures.update({name: load_toy_benchmark(name, limit=args.items)["image"] for name in TOY_SUITE})
    args.out.mkdir(parents=True, exist_ok=True)
    for name, images in pictures.items():
        path = args.out / f"toy_suite_{name}.png"
        strip(images, args.scale).save(path, optimize=True)
        print(f"{path} ({path.stat().st_size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
