"""The same image in rollouts and in training: every image is resized into the model's pixel bounds when the
split is built (``mssr_cli.data.image_bounds``), so the processor vLLM builds (TRL gives it no min/max: the
model folder's own bounds) and the trainer's (``model.min_pixels`` / ``max_pixels``) give the same image
tokens and the same pixel values, for every data source, in both splits.

The model folder is the tiny tokenizer with Qwen2-VL's default image processor (3,136 to 1,003,520 px), as a
Hub model folder has its own; no model is built.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mssr_cli.config.compose import compose
from mssr_cli.data.columns import row_images
from mssr_cli.data.image_bounds import GRID, fit_to_bounds, fitted_size
from mssr_cli.data.registry import load_split

MIN_PIXELS, MAX_PIXELS = 512 * 512, 640 * 640  # min: the paper's; max: below the default processor's 1,003,520
BOUNDS = [f"model.min_pixels={MIN_PIXELS}", f"model.max_pixels={MAX_PIXELS}"]
ABOVE_MAX, BELOW_MIN = (900, 700), (100, 100)  # (width, height)


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    """(generation side, loss side): one model folder loaded as vLLM loads it (no processor arguments) and as
    training loads it (``load_processor`` with the model's bounds)."""
    from transformers import AutoProcessor, Qwen2VLImageProcessor

    from mssr_cli.models.loading import load_processor
    from mssr_cli.models.tiny import build_processor, build_tokenizer

    folder = tmp_path_factory.mktemp("model")
    size = Qwen2VLImageProcessor().size  # the class defaults: what a folder without other bounds gives
    build_processor(build_tokenizer("digits"), size["shortest_edge"], size["longest_edge"]).save_pretrained(folder)
    return AutoProcessor.from_pretrained(folder), load_processor(str(folder), compose(BOUNDS).model)


def encoded(processor, images: list) -> dict:
    """One prompt with ``images`` as TRL's trainer renders and processes it."""
    from mssr_cli.data.prompts import user_prompt
    from mssr_cli.models.generation import chat_texts

    text = chat_texts(processor, [user_prompt("What is shown?")], image_counts=[len(images)])
    inputs = processor(images=[images], text=text, return_tensors="pt")
    inputs["image_tokens"] = int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    return inputs


def same_on_both_paths(processors, images: list) -> bool:
    generation, loss = (encoded(processor, images) for processor in processors)
    return (generation["image_tokens"] == loss["image_tokens"]
            and torch.equal(generation["image_grid_thw"], loss["image_grid_thw"])
            and generation["pixel_values"].shape == loss["pixel_values"].shape
            and torch.equal(generation["pixel_values"], loss["pixel_values"]))


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: any resampling difference between the two paths shows in pixel_values."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_hub_copy(folder):
    """A Hub dataset's local copy (train.parquet, test.parquet; problem, images as a list of Image, answer):
    a row with an image above max_pixels and one below min_pixels, a grey one, an RGBA one off the 28 px grid."""
    import datasets

    rows = [[noise(ABOVE_MAX), noise(BELOW_MIN, seed=1)], [noise((300, 200), "L", 2)], [noise((600, 600), "RGBA", 3)]]
    features = datasets.Features({"problem": datasets.Value("string"), "images": datasets.List(datasets.Image()),
                                  "answer": datasets.Value("string")})
    folder.mkdir()
    for split in ("train", "test"):
        table = {"problem": ["<image>What is shown?"] * len(rows), "answer": ["1"] * len(rows),
                 "images": [[{"bytes": png(image), "path": None} for image in images] for images in rows]}
        datasets.Dataset.from_dict(table, features=features).to_parquet(str(folder / f"{split}.parquet"))
    return folder


def source_overrides(source: str, tmp_path) -> list[str]:
    if source == "digits":  # 56x56 digits: below min_pixels
        return ["data=digits", "data.train_limit=2", "data.val_limit=2"]
    folder = write_hub_copy(tmp_path / "copy")
    if source == "vision_r1":  # read as the Hub dataset is
        return ["data=vision_r1", f"data.path={folder}"]
    return ["data=local", f"data.path={folder}/train.parquet", f"data.val_path={folder}/test.parquet"]


@pytest.mark.usefixtures("private_datasets_cache")
@pytest.mark.parametrize("source", ["digits", "vision_r1", "local"])
def test_every_source_gives_both_paths_the_same_image(tmp_path, processors, source):
    cfg = compose([*source_overrides(source, tmp_path), *BOUNDS])
    for split in ("train", "validation"):
        for row in load_split(cfg.data, split, cfg.model.min_pixels, cfg.model.max_pixels):
            images = row_images(row)
            assert same_on_both_paths(processors, images), (source, split, [image.size for image in images])
            for image in images:
                assert image.mode == "RGB" and image.width % GRID == 0 and image.height % GRID == 0, image
                assert MIN_PIXELS <= image.width * image.height <= MAX_PIXELS, image.size


@pytest.mark.parametrize("size", [ABOVE_MAX, BELOW_MIN])
def test_without_the_resize_the_paths_differ(processors, size):
    """What the resize prevents (and what makes the test above able to fail): the raw image, processed by each
    processor under its own bounds, gives two different images."""
    assert not same_on_both_paths(processors, [noise(size)])
    assert same_on_both_paths(processors, [fit_to_bounds(noise(size), MIN_PIXELS, MAX_PIXELS)])


def reference_rule(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """The reference's resize (ruiiu/MSSR process_image), restated: scale by sqrt(bound / pixels), truncate."""
    for bound, outside in ((max_pixels, lambda p: p > max_pixels), (min_pixels, lambda p: p < min_pixels)):
        if outside(image.width * image.height):
            scale = math.sqrt(bound / (image.width * image.height))
            image = image.resize((int(image.width * scale), int(image.height * scale)))
    return image


def test_the_reference_rule_alone_leaves_the_paths_apart(processors):
    """100x100 -> exactly 512x512 (= min_pixels) by the reference's rule; rounding each side to 28 px gives 504x504,
    under min_pixels: the loss side then grows it to 532x532, the generation side keeps 504x504."""
    resized = reference_rule(noise(BELOW_MIN), MIN_PIXELS, MAX_PIXELS)
    assert resized.size == (512, 512)
    generation, loss = (encoded(processor, [resized]) for processor in processors)
    assert generation["image_grid_thw"].tolist() == [[1, 36, 36]] and loss["image_grid_thw"].tolist() == [[1, 38, 38]]
    assert fit_to_bounds(noise(BELOW_MIN), MIN_PIXELS, MAX_PIXELS).size == (532, 532)


def test_a_resized_image_is_left_as_it_is_by_a_processor_with_or_without_the_bounds():
    """The invariant both paths rest on, over random sizes and bounds: the size is on the 28 px grid, within the
    bounds, and a fixed point of the processor's resize under our bounds and under any wider ones (the model
    folder's)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    rng = np.random.default_rng(0)
    for _ in range(5000):
        width = int(rng.integers(1, 8000))
        height = max(1, int(width * rng.uniform(0.1, 10)))  # aspect ratios of 1:10 to 10:1
        low = int(rng.integers(28 * 28, 2_000_000))
        high = int(low * rng.uniform(2, 20))
        fitted = fitted_size(width, height, low, high)
        assert fitted[0] % GRID == 0 and fitted[1] % GRID == 0 and low <= fitted[0] * fitted[1] <= high
        for wider in ((low, high), (low // 2, high * 2), (28 * 28, 10**9)):
            assert smart_resize(fitted[1], fitted[0], min_pixels=wider[0], max_pixels=wider[1]) == fitted[::-1]
    assert fit_to_bounds(noise((30, 20)), 28 * 28 * 4, 28 * 28 * 40).size == fitted_size(30, 20, 28 * 28 * 4, 28 * 28 * 40)


def test_null_bounds_and_a_fitting_image_are_left_as_they_are():
    image = noise((300, 200))
    assert fit_to_bounds(image, None, None) is image
    on_grid = noise((28 * 22, 28 * 17))  # 293,216 px
    assert fit_to_bounds(on_grid, MIN_PIXELS, MAX_PIXELS) is on_grid
    assert fit_to_bounds(image, None, 100 * 100).size == (112, 56)  # one bound: only that side is bounded
    assert fit_to_bounds(image, 512 * 512, None).size == (644, 420)


def test_transparency_is_laid_on_white_as_the_processor_does(processors):
    clear = Image.new("RGBA", (28 * 20, 28 * 20), (0, 0, 0, 0))  # black under full transparency: white when shown
    fitted = fit_to_bounds(clear, MIN_PIXELS, MAX_PIXELS)
    assert fitted.mode == "RGB" and fitted.getpixel((0, 0)) == (255, 255, 255)
    _, loss = processors
    assert torch.equal(encoded(loss, [clear])["pixel_values"], encoded(loss, [fitted])["pixel_values"])


def test_the_default_digits_are_untouched(base_cfg):
    """The embedded default has null bounds (its processor pins 56x56 itself): no image changes. With the tiny
    processor's pin as bounds, a 56x56 digit already fits: its stored bytes are kept, not re-encoded."""
    from mssr_cli.data.images import undecoded
    from mssr_cli.data.registry import LOADERS

    assert base_cfg.model.min_pixels is None and base_cfg.model.max_pixels is None
    data = compose(["data.train_limit=4"]).data
    stored = undecoded(LOADERS["digits"](data, "train"), "image")["image"]  # as built, before any resize
    assert undecoded(load_split(data, "train"), "image")["image"] == stored
    assert undecoded(load_split(data, "train", 56 * 56, 56 * 56), "image")["image"] == stored


def test_training_loads_both_splits_with_the_model_bounds(tmp_path, monkeypatch):
    from mssr_cli.data import registry
    from mssr_cli.training.runner import run_training

    seen = []

    class Loaded(Exception):
        pass

    def load_split(data_cfg, split, *pixels):
        seen.append((split, *pixels))
        if split == "validation":
            raise Loaded
        return registry.LOADERS["digits"](data_cfg, split)

    monkeypatch.setattr(registry, "load_split", load_split)
    overrides = [*BOUNDS, "data.train_limit=2", "logging.wandb=disabled", "logging.progress=false"]
    with pytest.raises(Loaded):
        run_training(compose(overrides), overrides, tmp_path / "run")
    assert seen == [("train", MIN_PIXELS, MAX_PIXELS), ("validation", MIN_PIXELS, MAX_PIXELS)]


def test_an_image_no_processor_takes_is_named_by_its_row():
    import datasets

    from mssr_cli.data.image_bounds import fit_split
    from mssr_cli.data.sources import DataSourceError, common_features

    thin = {"bytes": png(Image.new("RGB", (5000, 20))), "path": None}  # 250:1, over the processor's 200:1
    ok = {"bytes": png(noise((56, 56))), "path": None}
    rows = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "q"}]], "images": [[ok, thin]],
                                       "answer": ["1"], "id": [7]}, features=common_features("images"))
    with pytest.raises(DataSourceError, match=r"^row id 7, images\[1\]: a 5000x20 px image: absolute aspect ratio"):
        fit_split(rows, MIN_PIXELS, MAX_PIXELS)
