"""Data sources by name: each returns a ``datasets.Dataset`` with columns prompt, image, answer, id."""

from __future__ import annotations


def load_split(data_cfg, split: str):
    """The ``split`` ("train" or "validation") of the configured data source."""
    if data_cfg.name == "digits":
        from mssr_cli.data.digits import load_digits_split

        limit = data_cfg.train_limit if split == "train" else data_cfg.val_limit
        return load_digits_split(split, data_cfg.image_size, data_cfg.num_val, limit=limit)
    raise ValueError(f"data.name={data_cfg.name!r}: no loader; valid choices: digits")
