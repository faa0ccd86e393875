"""The toy generalization suite: the digits question on held-out digit images, each shifted away from training.

Five benchmarks, one shift each (``SHIFTS``, drawn by ``toy_shifts``; easiest first on a toy run):
thicker strokes, additive noise, rotation, a smaller digit somewhere in the frame, inverted
contrast. Every item asks ``digits``' question ("Which digit is shown?", boxed answer), so a model
trained on ``digits`` is graded as its ``val/accuracy`` is.

Images: only the digits validation split (``digits.split_indices(num_val).val``: 300 of sklearn's
1,797 images at the run's default ``data.num_val``), never a training image. No run trains on them:
``digits`` trains on the other split, ``digit_sum`` composes its training sums from that other split
too, and the tiny model's warm start reads 100 of them only to decide when to stop (no gradient); a
run's ``val/accuracy`` is measured on them (and the collapse detector's ``val_drop`` may stop a run).
They are the ``digits`` benchmark's images, unshifted: sklearn holds no digit image outside the two
splits, so no pool disjoint from validation too exists.

Items: ``NUM_ITEMS`` per benchmark, the same images in each; item ``i`` is validation image ``i``
(sklearn order, cycled when there are fewer), drawn at ``data.image_size`` px and shifted with its
own generator ``numpy.random.default_rng([shift.seed, i])``: the same image on every machine.
Light at import (the registry of ``mssr eval`` reads ``TOY_SUITE``): numpy and PIL load when items do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUM_ITEMS = 300  # items per benchmark: every validation image once at the default data.num_val
NOISE = 96  # toy_noise's amplitude, in grey levels, per block of the digit's 8x8 grid
DEGREES = (15, 20, 25, 30)  # toy_rotate's angles (either way)
RADIUS_AT_56 = 3  # toy_thick's filter radius, in px of a 56 px image
EIGHTHS = (5, 7)  # toy_small's smallest and largest side, in eighths of the frame's


@dataclass(frozen=True)
class Shift:
    """One benchmark's shift: ``toy_shifts.<draw>(pixels, size, rng, **params)``."""

    name: str
    seed: int  # item i's generator: default_rng([seed, i])
    shift: str  # what changes, in words
    parameters: str  # its parameters, in words
    draw: str  # the function of toy_shifts
    params: dict = field(default_factory=dict)


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("toy_thick", 2302, "thicker strokes", f"min filter {2 * RADIUS_AT_56 + 1}x{2 * RADIUS_AT_56 + 1} px "
              "(at 56 px)", "thick", {"radius_at_56": RADIUS_AT_56}),
        Shift("toy_noise", 2301, "additive noise", f"uniform integer in [-{NOISE}, {NOISE}] per 7x7 px block (one per "
              "digit pixel), clipped", "noise", {"amplitude": NOISE}),
        Shift("toy_rotate", 2303, "rotation", f"±{', '.join(map(str, DEGREES))} degrees, nearest pixel", "rotate",
              {"degrees": DEGREES}),
        Shift("toy_small", 2304, "scale and position", f"side {EIGHTHS[0]}/8 to {EIGHTHS[1]}/8 of the frame, "
              "anywhere in it", "small", {"eighths": EIGHTHS}),
        Shift("toy_invert", 2305, "inverted contrast", "255 - pixel: light ink on black", "invert"),
    )
}
TOY_SUITE: tuple[str, ...] = tuple(SHIFTS)


def toy_rows(num_val: int = 300) -> list[int]:
    """The sklearn row of each item: validation image ``i % len(validation)`` for item ``i``."""
    from mssr_cli.data.digits import split_indices

    pool = split_indices(num_val).val
    return [int(pool[i % len(pool)]) for i in range(NUM_ITEMS)]


def shifted_grey(name: str, pixels, size: int, item: int):
    """Item ``item`` of benchmark ``name`` drawn from the 8x8 ``pixels``: [size, size] uint8, one channel."""
    import numpy as np

    from mssr_cli.data import toy_shifts

    shift = SHIFTS[name]
    return getattr(toy_shifts, shift.draw)(pixels, size, np.random.default_rng([shift.seed, item]), **shift.params)


def load_toy_benchmark(name: str, image_size: int = 56, num_val: int = 300, limit: int | None = None):
    """Benchmark ``name``'s items as a ``datasets.Dataset``: prompt, image, answer, id (the item), row (sklearn's)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from mssr_cli.data.digits import question_rows

    if name not in SHIFTS:
        raise ValueError(f"unknown toy benchmark {name!r}; valid names: {', '.join(TOY_SUITE)}")
    raw = load_digits()
    rows = toy_rows(num_val)[:limit]
    images = [Image.fromarray(shifted_grey(name, raw.images[r], image_size, i), mode="L").convert("RGB")
              for i, r in enumerate(rows)]
    return question_rows(images, [str(int(raw.target[r])) for r in rows], list(range(len(rows))), row=rows)
