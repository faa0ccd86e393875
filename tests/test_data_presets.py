"""Hub and local data presets: small local copies in each dataset's real schema, read by the same loader.

vision_r1 and geometry3k copies are parquet files laid out as their Hub repositories are (what
``hf download --local-dir`` leaves), read with ``load_dataset(folder, split=...)``, the
call the Hub id gets; ``local`` reads JSONL/parquet files. Every test checks the common columns
(prompt, images, answer, id) that training uses.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from mssr_cli.config.compose import compose
from mssr_cli.data.registry import load_split
from mssr_cli.data.sources import DataSourceError

COLORS = ["red", "green", "blue", "yellow", "white", "black"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep ``datasets``' cache of these tiny copies out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def png(color: str, size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_cfg(*overrides: str):
    return compose(list(overrides)).data


def write_vision_r1_copy(folder, n_train=5, n_test=3):
    """Osilly/Vision-R1-rl's layout and schema: train.parquet / test.parquet with problem (string, starting
    "<image>"), images (a list of HF Image), answer (string)."""
    import datasets

    features = datasets.Features(
        {"problem": datasets.Value("string"), "images": datasets.List(datasets.Image()), "answer": datasets.Value("string")}
    )
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = {
            "problem": [f"<image>{split} question {i}: what is {i} + 1?" for i in range(n)],
            "images": [[{"bytes": png(COLORS[i % len(COLORS)]), "path": f"{i}.png"}] for i in range(n)],
            "answer": [str(i + 1) for i in range(n)],
        }
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}.parquet"))
    return folder


def write_geometry3k_copy(folder):
    """hiyouga/geometry3k's layout and schema: data/{train,validation,test}-00000-of-00001.parquet with images
    (list of HF Image), problem ("<image>" + text), answer (choice text), id, choices, ground_truth."""
    import datasets

    features = datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "id": datasets.Value("int64"),
            "choices": datasets.List(datasets.Value("string")),
            "ground_truth": datasets.Value("string"),
        }
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 4), ("validation", 2), ("test", 3)):
        rows = {
            "images": [[{"bytes": png(COLORS[i]), "path": None}] for i in range(n)],
            "problem": [f"<image>Find x in the {split} diagram {i}." for i in range(n)],
            "answer": [f"{10 * i}\\sqrt{{3}}" for i in range(n)],
            "id": [1000 + i for i in range(n)],
            "choices": [["1", "2", f"{10 * i}\\sqrt{{3}}", "4"] for i in range(n)],
            "ground_truth": ["C"] * n,
        }
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def write_jsonl_with_image_files(folder, n=4, name="train.jsonl"):
    """Local JSONL: question/answer/image columns, image paths relative to the file's folder."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w") as f:
        for i in range(n):
            (folder / "imgs" / f"{name}-{i}.png").write_bytes(png(COLORS[i]))
            f.write(json.dumps({"question": f"How many sides? ({i})", "answer": i + 3, "image": f"imgs/{name}-{i}.png"}) + "\n")
    return folder / name


def test_vision_r1_copy_maps_to_the_common_columns(tmp_path):
    folder = write_vision_r1_copy(tmp_path / "Vision-R1-rl")
    cfg = data_cfg("data=vision_r1", f"data.path={folder}")
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert train.column_names == ["prompt", "images", "answer", "id"]
    assert (len(train), len(val)) == (5, 3)  # validation is the test split, as in the paper
    assert train["id"] == list(range(5))
    row = train[2]
    content = row["prompt"][0]["content"]
    assert row["prompt"][0]["role"] == "user" and len(row["prompt"]) == 1
    assert content.startswith("train question 2: what is 2 + 1?") and "<image>" not in content
    assert "<think> </think>" in content and "\\boxed{}" in content
    assert row["answer"] == "3"
    assert len(row["images"]) == 1 and isinstance(row["images"][0], Image.Image) and row["images"][0].size == (8, 6)
    assert row["images"][0].convert("RGB").getpixel((0, 0)) == (0, 0, 255)  # blue: the row's own image
    assert val[0]["prompt"][0]["content"].startswith("test question 0")


def test_hub_id_and_local_copy_take_the_same_call(tmp_path, monkeypatch):
    """Without data.path the loader calls load_dataset(hub_id, split=...); served here from the local copy."""
    import datasets

    folder = write_vision_r1_copy(tmp_path / "copy")
    real = datasets.load_dataset
    calls = []

    def fake_hub(path, *args, **kwargs):
        calls.append((path, kwargs.get("split")))
        return real(str(folder) if path == "Osilly/Vision-R1-rl" else path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    monkeypatch.setattr("mssr_cli.hub.hub_worth_trying", lambda: True)
    from_hub = load_split(data_cfg("data=vision_r1"), "validation")
    from_copy = load_split(data_cfg("data=vision_r1", f"data.path={folder}"), "validation")
    assert calls == [("Osilly/Vision-R1-rl", "test"), (str(folder), "test")]
    assert from_hub["prompt"] == from_copy["prompt"] and from_hub["answer"] == from_copy["answer"]


def test_geometry3k_copy_uses_its_validation_split_and_strips_placeholders(tmp_path):
    folder = write_geometry3k_copy(tmp_path / "geometry3k")
    cfg = data_cfg("data=geometry3k", f"data.path={folder}")
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert (len(train), len(val)) == (4, 2)
    assert train["id"] == [0, 1, 2, 3]  # the row index, not the dataset's own id column
    assert val[1]["prompt"][0]["content"].startswith("Find x in the validation diagram 1.")
    assert all("<image>" not in p[0]["content"] for p in train["prompt"])
    assert val[1]["answer"] == "10\\sqrt{3}"
    assert val[1]["images"][0].convert("RGB").getpixel((0, 0)) == (0, 128, 0)  # green
    test = load_split(data_cfg("data=geometry3k", f"data.path={folder}", "data.val_split=test"), "validation")
    assert len(test) == 3 and test[0]["prompt"][0]["content"].startswith("Find x in the test diagram 0.")


def test_limits_take_the_first_rows(tmp_path):
    folder = write_vision_r1_copy(tmp_path / "v")
    cfg = data_cfg("data=vision_r1", f"data.path={folder}", "data.train_limit=2", "data.val_limit=1")
    assert load_split(cfg, "train")["id"] == [0, 1] and len(load_split(cfg, "validation")) == 1


def test_local_jsonl_with_relative_image_paths_and_a_validation_file(tmp_path):
    train_file = write_jsonl_with_image_files(tmp_path / "mine", 4)
    val_file = write_jsonl_with_image_files(tmp_path / "mine", 2, name="val.jsonl")
    cols = ["data.question_column=question", "data.image_column=image"]
    cfg = data_cfg("data=local", f"data.path={train_file}", f"data.val_path={val_file}", *cols)
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert (len(train), len(val), train["id"]) == (4, 2, [0, 1, 2, 3])
    assert train["answer"] == ["3", "4", "5", "6"]  # JSON numbers become answer strings
    assert train[3]["images"][0].convert("RGB").getpixel((0, 0)) == (255, 255, 0)  # yellow, from imgs/train.jsonl-3.png
    assert train[0]["prompt"][0]["content"].startswith("How many sides? (0)")
    # image_root: paths relative to another folder
    moved = tmp_path / "elsewhere"
    (tmp_path / "mine" / "imgs").rename(moved)
    with pytest.raises(DataSourceError, match=r"train.jsonl line 1, column 'image': image file not found: .*imgs"):
        load_split(cfg, "train")
    with pytest.raises(DataSourceError, match=r"2 bad row\(s\) of 2"):  # skipping every row leaves nothing: still an error
        load_split(data_cfg("data=local", f"data.path={train_file}", f"data.val_path={val_file}", *cols,
                            "data.skip_bad_rows=true"), "validation")
    moved.rename(tmp_path / "imgs")
    rooted = data_cfg("data=local", f"data.path={train_file}", f"data.val_path={val_file}", f"data.image_root={tmp_path}", *cols)
    assert len(load_split(rooted, "train")) == 4


def test_local_parquet_folder_and_glob_with_plain_bytes_dicts(tmp_path):
    """Parquet written without datasets (pyarrow): the image is a plain {bytes, path} struct; a list of two images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    for part in range(2):
        table = pa.table(
            {
                "problem": [f"<image 1>part {part} row {i}" for i in range(3)],
                "answer": [f"{part}{i}" for i in range(3)],
                "images": [[{"bytes": png(COLORS[i]), "path": None}, {"bytes": png("black"), "path": None}] for i in range(3)],
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")
    (folder / "notes.txt").write_text("not data")
    by_folder = load_split(data_cfg("data=local", f"data.path={folder}", f"data.val_path={folder}/part-1.parquet"), "train")
    by_glob = load_split(data_cfg("data=local", f"data.path={folder}/part-*.parquet", f"data.val_path={folder}"), "train")
    assert len(by_folder) == len(by_glob) == 6 and by_folder["answer"] == ["00", "01", "02", "10", "11", "12"]
    assert by_folder[1]["prompt"][0]["content"].startswith("part 0 row 1 ")
    colors = [image.convert("RGB").getpixel((0, 0)) for image in by_folder[1]["images"]]
    assert colors == [(0, 128, 0), (0, 0, 0)]  # both images (green, black), in order


def test_local_without_validation_file_holds_rows_out(tmp_path):
    train_file = write_jsonl_with_image_files(tmp_path, 6)
    cfg = data_cfg("data=local", f"data.path={train_file}", "data.question_column=question",
                   "data.image_column=image", "data.num_val=2")
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    assert (len(train), len(val)) == (4, 2)
    assert sorted([*train["id"], *val["id"]]) == list(range(6))  # disjoint and complete
    assert list(load_split(cfg, "validation")["id"]) == list(val["id"])  # fixed split
    assert val[0]["prompt"][0]["content"].startswith(f"How many sides? ({val['id'][0]})")  # ids are source rows
    with pytest.raises(DataSourceError, match="data.num_val=6"):
        load_split(data_cfg("data=local", f"data.path={train_file}", "data.num_val=6"), "train")


def _vision_r1_with_a_bad_row(folder, bad: str):
    """A Vision-R1 copy whose train row 3 is bad in one way."""
    import datasets

    write_vision_r1_copy(folder)
    rows = datasets.load_dataset(str(folder), split="train").cast_column(
        "images", datasets.List(datasets.Image(decode=False))).to_dict()
    if bad == "unreadable image":
        rows["images"][3] = [{"bytes": b"not an image at all", "path": None}]
    elif bad == "no image":
        rows["images"][3] = []
    elif bad == "empty answer":
        rows["answer"][3] = "  "
    elif bad == "missing question":
        rows["problem"][3] = None
    features = datasets.Features(
        {"problem": datasets.Value("string"), "images": datasets.List(datasets.Image()), "answer": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train.parquet"))
    return folder


@pytest.mark.parametrize(
    "bad,column",
    [("unreadable image", "images"), ("no image", "images"), ("empty answer", "answer"), ("missing question", "problem")],
)
def test_a_bad_row_fails_naming_row_and_column_or_is_skipped_and_counted(tmp_path, capsys, bad, column):
    folder = _vision_r1_with_a_bad_row(tmp_path / f"v-{bad.replace(' ', '_')}", bad)
    with pytest.raises(DataSourceError) as err:
        load_split(data_cfg("data=vision_r1", f"data.path={folder}"), "train")
    message = str(err.value)
    assert "\n" not in message
    for part in ("row 3", f"column '{column}'", bad, "data.skip_bad_rows=true"):
        assert part in message, part
    capsys.readouterr()
    kept = load_split(data_cfg("data=vision_r1", f"data.path={folder}", "data.skip_bad_rows=true"), "train")
    assert kept["id"] == [0, 1, 2, 4]  # the others keep their source row ids
    note = capsys.readouterr().out.strip().splitlines()
    assert len(note) == 1 and "skipped 1 of 5" in note[0] and f"1 {bad} ({column})" in note[0]


def test_configuration_mistakes_name_the_key(tmp_path, monkeypatch):
    folder = write_vision_r1_copy(tmp_path / "v")
    with pytest.raises(DataSourceError, match=r"data.answer_column=solution: no such column .* problem, images, answer"):
        load_split(data_cfg("data=vision_r1", f"data.path={folder}", "data.answer_column=solution"), "train")
    with pytest.raises(DataSourceError, match=r"data.val_split=testmini: not a split"):
        load_split(data_cfg("data=vision_r1", f"data.path={folder}", "data.val_split=testmini"), "validation")
    with pytest.raises(DataSourceError, match=r"data.path is null"):
        load_split(data_cfg("data=local"), "train")
    with pytest.raises(DataSourceError, match=r"data.path=.*nowhere: no such file or folder"):
        load_split(data_cfg("data=local", f"data.path={tmp_path}/nowhere"), "train")
    with pytest.raises(DataSourceError, match=r"no .parquet, .jsonl or .json files"):
        load_split(data_cfg("data=local", f"data.path={tmp_path}/v/*.csv"), "train")
    monkeypatch.setattr("mssr_cli.hub.hub_worth_trying", lambda: False)
    with pytest.raises(DataSourceError, match=r"hf download hiyouga/geometry3k .*data.path=DIR"):
        load_split(data_cfg("data=geometry3k"), "train")


def test_registry_names_every_data_option():
    from mssr_cli.config.paths import group_options
    from mssr_cli.data.registry import LOADERS

    assert set(LOADERS) == set(group_options("data"))
    cfg = data_cfg()
    cfg.name = "nope"
    with pytest.raises(ValueError, match="data.name='nope': no loader; valid choices: digit_sum, digits, geometry3k, local, vision_r1"):
        load_split(cfg, "train")


def test_image_forms():
    from mssr_cli.data.images import BadImage, image_value, image_values

    pil = Image.new("RGB", (3, 2), "red")
    for value in (pil, png("red"), {"bytes": png("red"), "path": "x.png"}):
        cell = image_value(value, None)
        assert Image.open(io.BytesIO(cell["bytes"])).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(BadImage, match="not an image"):
        image_value(3.5, None)
    cells = image_values([png("red"), {"bytes": png("blue"), "path": None}], None)  # a list: every image, in order
    assert [Image.open(io.BytesIO(c["bytes"])).getpixel((0, 0)) for c in cells] == [(255, 0, 0), (0, 0, 255)]
    assert len(image_values(png("red"), None)) == 1
    with pytest.raises(BadImage, match=r"^pics\[1\]: unreadable image"):
        image_values([png("red"), b"not an image"], None, column="pics")
    with pytest.raises(BadImage, match=r"^no image \(an empty list\)"):
        image_values([], None)


def test_dry_run_with_a_hub_preset_loads_nothing():
    code = (
        "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', 'train', 'data=vision_r1', '--dry-run'];\n"
        "try: app()\nexcept SystemExit as e: print('EXIT', e.code)\n"
        "print('LOADED' if {'datasets', 'torch'} & set(sys.modules) else 'NOTHING_LOADED')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "hub_id: Osilly/Vision-R1-rl" in out.stdout and "val_split: test" in out.stdout, out.stderr
    assert "NOTHING_LOADED" in out.stdout


def test_every_data_option_lists_every_data_key():
    """Hydra overrides only keys the YAML has, so each data option names every DataConfig key."""
    from dataclasses import fields

    import yaml

    from mssr_cli.config.paths import conf_dir, group_options
    from mssr_cli.config.schema import DataConfig

    for option in group_options("data"):
        listed = set(yaml.safe_load((conf_dir() / "data" / f"{option}.yaml").read_text()))
        assert listed == {f.name for f in fields(DataConfig)}, option
        assert data_cfg(f"data={option}").name == option
