"""The built-in digits task: deterministic split, common columns, real images."""

from __future__ import annotations

import numpy as np

from mssr_cli.data.digits import digit_image, load_digits_split, split_indices


def test_split_is_deterministic_disjoint_and_complete():
    a, b = split_indices(), split_indices()
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert len(a.val) == 300 and len(a.train) == 1797 - 300
    assert not set(a.train) & set(a.val)
    assert sorted([*a.train, *a.val]) == list(range(1797))


def test_rows_have_the_common_columns_and_match_sklearn():
    from sklearn.datasets import load_digits

    ds = load_digits_split("validation", limit=20)
    assert ds.column_names == ["prompt", "image", "answer", "id"]
    raw = load_digits()
    for row in ds:
        assert row["answer"] == str(raw.target[row["id"]])
        assert row["prompt"][0]["role"] == "user" and "\\boxed{}" in row["prompt"][0]["content"]
        assert row["image"].size == (56, 56) and row["image"].mode == "RGB"


def test_same_rows_twice():
    one, two = load_digits_split("train", limit=10), load_digits_split("train", limit=10)
    assert one["id"] == two["id"]
    assert np.array_equal(np.asarray(one[3]["image"]), np.asarray(two[3]["image"]))


def test_image_keeps_the_digit_shape():
    pixels = np.zeros((8, 8))
    pixels[:, 4] = 16  # a vertical stroke
    img = np.asarray(digit_image(pixels, 56).convert("L"), dtype=float)
    assert img[:, 28:36].mean() < img[:, :16].mean() - 100  # ink is dark, background light
