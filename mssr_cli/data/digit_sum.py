"""The built-in reasoning task: add up 2-4 handwritten digits shown side by side.

On ``digits`` the answer is one token, so there is no reasoning to explore. Here each image shows
2 to 4 of scikit-learn's bundled digits next to each other, left to right in a row of 4 slots of
56 px (drawn like ``digits``; slots past the last digit stay blank, so every image is 224 x 56 px
and the k-th digit always sits in the same place), the question asks for their sum, and the prompt
asks for the reasoning in ``<think></think>`` before the ``\\boxed{}`` answer. A correct answer
takes several tokens: read each digit, then add (``<think>3+5+2=10</think> \\boxed{10}``, the chain
the warm start teaches; no spaces, so a digit is the same token wherever it stands).

Deterministic: the digit images are split first (the same seeded split as ``digits``, so
validation sums are built only from validation digits), then each split's examples are composed
with a fixed seed (how many digits, which images). Ids are the example's index, validation ids
offset by ``VAL_ID_OFFSET``: stable across runs and disjoint between the splits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mssr_cli.data.digits import digit_image, split_indices
from mssr_cli.data.prompts import think_prompt

QUESTION = "What is the sum of the digits shown?"
MIN_DIGITS, MAX_DIGITS = 2, 4  # digits per image
NUM_EXAMPLES = {"train": 1500, "validation": 300}  # sums composed per split (~17 visits a prompt at the default length)
COMPOSE_SEED = 2024  # fixed: the examples are part of the task definition, not of a run
VAL_ID_OFFSET = 100_000  # validation ids: never equal to a training id
CHAIN = re.compile(r"<think>(\d+(?:\+\d+)*)=(\d+)</think> \\boxed\{(\d+)\}")


@dataclass(frozen=True)
class SumExample:
    """One composed example: ``rows`` are sklearn row indices, left to right; ``digits`` their labels."""

    id: int
    rows: tuple[int, ...]
    digits: tuple[int, ...]

    @property
    def answer(self) -> str:
        return str(sum(self.digits))


def compose_examples(split: str, num_val: int = 300) -> list[SumExample]:
    """The examples of ``split``, drawn only from that split's digit images (``digits.split_indices``)."""
    from sklearn.datasets import load_digits

    if split not in NUM_EXAMPLES:
        raise ValueError(f"digit_sum has splits 'train' and 'validation', not {split!r}")
    parts = split_indices(num_val)
    pool = parts.train if split == "train" else parts.val
    if len(pool) < MAX_DIGITS:
        raise ValueError(f"data.num_val={num_val} leaves {len(pool)} {split} digit images; digit_sum needs at least "
                         f"{MAX_DIGITS}")
    labels = load_digits().target
    rng = np.random.default_rng([COMPOSE_SEED, 0 if split == "train" else 1])
    offset = 0 if split == "train" else VAL_ID_OFFSET
    examples = []
    for i in range(NUM_EXAMPLES[split]):
        count = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
        rows = tuple(int(r) for r in rng.choice(pool, size=count, replace=False))  # no image twice in one sum
        examples.append(SumExample(id=offset + i, rows=rows, digits=tuple(int(labels[r]) for r in rows)))
    return examples


def sum_image(pixels: list[np.ndarray], size: int) -> Image.Image:
    """The digits side by side from the left, each as ``digits.digit_image`` draws it, in a white
    ``MAX_DIGITS * size`` x ``size`` px RGB row (a fixed place per digit: a probe with images as wide
    as their digits stayed at chance reading them after 3 epochs of the warm start)."""
    canvas = Image.new("RGB", (size * MAX_DIGITS, size), "white")
    for slot, digit in enumerate(pixels):
        canvas.paste(digit_image(digit, size), (slot * size, 0))
    return canvas


def pixel_bounds(size: int) -> tuple[int, int]:
    """Image-processor pixel bounds (min, max) that keep every digit_sum image as drawn."""
    return size * size * MAX_DIGITS, size * size * MAX_DIGITS


def chain(digits) -> str:
    """The written-out solution the warm start teaches: ``<think>3+5+2=10</think> \\boxed{10}``."""
    total = sum(digits)
    return f"<think>{'+'.join(str(d) for d in digits)}={total}</think> \\boxed{{{total}}}"


def parse_chain(text: str) -> tuple[list[int], int] | None:
    """The digits read and the boxed answer of a chain in ``chain``'s exact form; None otherwise."""
    match = CHAIN.fullmatch(text.strip())
    if match is None:
        return None
    return [int(d) for d in match.group(1).split("+")], int(match.group(3))


def load_digit_sum_split(split: str, image_size: int = 56, num_val: int = 300, limit: int | None = None,
                         with_chains: bool = False):
    """The digit_sum task as a ``datasets.Dataset`` with columns prompt, image, answer, id
    (and ``completion``, the written-out chain, when ``with_chains``: the warm start's targets)."""
    import datasets
    from sklearn.datasets import load_digits

    examples = compose_examples(split, num_val)
    if limit is not None:
        examples = examples[:limit]
    images = load_digits().images
    columns = {
        "prompt": [think_prompt(QUESTION) for _ in examples],
        "image": [sum_image([images[r] for r in ex.rows], image_size) for ex in examples],
        "answer": [ex.answer for ex in examples],
        "id": [ex.id for ex in examples],
    }
    features = {
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "image": datasets.Image(),
        "answer": datasets.Value("string"),
        "id": datasets.Value("int64"),
    }
    if with_chains:
        columns["completion"] = [chain(ex.digits) for ex in examples]
        features["completion"] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
