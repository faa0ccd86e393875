"""Drop prompts that are too long for the model before training (``data.max_prompt_tokens``).

The paper's reference code (EasyR1 fork ruiiu/MSSR, ``verl/utils/dataset.py``
``_filter_overlong_prompts`` with ``filter_overlong_prompts=true``, ``max_prompt_length=2048``)
removes, before training, every prompt whose token count is over the limit, counting the image
tokens as the processor expands them: it renders the chat template with
``add_generation_prompt=True``, runs the processor on the images and text
(``add_special_tokens=False``) and compares ``len(input_ids)``. Without the filter a few huge
images would make prompts of thousands of tokens: rollouts of those prompts cost far more memory
than the rest, and a prompt cut to fit would lose image tokens and break the model's input.

Here the same count is computed without running the image processor on every row (a real
dataset has ~10K rows with large images): each image's size is read from its file header, and
the processor's own size API says how many image tokens that size becomes. A row with several
images counts every one of them.
"""

from __future__ import annotations

from io import BytesIO

from mssr_cli.data.sources import DataSourceError  # a one-line error for the CLI, no traceback

_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that exif_transpose turns by 90 degrees


def _stored_image_size(value) -> tuple[int, int]:
    """(height, width) of a datasets Image value ({bytes, path}) as it reads decoded, from its header only.

    ``datasets.Image`` applies ``PIL.ImageOps.exif_transpose`` when it decodes, so an EXIF
    orientation that turns the image by 90 degrees swaps its sides here too.
    """
    import os

    import PIL.Image

    if isinstance(value, PIL.Image.Image):  # already decoded (exif_transpose already applied)
        return value.height, value.width
    data, path = value.get("bytes"), value.get("path")
    if data is None and not (path and os.path.isfile(path)):  # e.g. a remote path: let datasets read it
        import datasets

        image = datasets.Image().decode_example(value)
        return image.height, image.width
    with PIL.Image.open(BytesIO(data) if data is not None else path) as image:  # lazy: reads the header, no pixels
        # A PNG keeps EXIF after its pixel data only rarely, and reading it there decodes the pixels.
        in_header = image.format != "PNG" or "exif" in image.info
        orientation = image.getexif().get(_EXIF_ORIENTATION) if in_header else None
        width, height = image.size
    return (width, height) if orientation in _SWAPS_SIDES else (height, width)


def _image_sizes(dataset, batch_size: int = 256) -> list[list[tuple[int, int]]]:
    """(height, width) of every image of each row, in order: the ``images`` lists, or one ``image`` per row."""
    from mssr_cli.data.columns import IMAGES, image_column

    column = image_column(dataset.column_names)
    images = dataset.select_columns([column]).with_format("arrow")  # stored {bytes, path} values, none decoded
    sizes: list[list[tuple[int, int]]] = []
    for batch in images.iter(batch_size=batch_size):  # in batches: never every image's bytes at once
        for value in batch[column].to_pylist():
            row = value if column == IMAGES else [value]
            if not row or any(item is None for item in row):
                raise DataSourceError(f"row {len(sizes)} has no image: every prompt needs one")
            sizes.append([_stored_image_size(item) for item in row])
    return sizes


def _image_token_counts(processor, sizes: list[tuple[int, int]]) -> list[int]:
    """Image tokens per (height, width), from the processor's own size API (its resize rule, its pixel bounds)."""
    if not hasattr(processor, "_get_num_multimodal_tokens"):
        raise DataSourceError(
            f"data.max_prompt_tokens: {type(processor).__name__} cannot tell image token counts from image sizes "
            "(no _get_num_multimodal_tokens); set data.max_prompt_tokens=null"
        )
    unique = sorted(set(sizes))  # many images share a size
    tokens = processor._get_num_multimodal_tokens(image_sizes=[list(s) for s in unique]).num_image_tokens
    by_size = dict(zip(unique, tokens, strict=True))
    return [by_size[s] for s in sizes]


def _exact_count(processor, images: list, text: str) -> int:
    """The reference's count for one row: the full processor on the row's images and the rendered text."""
    return len(processor(images=[images], text=[text], add_special_tokens=False)["input_ids"][0])


def prompt_token_counts(dataset, processor) -> list[int]:
    """Tokens of each row's prompt as the model sees it, image tokens included.

    ``dataset`` has the common columns (``prompt``: chat messages; ``images``: a list of datasets
    Images per row, or ``image``: one). The prompt is rendered as training renders it
    (``chat_texts``: TRL's ``prepare_multimodal_messages`` with the row's images, the chat
    template with ``add_generation_prompt=True``) and tokenised without special tokens, as the
    reference does; each image placeholder in the text then becomes as many tokens as the
    processor makes for that image's size. Equal to ``len(processor(images=[row_images],
    text=[rendered], add_special_tokens=False)["input_ids"][0])`` without decoding or resizing any
    image; the first row is checked against that exact count, so a processor that expands images
    differently fails here instead of filtering wrongly.
    """
    from mssr_cli.data.columns import row_images
    from mssr_cli.models.generation import chat_texts

    if len(dataset) == 0:
        return []
    sizes = _image_sizes(dataset)  # [rows][images of the row]
    texts = chat_texts(processor, list(dataset["prompt"]), image_counts=[len(row) for row in sizes])
    ids = processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    flat_tokens = iter(_image_token_counts(processor, [size for row in sizes for size in row]))
    counts = []
    for row, (row_ids, row_sizes) in enumerate(zip(ids, sizes, strict=True)):
        n_image = sum(next(flat_tokens) for _ in row_sizes)  # every image of the row
        placeholders = row_ids.count(image_token_id)
        if placeholders != len(row_sizes):
            raise DataSourceError(f"row {row}: the rendered prompt holds {placeholders} image placeholders, "
                                  f"expected {len(row_sizes)} (one per image)")
        counts.append(len(row_ids) - placeholders + n_image)
    first = row_images(dataset[0])
    if any(isinstance(image, dict) for image in first):  # an undecoded Image column
        import datasets

        first = [datasets.Image().decode_example(image) if isinstance(image, dict) else image for image in first]
    exact = _exact_count(processor, first, texts[0])
    if exact != counts[0]:
        raise DataSourceError(
            f"data.max_prompt_tokens: {type(processor).__name__} expands images differently from its size API "
            f"({exact} tokens vs {counts[0]} counted); set data.max_prompt_tokens=null"
        )
    return counts


def drop_long_prompts(dataset, processor, max_tokens: int | None, label: str, console):
    """``dataset`` without the rows whose prompt is longer than ``max_tokens`` tokens (images included).

    As the reference's ``filter_overlong_prompts``: a prompt of exactly ``max_tokens`` tokens is
    kept. ``None`` returns ``dataset`` as is, without counting. Prints one line to ``console``
    (how many of how many ``label`` prompts were dropped, the longest kept) so users see the
    check ran. Row ids are kept as they are: they key per-prompt state (the value tracker).
    Raises ``DataSourceError`` (one line at the CLI) when no prompt is left.
    """
    if max_tokens is None:
        return dataset
    counts = prompt_token_counts(dataset, processor)
    keep = [row for row, count in enumerate(counts) if count <= max_tokens]
    key = f"data.max_prompt_tokens={max_tokens}"
    if not keep:
        shortest = min(counts, default=0)
        raise DataSourceError(f"{key}: every one of the {len(counts):,} {label} prompts is longer (shortest: {shortest} tokens, images included)")
    longest = max(counts[row] for row in keep)
    dropped = len(counts) - len(keep)
    if dropped == 0:
        console.print(f"{key}: all {len(counts):,} {label} prompts fit (longest: {longest} tokens, images included)")
        return dataset
    console.print(f"{key}: dropped {dropped:,} of {len(counts):,} {label} prompts longer than {max_tokens} tokens "
                  f"(images included); longest kept: {longest}")
    return dataset.select(keep)
