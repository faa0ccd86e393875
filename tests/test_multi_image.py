"""Several images per prompt: rows whose image cell is a list keep every image, in training and in ``mssr eval``.

The data: pairs of scikit-learn digits, each digit its own 56x56 image (4 image tokens on the tiny
model), asking for their sum, so an answer needs both images. Each test fails if only a row's first
image were used: the loaded rows, the processor's image tokens, the prompt-length count, the batches
TRL's loss sees and the prompts ``mssr eval`` sends are all counted per image.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from mssr_cli.config.compose import compose
from mssr_cli.data.registry import load_split

TOKENS_PER_DIGIT = 4  # a 56x56 image on the tiny model: (56 / 14)^2 patches, merged 2x2


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep ``datasets``' cache of these tiny files out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def digit_png(index: int) -> bytes:
    from sklearn.datasets import load_digits

    from mssr_cli.data.digits import digit_image

    buffer = io.BytesIO()
    digit_image(load_digits().images[index], 56).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_pairs(n: int, start: int = 0) -> list[tuple[int, int]]:
    """Sklearn row indices of ``n`` pairs of different digits."""
    return [(start + 2 * i, start + 2 * i + 1) for i in range(n)]  # sklearn's rows 0, 1, 2, ... are digits 0, 1, 2, ...


def write_pairs(path, n: int, start: int = 0):
    """A parquet file as ``local`` data expects by default (problem, answer, images): each row two digit images."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    target = load_digits().target
    pairs = digit_pairs(n, start)
    pq.write_table(pa.table({
        "problem": ["<image><image>What is the sum of the two digits shown?"] * n,
        "answer": [str(int(target[a] + target[b])) for a, b in pairs],
        "images": [[{"bytes": digit_png(a), "path": None}, {"bytes": digit_png(b), "path": None}] for a, b in pairs],
    }), path)
    return path


def local_cfg(train, val, *overrides):
    return compose(["data=local", f"data.path={train}", f"data.val_path={val}", *overrides])


def image_pads(processor, ids) -> int:
    return int((ids == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())


def test_rows_keep_both_images_and_the_processor_gets_both(tmp_path, tiny_policy_path):
    from transformers import AutoProcessor

    from mssr_cli.models.generation import chat_texts
    from mssr_cli.models.warm_start import completion_batch
    from mssr_cli.training.prompt_length import prompt_token_counts

    path = write_pairs(tmp_path / "pairs.parquet", 3)
    rows = load_split(local_cfg(path, path).data, "train")
    assert rows.column_names == ["prompt", "images", "answer", "id"]
    for row, (a, b) in zip(rows, digit_pairs(3), strict=True):
        assert len(row["images"]) == 2  # both, in order
        assert [image.tobytes() for image in row["images"]] == [Image.open(io.BytesIO(digit_png(i))).tobytes() for i in (a, b)]
    assert "<image>" not in rows[0]["prompt"][0]["content"]

    processor = AutoProcessor.from_pretrained(tiny_policy_path)
    batch = completion_batch(processor, rows[:3])  # the rendering validation and the warm start use
    assert batch["image_grid_thw"].shape[0] == 6  # two images per prompt
    assert [image_pads(processor, ids) for ids in batch["input_ids"]] == [2 * TOKENS_PER_DIGIT] * 3
    # the prompt-length filter counts the tokens of every image, exactly as the processor expands them
    texts = chat_texts(processor, rows["prompt"], image_counts=[2] * 3)
    exact = [len(processor(images=[row["images"]], text=[text], add_special_tokens=False)["input_ids"][0])
             for row, text in zip(rows, texts, strict=True)]
    one_image = len(processor(images=[rows[0]["images"][:1]], text=chat_texts(processor, rows["prompt"][:1]),
                              add_special_tokens=False)["input_ids"][0])
    assert prompt_token_counts(rows, processor) == exact and exact[0] == one_image + TOKENS_PER_DIGIT + 2  # + vision start/end


def test_a_bad_image_of_a_list_is_named_by_its_place(tmp_path):
    from mssr_cli.data.sources import DataSourceError

    def write(name, pics):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"question": f"q{i}", "answer": i, "pics": p}) + "\n" for i, p in enumerate(pics)))
        return path

    (tmp_path / "a.png").write_bytes(digit_png(0))
    (tmp_path / "b.png").write_bytes(digit_png(1))
    (tmp_path / "broken.png").write_bytes(digit_png(2)[:-30])
    args = ["data.question_column=question", "data.image_column=pics"]
    broken = write("broken.jsonl", [["a.png", "b.png"], ["a.png", "broken.png"]])
    with pytest.raises(DataSourceError) as err:
        load_split(local_cfg(broken, broken, *args).data, "train")
    assert f"{broken} line 2, column 'pics': pics[1]: unreadable image {tmp_path / 'broken.png'} (" in str(err.value)
    kept = load_split(local_cfg(broken, broken, *args, "data.skip_bad_rows=true").data, "train")
    assert kept["id"] == [0] and len(kept[0]["images"]) == 2
    empty = write("empty.jsonl", [["a.png"], []])
    with pytest.raises(DataSourceError, match=r"empty.jsonl line 2, column 'pics': no image \(an empty list\)"):
        load_split(local_cfg(empty, empty, *args).data, "train")


def test_samples_table_shows_every_image_side_by_side():
    from mssr_cli.training.callbacks import side_by_side

    a, b = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (30, 40), "blue")
    both = side_by_side([a, b])
    assert both.size == (86, 56) and both.getpixel((0, 0)) == (255, 0, 0) and both.getpixel((60, 0)) == (0, 0, 255)
    assert side_by_side([a]) is a and side_by_side(a) is a and side_by_side([]) is None


@pytest.mark.timeout(600)
def test_train_end_to_end_on_two_image_rows(tmp_path, tiny_policy_path, monkeypatch):
    from typer.testing import CliRunner

    from mssr_cli.cli import app
    from mssr_cli.training.trainer import RLTrainer

    seen = []  # what TRL's loss got: images per prompt, image grids, image tokens per prompt
    loss = RLTrainer._compute_loss

    def recording_loss(self, model, inputs):
        pads = [image_pads(self.processing_class, ids) for ids in inputs["prompt_ids"]]
        seen.append((list(inputs["num_images"]), inputs["image_grid_thw"].shape[0], pads))
        return loss(self, model, inputs)

    blanked = []  # the cross-modal KL's pass: (the rows' pixel_values, what replaced them, their grids)
    blank = RLTrainer._blank_pixel_values

    def recording_blank(self, like):
        out = blank(self, like)
        blanked.append((like.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(RLTrainer, "_compute_loss", recording_loss)
    monkeypatch.setattr(RLTrainer, "_blank_pixel_values", recording_blank)
    train, val = write_pairs(tmp_path / "train.parquet", 8), write_pairs(tmp_path / "val.parquet", 3, start=40)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "data=local", f"data.path={train}", f"data.val_path={val}", "data.max_prompt_tokens=400",
        "train.max_steps=2", "train.rollouts_per_step=4", "train.eval_every=2", "train.save_every=0",
        "train.log_samples_every=1", "train.log_samples=2", "algo.cross_modal_kl_coef=0.01",
        "logging.progress=false", "logging.wandb=disabled", "--run-dir", str(run),
    ])
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(seen) == 2
    for num_images, grids, pads in seen:
        assert num_images == [2] * 4 and grids == 8 and pads == [2 * TOKENS_PER_DIGIT] * 4
    assert "all 8 training prompts fit" in result.output  # the length filter ran on two-image prompts
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "val/accuracy" in m] == [0, 2]  # validation generates from both images
    # the blank-image pass blanks both images of every row: every patch row of both (all 8 grids) is replaced by the
    # one row of a black image
    assert len(blanked) == 2
    for original, replaced in blanked:
        assert replaced.shape == original.shape  # the patches of both images, not the first one's only
        assert torch.equal(replaced, replaced[:1].expand_as(replaced))
        assert not torch.equal(original, replaced)
    assert all(m["collapse/cross_modal_kl"] > 0 for m in lines[1:])  # blanking the images changed the policy
    assert len((run / "samples.jsonl").read_text().splitlines()) == 4


def write_mmk12_pairs(data_dir, second=None):
    """A local MMK12 copy (its layout and columns) whose image column holds two images per row."""
    import datasets

    folder = data_dir / "mmk12" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"id": datasets.Value("string"), "subject": datasets.Value("string"),
                                  "image": datasets.List(datasets.Image()), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string")})
    rows = {
        "id": ["pair_1", "pair_2"], "subject": ["math"] * 2,
        "image": [[{"bytes": digit_png(a), "path": None}, {"bytes": second or digit_png(b), "path": None}]
                  for a, b in digit_pairs(2)],
        "question": [f"Which is the sum of the two digits?\nA. {s}\nB. {s + 2}\nC. {s + 4}\nD. {s + 6}" for s in (1, 5)],
        "answer": ["A", "A"],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    return data_dir


def test_eval_local_copy_with_two_images_per_row(tmp_path, tiny_policy_path, monkeypatch):
    from rich.console import Console

    from mssr_cli.evaluation import BenchmarkDataError, run_eval
    from mssr_cli.evaluation.benchmarks import BENCHMARKS
    from mssr_cli.evaluation.sources import load_docs, most_images

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data_dir = write_mmk12_pairs(tmp_path / "data")
    docs, _ = load_docs("mmk12", data_dir)
    assert most_images["mmk12"] == 2 and [len(BENCHMARKS["mmk12"].images(doc)) for doc in docs] == [2, 2]
    out = tmp_path / "out"
    summary = run_eval("mmk12", tiny_policy_path, limit=2, data_dir=data_dir, batch_size=2, out=out,
                       max_new_tokens=8, console=Console(file=io.StringIO()))
    assert summary["benchmarks"]["mmk12"]["n"] == 2
    samples = [json.loads(line) for line in (out / "samples_mmk12.jsonl").read_text().splitlines()]
    assert all(s["prompt"].startswith("<image><image>Which") and s["prompt"].count("<image>") == 2 for s in samples)
    with pytest.raises(BenchmarkDataError, match=r"row 0, column 'image': image\[1\]: unreadable image"):
        load_docs("mmk12", write_mmk12_pairs(tmp_path / "bad", second=digit_png(3)[:-30]))
