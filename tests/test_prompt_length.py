"""data.max_prompt_tokens: prompt lengths counted as the processor expands images, overlong prompts dropped."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mssr_cli.data.prompts import think_boxed_prompt

PATCH = 28  # Qwen2-VL: 14 px patches merged 2x2
MIN_PIXELS, MAX_PIXELS = 4 * PATCH * PATCH, 64 * PATCH * PATCH


@pytest.fixture(scope="module")
def processor_folder(tmp_path_factory):
    """The tiny model's processor, saved as the model folder holds it (no model build needed)."""
    from mssr_cli.models.tiny import build_processor, build_tokenizer

    folder = tmp_path_factory.mktemp("tiny_processor")
    build_processor(build_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def processor(processor_folder):
    """Loaded as load_policy loads it, with pixel bounds that let image sizes matter (the tiny one pins 56x56)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(processor_folder, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def encoded(size: tuple[int, int], fmt: str = "PNG", orientation: int | None = None) -> dict:
    """A file's bytes holding an image of ``size`` (width, height), optionally with an EXIF orientation."""
    buffer = io.BytesIO()
    image = Image.new("RGB", size, "red")
    if orientation is None:
        image.save(buffer, format=fmt)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, format=fmt, exif=exif)
    return {"bytes": buffer.getvalue(), "path": None}


def common_dataset(images: list[dict], ids: list[int], questions: list[str] | None = None):
    import datasets

    from mssr_cli.data.sources import common_features

    questions = questions or ["What is the area of the shaded triangle?"] * len(images)
    return datasets.Dataset.from_dict(
        {"prompt": [think_boxed_prompt(q) for q in questions], "image": images,
         "answer": ["4"] * len(images), "id": ids},
        features=common_features(),
    )


# (width, height): tiny (scaled up to min_pixels), exact, odd, elongated, over max_pixels, very large
SIZES = [(5, 7), (56, 56), (123, 457), (1000, 30), (500, 700), (2000, 1500)]


@pytest.mark.parametrize("pinned", [False, True], ids=["bounds", "tiny_pinned"])
def test_count_equals_the_processors_input_ids(processor, processor_folder, pinned):
    from transformers import AutoProcessor

    from mssr_cli.training.prompt_length import prompt_token_counts
    from mssr_cli.models.generation import chat_texts

    proc = AutoProcessor.from_pretrained(processor_folder) if pinned else processor
    images = [encoded(s) for s in SIZES] + [encoded((300, 100), "JPEG", orientation=6), encoded((90, 200), "JPEG")]
    questions = [f"Question {i}: " + "find x. " * i for i in range(len(images))]
    ds = common_dataset(images, list(range(len(images))), questions)
    counts = prompt_token_counts(ds, proc)
    texts = chat_texts(proc, ds["prompt"])
    exact = [len(proc(images=[row["image"]], text=[text], add_special_tokens=False)["input_ids"][0])
             for row, text in zip(ds, texts, strict=True)]
    assert counts == exact
    if not pinned:  # the sizes really change the count (the test would be weak otherwise)
        assert len(set(counts[: len(SIZES)])) == len(SIZES)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8])
def test_image_size_from_the_header_is_the_decoded_size(fmt, orientation):
    """datasets turns images by their EXIF orientation when it decodes them; the header-only size follows."""
    import datasets

    from mssr_cli.training.prompt_length import _stored_image_size

    value = encoded((300, 100), fmt, orientation)
    decoded = datasets.Image().decode_example(value)
    assert _stored_image_size(value) == (decoded.height, decoded.width)
    assert decoded.size == ((100, 300) if orientation in (6, 8) else (300, 100))


def test_a_processor_that_expands_images_differently_is_refused(processor, monkeypatch):
    from transformers.processing_utils import MultiModalData

    from mssr_cli.training.prompt_length import prompt_token_counts

    ds = common_dataset([encoded((500, 700))], [0])
    monkeypatch.setattr(processor, "_get_num_multimodal_tokens",
                        lambda image_sizes: MultiModalData(num_image_tokens=[1] * len(image_sizes)))
    with pytest.raises(ValueError, match="data.max_prompt_tokens.*expands images differently"):
        prompt_token_counts(ds, processor)


def recording_console():
    from rich.console import Console

    return Console(record=True, width=300, force_terminal=False)


def test_drop_long_prompts_drops_exactly_the_overlong_rows(processor):
    from mssr_cli.training.prompt_length import drop_long_prompts, prompt_token_counts

    ids = [10, 11, 12, 13, 14, 15]
    big = {11, 14}
    ds = common_dataset([encoded((500, 700) if i in big else (56, 56)) for i in ids], ids)
    counts = prompt_token_counts(ds, processor)
    small = counts[0]
    assert counts == [counts[1] if i in big else small for i in ids] and counts[1] > small
    console = recording_console()
    kept = drop_long_prompts(ds, processor, small, "training", console)  # a prompt of exactly the limit stays
    assert kept["id"] == [10, 12, 13, 15]
    assert [row["id"] for row in kept] == [10, 12, 13, 15] and kept[1]["answer"] == "4"
    assert console.export_text().strip() == (
        f"data.max_prompt_tokens={small}: dropped 2 of 6 training prompts longer than {small} tokens "
        f"(images included); longest kept: {small}"
    )

    console = recording_console()
    assert drop_long_prompts(ds, processor, counts[1], "validation", console) is ds
    assert console.export_text().strip() == (
        f"data.max_prompt_tokens={counts[1]}: all 6 validation prompts fit (longest: {counts[1]} tokens, images included)"
    )

    with pytest.raises(ValueError, match=r"^data\.max_prompt_tokens=\d+: every one of the 6 training prompts is longer"):
        drop_long_prompts(ds, processor, small - 1, "training", recording_console())


def test_no_limit_returns_the_dataset_without_counting(processor, monkeypatch):
    from mssr_cli.training import prompt_length

    def fail(*args):
        raise AssertionError("counted prompts with max_tokens=None")

    monkeypatch.setattr(prompt_length, "prompt_token_counts", fail)
    ds = common_dataset([encoded((56, 56))], [7])
    console = recording_console()
    assert prompt_length.drop_long_prompts(ds, processor, None, "training", console) is ds
    assert console.export_text() == ""


def test_config_key_defaults_to_null_and_refuses_non_positive():
    from mssr_cli.config.compose import ConfigError, compose

    for data in ("digits", "geometry3k", "local", "vision_r1"):
        assert compose([f"data={data}"]).data.max_prompt_tokens is None
    assert compose(["data.max_prompt_tokens=2048"]).data.max_prompt_tokens == 2048
    for bad in ("0", "-5"):
        with pytest.raises(ConfigError, match=rf"^data\.max_prompt_tokens={bad}: must be positive"):
            compose([f"data.max_prompt_tokens={bad}"])
