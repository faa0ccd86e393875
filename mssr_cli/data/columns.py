"""A source row, with its dataset's own column names, as the common columns every data source has.

Source columns (named by ``data.question_column``, ``data.answer_column``, ``data.image_column``):
the question text (``<image>`` placeholders removed: TRL inserts the image itself), the gold answer
(text, or a number ``str()`` turns into the answer text) and the image or list of images (any form
``mssr_cli.data.images`` accepts). Common columns (``mssr_cli.data.prompts``): ``prompt`` (the paper's
think-then-box conversational prompt), ``images`` (the row's images in order, one or more, encoded;
PIL images when read), ``answer`` (string), ``id`` (the row index in the source split, assigned by
the caller). The built-in digits task has one ``image`` instead of ``images``: TRL's GRPOTrainer reads
either column (``images``: a list per row), and ``row_images`` / ``batch_images`` read either here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mssr_cli.data.images import BadImage, image_values
from mssr_cli.data.prompts import think_boxed_prompt

# "<image>", "<image 1>", "<image1>": placeholders datasets keep where the image goes (Vision-R1-rl and
# geometry3k start each problem with "<image>"); the chat template places the image instead.
IMAGE_PLACEHOLDER = re.compile(r"<image\s*\d*>\s*", re.I)
IMAGE, IMAGES = "image", "images"  # the common column of one image per row (digits), of a list per row (the rest)


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the question, the answer and the image."""

    question: str
    answer: str
    image: str


class BadRow(ValueError):
    """A row that cannot become a training example: ``column`` names the source column, ``kind`` the short
    reason (for counts), the message the detail."""

    def __init__(self, column: str, kind: str, message: str | None = None):
        super().__init__(message or kind)
        self.column, self.kind = column, kind


def clean_question(text: str) -> str:
    """The question without image placeholders, whitespace trimmed."""
    return IMAGE_PLACEHOLDER.sub(" ", text).strip()


def image_column(column_names) -> str:
    """Which common column holds a dataset's images: ``images`` (a list per row) or ``image`` (one per row)."""
    return IMAGES if IMAGES in column_names else IMAGE


def row_images(row: dict) -> list:
    """The images of one row of common columns, in order (``[image]`` for a one-image row)."""
    if IMAGES in row:
        return list(row[IMAGES] or [])
    return [row[IMAGE]] if row.get(IMAGE) is not None else []


def batch_images(batch: dict) -> list[list]:
    """The images of each row of a batch of common columns (``dataset[a:b]``, column -> values), in order."""
    if IMAGES in batch:
        return [list(images or []) for images in batch[IMAGES]]
    return [[image] if image is not None else [] for image in batch[IMAGE]]


def common_row(raw: dict, columns: ColumnMap, image_root: Path | None, check_image: bool = True) -> dict:
    """``prompt``, ``images`` (every image of the cell, in order) and ``answer`` of one source row; raises
    ``BadRow`` naming the column (and, for a bad image of a list, which one: ``images[1]: ...``)."""
    question = raw.get(columns.question)
    if question is not None and not isinstance(question, str):
        raise BadRow(columns.question, "question not text", f"question not text ({type(question).__name__})")
    if question is None or not clean_question(question):
        raise BadRow(columns.question, "missing question")
    answer = raw.get(columns.answer)
    # A number is an answer (files often store 12, not "12"); a list or dict is not one answer.
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        kind = "answer not text or a number"
        raise BadRow(columns.answer, kind, f"{kind} ({type(answer).__name__})")
    if answer is None or answer != answer or not str(answer).strip():  # answer != answer: NaN, pandas' empty cell
        raise BadRow(columns.answer, "empty answer")
    try:
        images = image_values(raw.get(columns.image), image_root, check=check_image, column=columns.image)
    except BadImage as err:
        raise BadRow(columns.image, err.kind, str(err)) from None
    return {
        "prompt": think_boxed_prompt(clean_question(question)),
        IMAGES: images,
        "answer": str(answer).strip(),
    }
