"""The toy suite's shifts (``toy_suite.SHIFTS``): each draws one digit as ``digits`` does, then changes it.

Every shift is ``draw(pixels, size, rng, **params) -> [size, size] uint8`` (one grey channel, 255
background, ink dark before ``invert``): ``pixels`` is an 8x8 sklearn digit, ``rng`` the item's own
generator. Only integer arithmetic decides a pixel (PCG64 integer draws, integer sums, min
filters, a fixed-point rotation table) besides the resize every ``digits`` image goes through
(Pillow's 8-bit resize is fixed point), so an item is the same image on every machine.
"""

from __future__ import annotations

import numpy as np

from mssr_cli.data.digits import digit_grey

WHITE = 255
Q = 4096  # FIXED_POINT's scale
FIXED_POINT = {15: (3956, 1060), 20: (3849, 1401), 25: (3712, 1731), 30: (3547, 2048)}  # degrees: Q * (cos, sin)


def grey(pixels: np.ndarray, size: int) -> np.ndarray:
    """The unshifted image as ``digits`` draws it, one channel: [size, size] uint8."""
    return np.asarray(digit_grey(pixels, size))


def noise(pixels, size, rng, amplitude: int) -> np.ndarray:
    """Additive noise on the digit's own grid: each of 8 x 8 blocks (``size // 8`` px square, one per pixel of
    the sklearn digit) plus its own uniform integer in [-amplitude, amplitude], clipped to 0..255. Noise per
    pixel barely counts: a vision patch of 14 px averages it away (±96 per pixel cost a toy run 0.3 points)."""
    block = max(1, size // 8)
    cells = -(-size // block)  # blocks per side, the last one cut at the edge
    offsets = rng.integers(-amplitude, amplitude + 1, size=(cells, cells))  # [cells, cells] int64
    offsets = offsets.repeat(block, axis=0).repeat(block, axis=1)[:size, :size]  # [size, size]
    return np.clip(grey(pixels, size) + offsets, 0, WHITE).astype(np.uint8)


def thick(pixels, size, rng, radius_at_56: int) -> np.ndarray:
    """Thicker strokes: each pixel the darkest (ink is dark) of the square of side 2r+1 around it,
    r = ``radius_at_56`` px per 56 px of image (at least 1)."""
    radius = max(1, radius_at_56 * size // 56)
    padded = np.pad(grey(pixels, size), radius, constant_values=WHITE)  # [size + 2r, size + 2r]
    side = 2 * radius + 1
    return np.min([padded[dy:dy + size, dx:dx + size] for dy in range(side) for dx in range(side)], axis=0)


def rotate(pixels, size, rng, degrees: tuple[int, ...]) -> np.ndarray:
    """Rotation about the centre by one of ``degrees`` (drawn), either way (drawn); nearest pixel, white
    where the rotated frame leaves the image. Fixed point: ``FIXED_POINT`` holds cos and sin times Q,
    and each output pixel finds its source with integer sums and a floor division."""
    cos, sin = FIXED_POINT[degrees[int(rng.integers(len(degrees)))]]
    sin *= 1 if rng.integers(2) else -1
    source = grey(pixels, size)
    centred = 2 * np.arange(size, dtype=np.int64) - (size - 1)  # twice each pixel's offset from the centre
    y, x = np.meshgrid(centred, centred, indexing="ij")  # [size, size] each
    # the inverse rotation of (x, y), back to an index and rounded: floor((v / Q + size - 1 + 1) / 2)
    src_x = (cos * x + sin * y + size * Q) // (2 * Q)
    src_y = (cos * y - sin * x + size * Q) // (2 * Q)
    inside = (src_x >= 0) & (src_x < size) & (src_y >= 0) & (src_y < size)
    out = np.full((size, size), WHITE, dtype=np.uint8)
    out[inside] = source[src_y[inside], src_x[inside]]
    return out


def small(pixels, size, rng, eighths: tuple[int, int]) -> np.ndarray:
    """Scale and position: the digit drawn with a side of ``eighths`` (lowest, highest; drawn) eighths of the
    frame's, at a uniformly drawn place in a white frame."""
    side = int(rng.integers(eighths[0] * size // 8, eighths[1] * size // 8 + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    out = np.full((size, size), WHITE, dtype=np.uint8)
    out[top:top + side, left:left + side] = grey(pixels, side)
    return out


def invert(pixels, size, rng) -> np.ndarray:
    """Inverted contrast: light ink on a black ground (255 - every pixel)."""
    return WHITE - grey(pixels, size)
