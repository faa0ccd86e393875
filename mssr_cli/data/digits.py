"""The built-in image task: scikit-learn's bundled handwritten digits.

1,797 real 8x8 grey images (no download) upscaled to RGB; the question asks which digit is
shown and the answer goes in ``\\boxed{}``. The train/validation split is a fixed, seeded
permutation, so every run, test and machine sees the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mssr_cli.data.prompts import user_prompt

QUESTION = "Which digit is shown?"
SPLIT_SEED = 1234  # fixed: the split is part of the task definition, not of a run


@dataclass(frozen=True)
class DigitsSplit:
    """Row indices (into sklearn's 1,797 digits) of the train and validation splits."""

    train: np.ndarray
    val: np.ndarray


def split_indices(num_val: int = 300) -> DigitsSplit:
    """A deterministic split: ``num_val`` validation rows, the rest for training."""
    from sklearn.datasets import load_digits

    n = len(load_digits().target)
    if not 0 < num_val < n:
        raise ValueError(f"data.num_val must be in 1..{n - 1}, got {num_val}")
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return DigitsSplit(train=np.sort(order[num_val:]), val=np.sort(order[:num_val]))


def digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    """An 8x8 sklearn digit (values 0..16, ink high) as a ``size`` x ``size`` RGB image, ink dark."""
    return digit_grey(pixels, size).convert("RGB")


def digit_grey(pixels: np.ndarray, size: int) -> Image.Image:
    """``digit_image`` before the RGB conversion: one grey channel (mode L), 255 background, ink dark."""
    grey = (255 - pixels.reshape(8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((size, size), Image.BILINEAR)


def load_digits_split(split: str, image_size: int = 56, num_val: int = 300, limit: int | None = None):
    """The digits task as a ``datasets.Dataset`` with columns prompt, image, answer, id.

    ``id`` is the sklearn row index: stable across runs, epochs and splits.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "validation"):
        raise ValueError(f"digits has splits 'train' and 'validation', not {split!r}")
    raw = load_digits()
    parts = split_indices(num_val)
    rows = parts.train if split == "train" else parts.val
    if limit is not None:
        rows = rows[:limit]
    return question_rows([digit_image(raw.images[i], image_size) for i in rows],
                         [str(int(raw.target[i])) for i in rows], [int(i) for i in rows])


def question_rows(images: list, answers: list[str], ids: list[int], **extra: list[int]):
    """Rows of the digits question (``QUESTION``, boxed answer) as a ``datasets.Dataset``: prompt, image,
    answer, id, then any ``extra`` integer columns (built-in variants of the task, e.g. the toy suite)."""
    import datasets

    features = datasets.Features(
        {
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "image": datasets.Image(),
            "answer": datasets.Value("string"),
            "id": datasets.Value("int64"),
            **{name: datasets.Value("int64") for name in extra},
        }
    )
    columns = {"prompt": [user_prompt(QUESTION) for _ in ids], "image": images, "answer": answers, "id": ids}
    return datasets.Dataset.from_dict({**columns, **extra}, features=features)
