"""The built-in reasoning task (data=digit_sum): deterministic composition from disjoint digit images,
multi-token answers graded right, the think prompt, its config, and the warm start's chains."""

from __future__ import annotations

import numpy as np
import pytest

from mssr_cli.data.digit_sum import (MAX_DIGITS, MIN_DIGITS, NUM_EXAMPLES, VAL_ID_OFFSET, chain, compose_examples,
                                     load_digit_sum_split, parse_chain, pixel_bounds)
from mssr_cli.data.digits import digit_image, split_indices


@pytest.fixture(scope="module")
def labels():
    from sklearn.datasets import load_digits

    return load_digits().target


@pytest.fixture(scope="module")
def examples():
    return {split: compose_examples(split) for split in ("train", "validation")}


def test_composition_is_deterministic_and_ids_are_stable(examples):
    assert compose_examples("train") == examples["train"] and compose_examples("validation") == examples["validation"]
    train, val = examples["train"], examples["validation"]
    assert [ex.id for ex in train] == list(range(NUM_EXAMPLES["train"]))
    assert [ex.id for ex in val] == [VAL_ID_OFFSET + i for i in range(NUM_EXAMPLES["validation"])]
    # pinned: a change to the split, the seed or the drawing changes the task (and every result on it)
    assert [ex.rows for ex in train[:2]] == [(162, 1209), (562, 1629)]
    assert [ex.rows for ex in val[:2]] == [(930, 194, 184, 804), (1455, 1212)]
    one, two = load_digit_sum_split("validation", limit=6), load_digit_sum_split("validation", limit=6)
    assert one["id"] == two["id"] and one["answer"] == two["answer"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(one["image"], two["image"], strict=True))


def test_train_and_validation_sums_use_disjoint_digit_images(examples):
    split = split_indices()
    train_rows = {r for ex in examples["train"] for r in ex.rows}
    val_rows = {r for ex in examples["validation"] for r in ex.rows}
    assert train_rows <= set(split.train.tolist()) and val_rows <= set(split.val.tolist())
    assert not train_rows & val_rows
    assert len(val_rows) > 250  # the validation sums cover most validation digits, not a handful


def test_each_example_is_2_to_4_digits_and_the_answer_is_their_sum(examples, labels):
    for split_examples in examples.values():
        counts = {len(ex.rows) for ex in split_examples}
        assert counts == set(range(MIN_DIGITS, MAX_DIGITS + 1))
        for ex in split_examples:
            assert len(set(ex.rows)) == len(ex.rows)  # no image twice in one sum
            assert ex.digits == tuple(int(labels[r]) for r in ex.rows)
            assert ex.answer == str(sum(int(labels[r]) for r in ex.rows))


def test_rows_show_the_digits_side_by_side(examples, labels):
    from sklearn.datasets import load_digits

    images = load_digits().images
    ds = load_digit_sum_split("train", limit=12)
    assert ds.column_names == ["prompt", "image", "answer", "id"]
    for row, ex in zip(ds, examples["train"][:12], strict=True):
        assert row["id"] == ex.id and row["answer"] == str(sum(int(labels[r]) for r in ex.rows))
        image = np.asarray(row["image"])
        assert row["image"].mode == "RGB" and image.shape == (56, 56 * MAX_DIGITS, 3)
        for slot, r in enumerate(ex.rows):  # each slot is that digit, drawn as the digits task draws it
            assert np.array_equal(image[:, slot * 56 : (slot + 1) * 56], np.asarray(digit_image(images[r], 56)))
        assert (image[:, 56 * len(ex.rows) :] == 255).all()  # the slots past the last digit are blank


def test_the_prompt_asks_for_think_then_boxed():
    content = load_digit_sum_split("validation", limit=1)[0]["prompt"][0]["content"]
    assert "sum" in content and "<think></think>" in content and "\\boxed{}" in content
    assert content.index("<think>") < content.index("\\boxed{}")


def test_multi_token_answers_are_graded_on_the_final_box():
    from mssr_cli.rewards.functions import accuracy, format

    def reward(function, text, answer="10"):
        return function([[{"role": "assistant", "content": text}]], answer=[answer])[0]

    assert reward(accuracy, "<think>3+5+2=10</think> \\boxed{10}") == 1.0
    assert reward(accuracy, "<think>3 + 5 + 2 = 10</think> \\boxed{10}") == 1.0
    assert reward(accuracy, "<think>3+5+2=10</think> \\boxed{1}") == 0.0
    assert reward(accuracy, "\\boxed{1}") == 0.0
    assert reward(accuracy, "<think>3+5+2=10</think>") == 0.0  # the sum in the reasoning is not the answer
    assert reward(format, "<think>3+5+2=10</think> \\boxed{10}") == 1.0
    assert reward(format, "\\boxed{10}") == 0.0
    assert reward(format, "3+5+2=10 \\boxed{10}") == 0.0
    assert reward(format, "<think>3+5+2=10 \\boxed{10}") == 0.0  # unclosed think


def test_warm_start_chains_parse_to_the_right_answers(labels):
    from mssr_cli.rewards.functions import accuracy, format

    ds = load_digit_sum_split("train", with_chains=True)
    assert ds.column_names == ["prompt", "image", "answer", "id", "completion"]
    for ex, completion, answer in zip(compose_examples("train"), ds["completion"], ds["answer"], strict=True):
        digits, boxed = parse_chain(completion)
        assert digits == [int(labels[r]) for r in ex.rows] and str(boxed) == answer == str(sum(digits))
    sample = [[{"role": "assistant", "content": c}] for c in ds["completion"][:50]]
    assert accuracy(sample, answer=ds["answer"][:50]) == [1.0] * 50
    assert format(sample) == [1.0] * 50
    assert chain([3, 5, 2]) == "<think>3+5+2=10</think> \\boxed{10}"
    assert parse_chain("<think>3+5=9</think> \\boxed{9}") == ([3, 5], 9)  # parses what is written, right or not
    assert parse_chain("\\boxed{10}") is None


def test_config_composes_with_the_task_settings():
    from mssr_cli.config.compose import compose, steps_layout

    base = compose([])
    assert (base.data.name, list(base.reward.functions), base.train.max_completion_length) == ("digits", ["accuracy"], 12)
    for overrides in (["data=digit_sum"], ["experiment=toy_reasoning"]):
        cfg = compose(overrides)
        assert (cfg.data.name, cfg.model.preset) == ("digit_sum", "tiny"), overrides
        assert list(cfg.reward.functions) == ["accuracy", "format"] and list(cfg.reward.weights) == [1.0, 0.0]
        assert cfg.train.max_completion_length == cfg.train.val_max_new_tokens == 32
        assert cfg.model.warm_start.target_accuracy == 0.3
    assert compose(["data=digit_sum", "train.max_completion_length=40"]).train.max_completion_length == 40  # still wins
    rollouts = set()
    for variant in ("none", "no_shaping", "grpo"):  # what `mssr ablate experiment=toy_reasoning` runs
        cfg = compose(["experiment=toy_reasoning", f"ablation={variant}"])
        assert cfg.data.name == "digit_sum" and cfg.train.eval_every == 25
        rollouts.add(cfg.train.rollouts_per_step)
        assert steps_layout(cfg)["prompts_per_step"] * cfg.algo.rollouts_per_prompt == cfg.train.rollouts_per_step
    assert len(rollouts) == 1  # equal rollouts per step
    assert compose(["experiment=toy_reasoning", "ablation=grpo"]).algo.rollouts_per_prompt == 8
    real = compose(["model=qwen25vl-3b", "data=digit_sum"])  # the tiny task settings stay with the tiny model
    assert real.train.max_completion_length == 4096


def test_the_tiny_model_for_digit_sum_has_its_own_tokenizer_bounds_and_cache_key():
    from mssr_cli.config.compose import compose
    from mssr_cli.models.loading import tiny_cache_path
    from mssr_cli.models.tiny import build_processor, build_tokenizer
    from mssr_cli.models.warm_start import completion_batch

    digits_cfg, sum_cfg = compose([]), compose(["data=digit_sum"])
    assert tiny_cache_path(digits_cfg.model, digits_cfg.data).name == "tiny-qwen2vl-v1-s0-wsall-t0.25-c8-lr0.002-img56"
    assert tiny_cache_path(sum_cfg.model, sum_cfg.data).name.endswith("-digit_sum")
    tokenizer = build_tokenizer("digit_sum")
    longest = max(len(tokenizer.encode(chain(d), add_special_tokens=False)) for d in ([9, 9, 9, 9], [8, 9, 7, 9], [1, 2, 3, 4]))
    assert longest + 1 <= sum_cfg.train.max_completion_length  # + end of turn: a chain is never cut off
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("<think>7+9=16</think>", add_special_tokens=False)]
    assert pieces[3:8] == ["7", "+", "9", "=", "1"] and pieces[8] == "6"  # digit by digit: a sum takes its digits' tokens
    processor = build_processor(tokenizer, *pixel_bounds(56))
    image = load_digit_sum_split("validation", limit=1)[0]["image"]
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 16]]  # kept as drawn: 4 x 16 patches of 14 px, merged 2x2 -> 4 tokens a digit slot
    batch = completion_batch(processor, load_digit_sum_split("train", limit=3, with_chains=True)[:3])
    for row, target in enumerate(load_digit_sum_split("train", limit=3, with_chains=True)["completion"]):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tokenizer.decode(labelled) == target + "<|im_end|>"


@pytest.mark.slow
def test_a_short_rl_run_on_digit_sum(tmp_path):
    """Two RL steps through TRL on the task (the unwarmed tiny model: the build takes seconds): the 4-slot
    images and the chains go through, the format reward is logged and paid nothing."""
    import json

    from mssr_cli.config.compose import compose
    from mssr_cli.training.runner import run_training

    overrides = ["data=digit_sum", "model.warm_start.enabled=false", "train.max_steps=2", "train.rollouts_per_step=8",
                 "train.eval_every=2", "data.train_limit=16", "data.val_limit=8", "train.save_every=0",
                 "logging.progress=false", "logging.wandb=disabled"]
    summary = run_training(compose(overrides), overrides, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2] and summary["data"] == "digit_sum"
    for m in lines[1:]:
        assert m["train/reward"] == pytest.approx(m["train/reward/accuracy"])  # format weighs 0
        assert 0.0 <= m["train/reward/format"] <= 1.0 and 0 < m["train/response_length"] <= 32
