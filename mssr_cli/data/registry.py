"""Data sources by name: each returns a ``datasets.Dataset`` with columns prompt, image, answer, id.

``digits`` and ``digit_sum`` are built in; ``vision_r1``, ``geometry3k`` and ``local`` share one loader
(``mssr_cli.data.sources``): their YAML says where the rows are and which columns hold what.
"""

from __future__ import annotations


def _digits(data_cfg, split: str):
    from mssr_cli.data.digits import load_digits_split

    limit = data_cfg.train_limit if split == "train" else data_cfg.val_limit
    return load_digits_split(split, data_cfg.image_size, data_cfg.num_val, limit=limit)


def _digit_sum(data_cfg, split: str):
    from mssr_cli.data.digit_sum import load_digit_sum_split

    limit = data_cfg.train_limit if split == "train" else data_cfg.val_limit
    return load_digit_sum_split(split, data_cfg.image_size, data_cfg.num_val, limit=limit)


def _hub_or_files(data_cfg, split: str):
    from mssr_cli.data.sources import load_source_split

    return load_source_split(data_cfg, split)


LOADERS = {"digit_sum": _digit_sum, "digits": _digits, "geometry3k": _hub_or_files, "local": _hub_or_files, "vision_r1": _hub_or_files}


def load_split(data_cfg, split: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """The ``split`` ("train" or "validation") of the configured data source, every image resized into
    ``[min_pixels, max_pixels]`` (training passes the model's bounds: ``image_bounds.fit_split``; null: as is)."""
    from mssr_cli.data.image_bounds import fit_split

    loader = LOADERS.get(data_cfg.name)
    if loader is None:
        raise ValueError(f"data.name={data_cfg.name!r}: no loader; valid choices: {', '.join(sorted(LOADERS))}")
    return fit_split(loader(data_cfg, split), min_pixels, max_pixels)
