"""Rollouts and the tracker warm start sample at the training settings only, whatever the checkpoint says.

The checkpoint here carries a hostile ``generation_config`` (Qwen2.5-VL-Instruct ships top_k=1,
top_p=0.001 and repetition_penalty=1.05; this one adds min-p, typical-p and an n-gram ban). Every
``generate`` call is spied on for the logits processors it builds: only temperature and top-p, at
the configured values, may shape the sampling distribution (the reference samples with vLLM at
temperature 1.0, top-p 1.0, no top-k, no repetition penalty).
"""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import GenerationConfig
from transformers.generation import utils as generation_utils

from mssr_cli.config.compose import compose

HOSTILE = {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.01, "repetition_penalty": 1.3,
           "min_p": 0.5, "typical_p": 0.3, "no_repeat_ngram_size": 2, "epsilon_cutoff": 0.01}
# processors that may appear: the two configured knobs, and TRL's ban on sampling the image token
ALLOWED = {"TemperatureLogitsWarper", "TopPLogitsWarper", "SuppressTokensLogitsProcessor"}


@pytest.fixture
def processors_built(monkeypatch):
    """Per generate call: [(processor class name, its main value)]."""
    calls = []
    original = generation_utils.GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append([(type(p).__name__, getattr(p, "temperature", getattr(p, "top_p", None))) for p in out])
        return out

    monkeypatch.setattr(generation_utils.GenerationMixin, "_get_logits_processor", spy)
    return calls


@pytest.fixture
def hostile_model_dir(tmp_path, tiny_policy_path):
    folder = tmp_path / "hostile"
    shutil.copytree(tiny_policy_path, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **HOSTILE}))
    return folder


def _check(calls, temperature, top_p):
    assert calls, "generate never ran"
    for built in calls:
        names = {name for name, _ in built}
        assert names <= ALLOWED, f"sampling knobs not configured: {sorted(names - ALLOWED)}"
        values = dict(built)
        assert values.get("TemperatureLogitsWarper", 1.0) == pytest.approx(temperature)
        assert values.get("TopPLogitsWarper", 1.0) == pytest.approx(top_p)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_tracker_warm_start_samples_at_the_training_settings(hostile_model_dir, processors_built, temperature, top_p):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.training.tracker_warm_start import sample_outcomes

    model = AutoModelForImageTextToText.from_pretrained(hostile_model_dir)
    processor = AutoProcessor.from_pretrained(hostile_model_dir)
    assert model.generation_config.top_k == 1  # the hostile checkpoint really loaded
    rows = load_digits_split("train", 56, 300, limit=8)
    outcomes = sample_outcomes(model, processor, rows, 1, 8, 12, temperature, top_p)
    assert len(outcomes) == 8
    _check(processors_built, temperature, top_p)
    assert model.generation_config.top_k == 1 and model.generation_config.min_p == 0.5  # restored after


def test_trl_rollouts_sample_at_the_training_settings(hostile_model_dir, processors_built, tmp_path):
    from mssr_cli.training.runner import run_training

    overrides = [f"model.name_or_path={hostile_model_dir}", "train.max_steps=1", "train.rollouts_per_step=8",
                 "train.temperature=0.8", "train.top_p=0.95", "train.eval_every=0", "train.save_every=0",
                 "algo.tracker.warm_start=false", "data.train_limit=16", "logging.wandb=disabled",
                 "logging.progress=false"]
    run_training(compose(overrides), overrides, tmp_path / "run")
    _check(processors_built, 0.8, 0.95)
    assert any("SuppressTokensLogitsProcessor" in dict(c) for c in processors_built)  # TRL's own rollouts ran


def test_sampling_config_sets_every_knob_to_its_no_op():
    from mssr_cli.models.sampling import sampling_config

    config = sampling_config(12, 0.6, 0.9)
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (True, 0.6, 0.9, 0)
    assert (config.repetition_penalty, config.typical_p, config.no_repeat_ngram_size, config.min_p) == (1.0, 1.0, 0, None)
    greedy = sampling_config(12, 0.0)
    assert greedy.do_sample is False and isinstance(greedy, GenerationConfig)
