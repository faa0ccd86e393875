"""Every benchmark from a tiny local copy in its Hub repository's layout and schema.

``write_local_copy(name, data_dir)`` writes what ``hf download <id> --repo-type
dataset --local-dir DIR/<name>`` leaves (file names and column types as each repository stores
them, see ``mssr_cli/evaluation/benchmarks.py`` for the sources), with 2-3 rows and small
generated PNG images. The same ``--data-dir`` code path as ``mssr eval`` then loads, prompts and
scores them. Other eval tests import ``write_local_copy`` from here.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from mssr_cli.evaluation.benchmarks import BENCHMARKS, BENCHMARK_NAMES, IMAGE_PLACEHOLDER
from mssr_cli.evaluation.errors import BenchmarkDataError, UnknownBenchmarkError
from mssr_cli.evaluation.sources import download_command, load_docs


def _png(seed: int, size: int = 40):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255 - 40 * seed % 255, 200))
    ImageDraw.Draw(image).rectangle([4 + seed, 4, size - 6, size - 8 - seed], outline=(0, 0, 0), width=2)
    return image


def _png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    _png(seed).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_parquet(path: Path, rows: list[dict], features: dict) -> None:
    """Rows as ``datasets`` writes a split's parquet on the Hub: feature types in the file's metadata."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in features}
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))


def _v(dtype="string"):
    import datasets

    return datasets.Value(dtype)


def _mathvista(folder: Path) -> None:
    import datasets

    meta = {
        "category": _v(), "context": _v(), "grade": _v(), "img_height": _v("int64"), "img_width": _v("int64"),
        "language": _v(), "skills": datasets.Sequence(_v()), "source": _v(), "split": _v(), "task": _v(),
    }
    features = {
        "pid": _v(), "question": _v(), "image": _v(), "decoded_image": datasets.Image(),
        "choices": datasets.Sequence(_v()), "unit": _v(), "precision": _v("float64"), "answer": _v(),
        "question_type": _v(), "answer_type": _v(), "metadata": meta, "query": _v(),
    }
    m = {"category": "math-targeted-vqa", "context": "synthetic scene", "grade": "daily life", "img_height": 40,
         "img_width": 40, "language": "english", "skills": ["arithmetic reasoning"], "source": "CLEVR-Math",
         "split": "testmini", "task": "math word problem"}
    rows = [
        {"pid": "1", "question": "What is the largest city in the nation where this plane is headquartered?",
         "image": "images/1.jpg", "decoded_image": _png(1), "choices": ["hong kong", "osaka", "shanghai", "tokyo"],
         "unit": None, "precision": None, "answer": "tokyo", "question_type": "multi_choice", "answer_type": "text",
         "metadata": m, "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
         "at the end.\nQuestion: What is the largest city?\nChoices:\n(A) hong kong\n(B) osaka\n(C) shanghai\n(D) tokyo"},
        {"pid": "2", "question": "How much money does Luca need? (Unit: $)", "image": "images/2.jpg",
         "decoded_image": _png(2), "choices": None, "unit": "$", "precision": 2.0, "answer": "1.45",
         "question_type": "free_form", "answer_type": "float", "metadata": m,
         "query": "Hint: Please answer the question requiring a floating-point number with two decimal places and "
         "provide the final value, e.g., 1.23, 1.34, 1.45, at the end.\nQuestion: How much money does Luca need? (Unit: $)"},
        {"pid": "3", "question": "How long is the bar?", "image": "images/3.jpg", "decoded_image": _png(3),
         "choices": None, "unit": "cm", "precision": None, "answer": "7", "question_type": "free_form",
         "answer_type": "integer", "metadata": m, "query": "Hint: Please answer the question requiring an integer answer "
         "and provide the final value, e.g., 1, 2, 3, at the end.\nQuestion: How long is the bar? (Unit: cm)"},
    ]
    _write_parquet(folder / "data" / "testmini-00000-of-00001-725687bf7a18d64b.parquet", rows, features)


def _mathverse(folder: Path) -> None:
    import datasets

    meta = {"split": _v(), "source": _v(), "subject": _v(), "subfield": _v()}
    features = {
        "sample_index": _v(), "problem_index": _v(), "problem_version": _v(), "question": _v(),
        "image": datasets.Image(), "answer": _v(), "question_type": _v(), "metadata": meta,
        "query_wo": _v(), "query_cot": _v(), "question_for_eval": _v(),
    }
    m = {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}
    question = "As shown in the figure, find the angle.\nChoices:\nA:25°\nB:50°\nC:65°\nD:40°"
    rows = [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Dominant", "question": question,
         "image": _png(1), "answer": "B", "question_type": "multi-choice", "metadata": m,
         "query_wo": "Please directly answer the question and provide the correct option letter, e.g., A, B, C, D.\n"
         "Question: " + question,
         "query_cot": "Please first conduct reasoning, and then answer the question and provide the correct option "
         "letter, e.g., A, B, C, D, at the end.\nQuestion: " + question, "question_for_eval": question},
        {"sample_index": "2", "problem_index": "2", "problem_version": "Vision Only", "question": "",
         "image": _png(2), "answer": "5", "question_type": "free-form", "metadata": m,
         "query_wo": "According to the question shown in the image, please directly answer the question.",
         "query_cot": "According to the question shown in the image, please first conduct reasoning, and then answer "
         "the question and provide the final value, e.g., 1, 2.5, 300, at the end.", "question_for_eval": "find x"},
    ]
    _write_parquet(folder / "testmini.parquet", rows, features)
    text_only = [dict(rows[0], sample_index="9", problem_version="Text Only", image=None)]
    _write_parquet(folder / "testmini_text_only.parquet", text_only, features)  # the other config: not evaluated


def _mathvision(folder: Path) -> None:
    import datasets

    features = {
        "id": _v(), "question": _v(), "options": datasets.Sequence(_v()), "image": _v(),
        "decoded_image": datasets.Image(), "answer": _v(), "solution": _v(), "level": _v("int64"), "subject": _v(),
    }
    rows = [
        {"id": "1", "question": "<image1>\nWhich shape comes next?", "options": ["A", "B", "C", "D", "E"],
         "image": "images/1.jpg", "decoded_image": _png(1), "answer": "C", "solution": None, "level": 1,
         "subject": "logic"},
        {"id": "2", "question": "<image1>\nHow many squares are there?", "options": [], "image": "images/2.jpg",
         "decoded_image": _png(2), "answer": "12", "solution": None, "level": 2, "subject": "counting"},
    ]
    _write_parquet(folder / "data" / "test-00000-of-00001-3532b8d3f1b4047a.parquet", rows, features)
    _write_parquet(folder / "data" / "testmini-00000-of-00001-f8ff70fcb2f29b1d.parquet", rows[:1], features)


def _mmk12(folder: Path) -> None:
    import datasets

    features = {"id": _v(), "subject": _v(), "image": datasets.Image(), "question": _v(), "answer": _v()}
    rows = [
        {"id": "math_1", "subject": "math", "image": _png(1), "answer": "B",
         "question": "In the figure, what is the area of the triangle?\nA. $$10.5$$\nB. $$12$$\nC. $$14$$\nD. $$16$$"},
        {"id": "physics_1", "subject": "physics", "image": _png(2), "answer": "D",
         "question": "Which circuit lights the bulb?\nA. circuit 1\nB. circuit 2\nC. circuit 3\nD. circuit 4"},
    ]
    _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, features)
    _write_parquet(folder / "data" / "train-00000-of-00001.parquet", rows[:1], features)


def _r1_onevision(folder: Path) -> None:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"index": 0, "image": base64.b64encode(_png_bytes(1)).decode(), "question": "Hint: answer with a letter.\n"
         "Question: Which organ is shown?", "choices": "A. heart\nB. lung\nC. liver\nD. kidney", "answer": "B",
         "category": "Biology", "level": "College"},
        {"index": 1, "image": base64.b64encode(_png_bytes(2)).decode(), "question": "Question: How many moles of gas?",
         "choices": None, "answer": "0.25", "category": "Chemistry", "level": "Senior High"},
    ]
    pd.DataFrame(rows).to_csv(folder / "r1-onevision.tsv", sep="\t", index=False)  # as VLMEvalKit TSVs are written


def _hallusionbench(folder: Path) -> None:
    import datasets

    features = {
        "category": _v(), "subcategory": _v(), "visual_input": _v(), "set_id": _v(), "figure_id": _v(),
        "sample_note": _v(), "question_id": _v(), "question": _v(), "gt_answer_details": _v(), "gt_answer": _v(),
        "filename": _v(), "image": datasets.Image(),
    }
    base = {"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "sample_note": "circle",
            "filename": "./hallusion_bench/VD/illusion/0_0.png"}
    rows = [
        dict(base, figure_id="0", question_id="0", question="Is the left orange circle the same size as the right one?",
             gt_answer_details="Yes, they are the same size.", gt_answer="1", image=_png(1)),
        dict(base, figure_id="1", question_id="0", question="Is the left orange circle the same size as the right one?",
             gt_answer_details="No, the left one is larger.", gt_answer="0", image=_png(2)),
    ]
    _write_parquet(folder / "data" / "image-00000-of-00001.parquet", rows, features)
    non_image = [dict(rows[0], visual_input="0", image=None)]
    _write_parquet(folder / "data" / "non_image-00000-of-00001.parquet", non_image, features)


def _wemath(folder: Path) -> None:
    import datasets

    features = {
        "ID": _v(), "split": _v(), "knowledge concept": _v(), "question": _v(), "option": _v(), "answer": _v(),
        "key": _v(), "question number": _v("int64"), "knowledge concept description": _v(),
        "image_path": datasets.Image(),
    }
    rows = [
        {"ID": "1", "split": "testmini", "knowledge concept": "Angles", "question": "What is angle ABC?",
         "option": "A. 20°; B. 40°; C. 60°; D. 80°; E. No correct answer", "answer": "C", "key": "2steps_1",
         "question number": 1, "knowledge concept description": "angles", "image_path": _png(1)},
        {"ID": "2", "split": "testmini", "knowledge concept": "Area", "question": "What is the area?",
         "option": "A. 6; B. 8; C. 10; D. 12; E. No correct answer", "answer": "D", "key": "2steps_multi",
         "question number": 2, "knowledge concept description": "area", "image_path": _png(2)},
    ]
    _write_parquet(folder / "data" / "testmini-00000-of-00001-adbfe22dcd3558e6.parquet", rows, features)


def _logicvista(folder: Path) -> None:
    import datasets

    features = {
        "question": _v(), "answer": _v(), "reasoning": _v(), "image": datasets.Image(), "skill": _v(),
        "broad_capability": _v(), "specific_capability": _v(), "imagesource": _v(), "sourcelink": _v(),
        "liscenced": _v(), "id": _v(),
    }
    base = {"reasoning": "...", "skill": "inductive", "broad_capability": "puzzles", "specific_capability": "patterns",
            "imagesource": "web", "sourcelink": "", "liscenced": "yes"}
    rows = [
        dict(base, id="0", image=_png(1), answer="C",
             question="Which figure completes the pattern? Choose from A, B, C, D."),
        dict(base, id="1", image=_png(2), answer="A, C",
             question="Which two statements are true? Select all that apply: A, B, C, D."),
    ]
    _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, features)


WRITERS = {
    "mathvista": _mathvista,
    "mathverse": _mathverse,
    "mathvision": _mathvision,
    "mmk12": _mmk12,
    "r1_onevision_bench": _r1_onevision,
    "hallusionbench": _hallusionbench,
    "wemath": _wemath,
    "logicvista": _logicvista,
}


def write_local_copy(name: str, data_dir: Path) -> Path:
    """A local copy of benchmark ``name`` in ``data_dir/name``, in its Hub repository's layout."""
    folder = data_dir / name
    WRITERS[name](folder)
    (folder / "README.md").write_text(f"local copy of {BENCHMARKS[name].hub_id} (test fixture)\n")
    return folder


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("eval_data")
    for name in WRITERS:
        write_local_copy(name, data_dir)
    return data_dir


# Per benchmark: (evaluated rows, {row id: (a right response, a wrong response)}).
EXPECTED = {
    "mathvista": (3, {"1": (r"\boxed{D}", r"\boxed{C}"), "2": ("the answer is $1.45.", r"\boxed{1.46}"),
                      "3": (r"\boxed{7 cm}", r"\boxed{8}")}),
    "mathverse": (2, {"1": (r"\boxed{50°}", r"\boxed{A}"), "2": (r"so x = 5", r"\boxed{6}")}),
    "mathvision": (2, {"1": ("(C)", r"\boxed{D}"), "2": (r"\boxed{12}", r"\boxed{11}")}),
    "mmk12": (2, {"math_1": (r"\boxed{12}", r"\boxed{A}"), "physics_1": ("The answer is D.", "The answer is B.")}),
    "r1_onevision_bench": (2, {"0": ("<answer>B</answer>", "<answer>A</answer>"), "1": (r"\boxed{1/4}", r"\boxed{0.5}")}),
    "hallusionbench": (2, {"VD_illusion_0_0_0": ("Yes, they are.", "No."),
                           "VD_illusion_0_1_0": (r"\boxed{no}", r"\boxed{yes}")}),
    "wemath": (2, {"1": (r"\boxed{60°}", r"\boxed{B}"), "2": ("<think>B?</think>(D)", "<think>D</think>(B)")}),
    "logicvista": (2, {"0": (r"\boxed{C}", r"\boxed{A}"), "1": (r"\boxed{A, C}", r"\boxed{A}")}),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_benchmark_loads_prompts_and_scores_from_a_local_copy(copies, name):
    from PIL import Image

    benchmark = BENCHMARKS[name]
    docs, source = load_docs(name, copies)
    count, responses = EXPECTED[name]
    assert source == f"local copy {copies / name}"
    assert len(docs) == count
    for doc in docs:
        prompt = benchmark.prompt(doc)
        assert prompt.startswith(IMAGE_PLACEHOLDER) and prompt.count(IMAGE_PLACEHOLDER) == 1  # dataset tags removed
        assert prompt.endswith("Put the final answer in \\boxed{}.")
        images = benchmark.images(doc)
        assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].mode == "RGB"
        right, wrong = responses[benchmark.doc_id(doc)]
        assert benchmark.grade(doc, right).correct, (name, right)
        assert not benchmark.grade(doc, wrong).correct, (name, wrong)


def test_mathvista_gold_is_the_choice_text_and_prompt_has_the_options(copies):
    docs, _ = load_docs("mathvista", copies)
    first = docs[0]
    assert BENCHMARKS["mathvista"].gold(first) == "tokyo"
    assert "(D) tokyo" in BENCHMARKS["mathvista"].prompt(first)
    assert BENCHMARKS["mathvista"].grade(first, r"\boxed{D}").extracted == "D"


def test_mathverse_keeps_only_versions_with_an_image(copies):
    docs, _ = load_docs("mathverse", copies)
    assert sorted(docs["problem_version"]) == ["Text Dominant", "Vision Only"]


def test_mathvision_image_tags_leave_the_prompt(copies):
    docs, _ = load_docs("mathvision", copies)
    prompt = BENCHMARKS["mathvision"].prompt(docs[0])
    assert "<image1>" not in prompt and "(E) E" in prompt


def test_refs_convert_parquet_layout_is_found(tmp_path):
    # The Hub's parquet-converter branch keeps <config>/<split>/0000.parquet.
    write_local_copy("mathvista", tmp_path)
    source = next((tmp_path / "mathvista" / "data").glob("*.parquet"))
    target = tmp_path / "mathvista" / "default" / "testmini" / "0000.parquet"
    target.parent.mkdir(parents=True)
    source.rename(target)
    docs, _ = load_docs("mathvista", tmp_path)
    assert len(docs) == 3


def test_missing_data_is_one_line_with_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkDataError) as info:
        load_docs("mathvista", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("mathvista: no data:")
    assert f"no folder {tmp_path / 'mathvista'}" in message
    assert "AI4Math/MathVista" in message
    assert message.endswith(f"hf download AI4Math/MathVista --repo-type dataset --local-dir {tmp_path / 'mathvista'}")


def test_missing_split_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "wemath" / "data").mkdir(parents=True)
    with pytest.raises(BenchmarkDataError, match=r"no local copy in .*wemath \(looked for data/testmini-\*\.parquet\)"):
        load_docs("wemath", tmp_path)


def test_missing_data_without_a_data_dir_says_how_to_make_one(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkDataError, match=r"local-dir DIR/hallusionbench and pass --data-dir DIR$"):
        load_docs("hallusionbench")


def test_unknown_benchmark_lists_the_valid_names():
    with pytest.raises(UnknownBenchmarkError) as info:
        load_docs("mathvistaa")
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"unknown benchmark 'mathvistaa'; valid names: {', '.join(BENCHMARK_NAMES)}"


def test_every_benchmark_has_a_fixture_and_a_download_command():
    assert set(WRITERS) == {name for name in BENCHMARK_NAMES if BENCHMARKS[name].hub_id is not None}
    for name in WRITERS:
        assert download_command(BENCHMARKS[name], "/d") == (
            f"hf download {BENCHMARKS[name].hub_id} --repo-type dataset --local-dir /d/{name}"
        )


def test_digits_is_the_training_validation_split():
    from mssr_cli.data.digits import load_digits_split

    docs, source = load_docs("digits")
    reference = load_digits_split("validation", 56, 300)
    assert source == "built in" and docs["id"] == reference["id"] and docs["answer"] == reference["answer"]
    assert BENCHMARKS["digits"].prompt(docs[0]) == "<image>Which digit is shown? Put the final answer in \\boxed{}."
    # digits is graded by the training reward: free text does not count there
    assert not BENCHMARKS["digits"].grade(docs[0], f"The answer is {docs[0]['answer']}").correct
    assert BENCHMARKS["digits"].grade(docs[0], f"\\boxed{{{docs[0]['answer']}}}").correct



def test_without_a_local_copy_the_hub_id_is_loaded(monkeypatch):
    import datasets

    from mssr_cli.evaluation import sources

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"problem_version": ["Vision Only", "Text Only"], "answer": ["A", "B"]})

    monkeypatch.setattr("mssr_cli.hub.hub_worth_trying", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    docs, source = load_docs("mathverse")
    assert calls == [("AI4Math/MathVerse", "testmini", "testmini")]
    assert source == "Hub AI4Math/MathVerse" and docs["answer"] == ["A"]  # Text Only dropped


def test_unreachable_hub_fails_fast_without_retries(monkeypatch, tmp_path):
    import datasets

    from mssr_cli.evaluation import sources

    monkeypatch.setattr("mssr_cli.hub.hub_worth_trying", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no Hub call when unreachable"))
    with pytest.raises(BenchmarkDataError, match=r"could not be loaded \(ConnectionError: no connection to the Hub\)"):
        load_docs("logicvista", tmp_path)
