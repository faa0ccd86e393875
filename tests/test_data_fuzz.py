"""Broken data files: each case stops `mssr train` with one line naming the file, the row (JSON Lines: the
1-based line) and the column, exit 2, no traceback; with data.skip_bad_rows=true the row is dropped and counted.

Every case has one bad row among good ones, so a message that names the wrong row fails. The data loads
before the model, so the CLI cases end in about a second each once the first has imported the stack.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import compose
from mssr_cli.data.registry import load_split
from mssr_cli.data.sources import DataSourceError

COLUMNS = ["data.question_column=question", "data.answer_column=answer", "data.image_column=image"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep ``datasets``' cache of these tiny files out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


# --- images, good and bad -------------------------------------------------------------------------------
def png(color="red", size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def gray_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG written by hand, row by row: PIL will not write a 0x0 image, and would
    hold a 20000x20000 one in 400 MB of memory; this one is all black and compresses to ~50 KB."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


BAD_IMAGES = {  # name: (bytes or None for a file that is not there, the reason the message gives)
    "truncated.png": (lambda: png("blue", (64, 64))[:-30], "unreadable image"),  # cut inside the last IDAT chunk
    "truncated.jpg": (lambda: jpeg()[:1500], "unreadable image"),  # PIL's verify() passes this one: it must decode
    "empty.png": (lambda: gray_png(0, 0), "unreadable image"),  # the header says 0x0
    "bomb.png": (lambda: gray_png(20000, 20000), "image too large"),  # 4e8 pixels: PIL's decompression-bomb check
    "missing.png": (None, "image file not found"),
}


# --- data files with one bad row ------------------------------------------------------------------------
MALFORMED = '{"question": "q2", "answer": 2, "image": "ok.png"'  # no closing brace


def write_jsonl(folder, row2):
    """Five question/answer/image rows (images beside the file) with a blank line 2, so row 2 is on line 4:
    line and row numbers differ. ``row2`` replaces row 2: a dict is written as JSON, a str as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ok.png").write_bytes(png())
    lines = [json.dumps({"question": f"q{i}", "answer": i, "image": "ok.png"}) for i in range(5)]
    lines[2] = row2 if isinstance(row2, str) else json.dumps(row2)
    lines.insert(1, "")
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def jsonl_with_bad_image(folder, name: str):
    folder.mkdir(parents=True, exist_ok=True)
    make, _ = BAD_IMAGES[name]
    if make is not None:
        (folder / name).write_bytes(make())
    return write_jsonl(folder, {"question": "q2", "answer": 2, "image": name})


def jsonl_with_malformed_line(folder):
    return write_jsonl(folder, MALFORMED)


def jsonl_with_list_answer(folder):
    """Row 2 answers with a JSON list where the others give a number (``datasets`` reads the column as JSON)."""
    return write_jsonl(folder, {"question": "q2", "answer": [2, 3], "image": "ok.png"})


def parquet_file(path, wrong: str | None = None):
    """Three good question/answer/image rows; ``wrong`` names a column stored with the wrong type (a parquet
    column has one type, so every row of it): answer a list of strings, image or question a number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    cells = {"question": ["q0", "q1", "q2"], "answer": ["4", "5", "6"], "image": [{"bytes": png(), "path": None}] * 3}
    if wrong is not None:
        cells[wrong] = {"answer": [["4", "5"]] * 3, "image": [7, 8, 9], "question": [7, 8, 9]}[wrong]
    pq.write_table(pa.table(cells), path)
    return path


def data_cfg(path, *overrides):
    return compose(["data=local", f"data.path={path}", f"data.val_path={path}", *COLUMNS, *overrides]).data


def train(tmp_path, path, *overrides):
    """`mssr train` on ``path`` (training and validation), in this process: the stack is imported once."""
    args = ["train", "data=local", f"data.path={path}", f"data.val_path={path}", *COLUMNS, *overrides,
            "--run-dir", str(tmp_path / "run")]
    return CliRunner().invoke(app, args)


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


# --- each case through `mssr train`: one line, exit 2 -----------------------------------------------------
def test_malformed_jsonl_line_is_named_by_its_line_number(tmp_path):
    path = jsonl_with_malformed_line(tmp_path / "d")
    line = one_line_error(train(tmp_path, path))
    # the line as an editor numbers it (row 2 of the file; pyarrow would say "row 1" of its block, others a byte offset)
    assert line.startswith(f"error: data=local: {path} line 4: not valid JSON (Expecting ',' delimiter at character 50); "), line
    assert line.endswith(f"1 bad row(s) of 5 in the train rows of {path} (data.skip_bad_rows=true skips them)"), line


@pytest.mark.parametrize("bad_image", list(BAD_IMAGES))
def test_bad_image_is_named_by_file_line_and_column(tmp_path, bad_image):
    path = jsonl_with_bad_image(tmp_path / "d", bad_image)
    line = one_line_error(train(tmp_path, path))
    reason = BAD_IMAGES[bad_image][1]
    assert f"{path} line 4, column 'image': {reason}" in line and bad_image in line, line
    assert "1 bad row(s) of 5" in line


def test_answer_of_the_wrong_type_in_one_jsonl_row(tmp_path):
    path = jsonl_with_list_answer(tmp_path / "d")
    line = one_line_error(train(tmp_path, path))
    assert f"{path} line 4, column 'answer': answer not text or a number (list)" in line, line


@pytest.mark.parametrize("column,reason", [("answer", "answer not text or a number (list)"),
                                           ("image", "not an image (int)"), ("question", "question not text (int)")])
def test_parquet_column_of_the_wrong_type(tmp_path, column, reason):
    path = parquet_file(tmp_path / "d" / "train.parquet", wrong=column)
    line = one_line_error(train(tmp_path, path))
    assert f"{path} row 0, column '{column}': {reason}; 3 bad row(s) of 3" in line, line
    with pytest.raises(DataSourceError, match="nothing is left to use"):  # skipping every row is still an error
        load_split(data_cfg(path, "data.skip_bad_rows=true"), "train")


def test_parquet_files_that_disagree_on_a_column_type_name_the_file(tmp_path):
    folder = tmp_path / "d"
    parquet_file(folder / "part-0.parquet")
    parquet_file(folder / "part-1.parquet", wrong="answer")
    line = one_line_error(train(tmp_path, folder))
    assert f"{folder / 'part-1.parquet'}: column 'answer' is list<element: string>, which does not cast to string" in line


def test_truncated_parquet_file_is_named(tmp_path):
    folder = tmp_path / "d"
    parquet_file(folder / "part-0.parquet")
    data = parquet_file(folder / "part-1.parquet").read_bytes()
    (folder / "part-1.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataSourceError, match=r"part-1.parquet: not a readable parquet file \(ArrowInvalid: .*magic bytes"):
        load_split(data_cfg(folder), "train")


def test_row_of_a_later_file_is_named_in_that_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "d"
    parquet_file(folder / "part-0.parquet")
    rows = pq.read_table(parquet_file(folder / "part-1.parquet")).to_pylist()
    rows[2]["image"] = {"bytes": png("blue", (64, 64))[:-30], "path": None}  # truncated bytes in the cell itself
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-1.parquet")
    with pytest.raises(DataSourceError) as err:
        load_split(data_cfg(folder), "train")
    assert f"{folder / 'part-1.parquet'} row 2, column 'image': unreadable image (" in str(err.value)  # not "row 5"


# --- data.skip_bad_rows=true: dropped and counted ----------------------------------------------------------
SKIP_CASES = {"malformed line": (jsonl_with_malformed_line, "1 malformed JSON line"),
              "list answer": (jsonl_with_list_answer, "1 answer not text or a number (answer)"),
              **{name: (lambda folder, name=name: jsonl_with_bad_image(folder, name), f"1 {BAD_IMAGES[name][1]} (image)")
                 for name in BAD_IMAGES}}


@pytest.mark.parametrize("case", list(SKIP_CASES))
def test_skip_bad_rows_drops_the_row_and_counts_it(tmp_path, capsys, case):
    make, kind = SKIP_CASES[case]
    path = make(tmp_path / "d")
    capsys.readouterr()
    kept = load_split(data_cfg(path, "data.skip_bad_rows=true"), "train")
    assert kept["id"] == [0, 1, 3, 4]  # the other rows keep their source row ids
    note = capsys.readouterr().out.strip().splitlines()
    assert len(note) == 1 and "skipped 1 of 5 rows" in note[0] and kind in note[0], note
    assert note[0].endswith(f"(first: {path} line 4)")


def test_skip_bad_rows_through_the_cli_prints_the_count_and_goes_on(tmp_path, monkeypatch):
    path = jsonl_with_bad_image(tmp_path / "d", "bomb.png")

    def stop(*args, **kwargs):  # the data loaded; stop where the model would load
        raise DataSourceError("model load reached")

    monkeypatch.setattr("mssr_cli.models.loading.load_policy", stop)
    result = train(tmp_path, path, "data.skip_bad_rows=true")
    assert one_line_error(result) == "error: model load reached"
    notes = [line for line in result.stdout.splitlines() if "skipped" in line]
    assert len(notes) == 2 and all("skipped 1 of 5 rows" in n and "1 image too large (image)" in n for n in notes)


# --- the guards themselves ------------------------------------------------------------------------------
def test_bomb_check_is_an_error_already_where_pil_only_warns(monkeypatch):
    """Between MAX_IMAGE_PIXELS and twice that PIL only warns and would decode; here that is a bad image too."""
    from mssr_cli.data.images import BadImage, image_value

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image_value(png(size=(25, 40)), None)  # 1000 pixels: at the limit, fine
    with pytest.raises(BadImage, match=r"image too large \(Image size \(1600 pixels\) exceeds limit of 1000 pixels"):
        image_value(png(size=(40, 40)), None)


def test_every_line_malformed_or_a_broken_json_document(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q0",\n[1, 2]\n')
    with pytest.raises(DataSourceError, match=r"no line is a JSON object \(.*bad.jsonl line 1: not valid JSON"):
        load_split(data_cfg(bad, "data.skip_bad_rows=true"), "train")
    document = tmp_path / "rows.json"
    document.write_text('[\n  {"question": "q0", "answer": 1, "image": "a.png"},\n  {"question": "q1" "answer": 2}\n]\n')
    with pytest.raises(DataSourceError, match=r"rows.json line 3: not valid JSON \(Expecting ',' delimiter at character 21\)"):
        load_split(data_cfg(document), "train")


# --- `mssr eval --data-dir`: a benchmark's local copy ---------------------------------------------------
def test_eval_local_copy_with_a_truncated_image_is_one_line(tmp_path, monkeypatch):
    import datasets

    from mssr_cli.evaluation import runner

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model loaded before the data was checked")

    monkeypatch.setattr(runner, "_load_model", must_not_load)
    features = datasets.Features({name: datasets.Value("string") for name in ("id", "subject", "question", "answer")}
                                 | {"image": datasets.Image()})
    shards = tmp_path / "data_dir" / "mmk12" / "data"
    shards.mkdir(parents=True)
    for shard in range(2):
        rows = {"id": [f"{shard}-{i}" for i in range(2)], "subject": ["math"] * 2, "answer": ["A"] * 2,
                "question": ["Which?\nA. 1\nB. 2"] * 2, "image": [{"bytes": png(), "path": None}] * 2}
        if shard == 1:
            rows["image"][1] = {"bytes": png("blue", (64, 64))[:-30], "path": None}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(shards / f"test-0000{shard}-of-00002.parquet"))
    result = CliRunner().invoke(app, ["eval", "--benchmarks", "mmk12", "--data-dir", str(tmp_path / "data_dir"),
                                      "--model", "tiny", "--out", str(tmp_path / "out")])
    line = one_line_error(result)
    assert f"mmk12: {shards / 'test-00001-of-00002.parquet'} row 1, column 'image': unreadable image (" in line, line
