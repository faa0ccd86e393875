"""The toy generalization suite: deterministic, drawn from held-out images only, shifted, one name for all five."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest

from mssr_cli.data import toy_shifts
from mssr_cli.data.digits import digit_image, split_indices
from mssr_cli.data.toy_suite import NUM_ITEMS, SHIFTS, TOY_SUITE, load_toy_benchmark, shifted_grey, toy_rows
from mssr_cli.evaluation.benchmarks import BENCHMARKS, parse_benchmarks

# sha256 of every item's RGB pixels and answer, per benchmark, at the defaults (56 px, num_val 300): an item
# must be the same image on every machine, so these hold everywhere (change them only with the suite's definition)
DIGESTS = {
    "toy_thick": "d16828548ad53ec12f3a30879d23435ac338eea7d9e6255c654e085d49d271d6",
    "toy_noise": "bd4743de972ca431e8d402d6e78e024f1e2f974147908d2950f89b0fbfe69a70",
    "toy_rotate": "f7de4ca6fb300d736b1579d2368074abb17018f6d61dafd44af40adb8d3bc973",
    "toy_small": "ff6eed1277598be692211b43d63d224104097ee3e67f47872c14f10b5b308741",
    "toy_invert": "b3a8bfaf2044b2db9e60beac4a725cb5fc0f9529efd5d6628487ec93162df707",
}


@pytest.fixture(scope="module")
def raw():
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="module")
def suite(raw):
    """{name: (documents, the 8x8 source of every image the shifts drew)}, each benchmark built once."""
    seen: dict[str, list[np.ndarray]] = {}
    grey = toy_shifts.grey
    built = {}
    for name in TOY_SUITE:
        sources = seen.setdefault(name, [])

        def recording(pixels, size, _sources=sources):
            _sources.append(np.array(pixels))
            return grey(pixels, size)

        toy_shifts.grey = recording  # every shift draws its digit through grey(): record what it is given
        try:
            built[name] = (load_toy_benchmark(name), sources)
        finally:
            toy_shifts.grey = grey
    return built


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _digest(docs) -> str:
    h = hashlib.sha256()
    for doc in docs:
        h.update(_pixels(doc["image"]).tobytes())
        h.update(doc["answer"].encode())
    return h.hexdigest()


def test_five_benchmarks_of_modest_size(suite):
    assert len(TOY_SUITE) == 5 and 100 <= NUM_ITEMS <= 300
    for name, (docs, _) in suite.items():
        assert len(docs) == NUM_ITEMS and docs["id"] == list(range(NUM_ITEMS)), name
        assert docs[0]["image"].size == (56, 56) and docs[0]["image"].mode == "RGB"


def test_building_twice_gives_the_same_items(suite):
    for name, (docs, _) in suite.items():
        again = load_toy_benchmark(name)
        assert again["answer"] == docs["answer"] and again["row"] == docs["row"], name
        assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(again["image"], docs["image"])), name


def test_the_items_are_the_same_on_every_machine(suite):
    assert {name: _digest(docs) for name, (docs, _) in suite.items()} == DIGESTS


def test_no_image_comes_from_training(suite, raw):
    train = split_indices().train
    training = {raw.images[i].tobytes() for i in train}
    training_drawn = {digit_image(raw.images[i], 56).tobytes() for i in train}  # as training sees them
    for name, (docs, sources) in suite.items():
        assert len(sources) == NUM_ITEMS, name
        assert not any(s.tobytes() in training for s in sources), name  # what each shift drew from
        assert not set(docs["row"]) & set(train.tolist()), name
        assert not any(_pixels(image).tobytes() in training_drawn for image in docs["image"]), name


def test_rows_name_the_images_drawn(suite, raw):
    for name, (docs, sources) in suite.items():
        assert all(np.array_equal(s, raw.images[r]) for s, r in zip(sources, docs["row"])), name
        assert docs["answer"] == [str(raw.target[r]) for r in docs["row"]], name
        item = 7
        drawn = shifted_grey(name, raw.images[docs["row"][item]], 56, item)
        assert np.array_equal(_pixels(docs[item]["image"])[:, :, 0], drawn), name


def test_every_item_is_shifted(suite, raw):
    for name, (docs, _) in suite.items():
        for doc in docs:
            original = np.asarray(digit_image(raw.images[doc["row"]], 56))
            changed = np.mean(_pixels(doc["image"]) != original)
            assert changed >= 0.05, (name, doc["id"], changed)  # not the digits item, nor nearly


def test_held_out_pool_follows_the_runs_split():
    for num_val in (300, 100, 600):
        val = set(split_indices(num_val).val.tolist())
        rows = toy_rows(num_val)
        assert len(rows) == NUM_ITEMS and set(rows) <= val
        assert len(set(rows)) == min(NUM_ITEMS, len(val))  # every validation image once before any repeats


def test_rotation_table_is_cos_and_sin():
    for degrees, (cos, sin) in toy_shifts.FIXED_POINT.items():
        assert cos == round(toy_shifts.Q * math.cos(math.radians(degrees)))
        assert sin == round(toy_shifts.Q * math.sin(math.radians(degrees)))
    assert set(SHIFTS["toy_rotate"].params["degrees"]) <= set(toy_shifts.FIXED_POINT)


def test_items_ask_and_grade_as_digits(suite):
    for name, (docs, _) in suite.items():
        benchmark, doc = BENCHMARKS[name], docs[0]
        assert benchmark.prompt(doc) == "<image>Which digit is shown? Put the final answer in \\boxed{}."
        assert benchmark.grade(doc, f"\\boxed{{{doc['answer']}}}").correct
        assert not benchmark.grade(doc, f"The answer is {doc['answer']}").correct  # the training reward, strict


def test_toy_suite_is_the_five():
    from mssr_cli.experiments.batch import checked_evals

    assert parse_benchmarks("toy_suite") == list(TOY_SUITE)
    assert parse_benchmarks("digits,toy_suite,toy_noise") == ["digits", *TOY_SUITE]
    assert checked_evals(["toy_suite"], 5) == list(TOY_SUITE)  # mssr ablate --eval toy_suite


def test_lm_eval_tag_toy_suite_is_the_five():
    from lm_eval.tasks import TaskManager

    from mssr_cli.evaluation import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert sorted(manager.load(["toy_suite"])["tasks"]) == sorted(f"mssr_{name}" for name in TOY_SUITE)


def test_task_files_state_the_shifts():
    from mssr_cli.evaluation import TASKS_DIR

    for name, shift in SHIFTS.items():
        assert f"{shift.shift}: {shift.parameters};" in (TASKS_DIR / f"mssr_{name}.yaml").read_text(), name


def test_readme_pictures_are_the_items(tmp_path):
    # bench/toy_suite_examples.py drew docs/toy_suite_*.png: they must still be what the suite draws
    import subprocess
    import sys

    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "bench" / "toy_suite_examples.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("digits", *TOY_SUITE):
        drawn, committed = (np.asarray(Image.open(folder / f"toy_suite_{name}.png")) for folder in (tmp_path, root / "docs"))
        assert np.array_equal(drawn, committed), name


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plain_lm_eval_scores_the_suite_as_mssr_eval(tiny_policy_path, tmp_path):
    from test_eval_tasks import plain_lm_eval_matches_mssr_eval

    plain_lm_eval_matches_mssr_eval("toy_suite", list(TOY_SUITE), tiny_policy_path, tmp_path, limit=2)

