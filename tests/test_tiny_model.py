"""The embedded tiny Qwen2-VL: real classes, reloads offline, follows the format after the warm start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_tokenizer_carries_qwen2vl_specials_and_template():
    from mssr_cli.models.chat_template import SPECIAL_TOKENS
    from mssr_cli.models.tiny import build_tokenizer

    tok = build_tokenizer()
    assert len(tok) < 512
    for special in SPECIAL_TOKENS:
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, special
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system" in text
    assert tok.decode(tok.encode("\\boxed{7}")) == "\\boxed{7}"


def test_built_model_reloads_offline_with_auto_classes(tiny_policy_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    folder = Path(tiny_policy_path)
    assert (folder / "config.json").exists() and (folder / "processor_config.json").exists()
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert isinstance(processor, Qwen2VLProcessor)
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 2e6
    text_cfg = json.loads((folder / "config.json").read_text())["text_config"]
    head_dim = text_cfg["hidden_size"] // text_cfg["num_attention_heads"]
    assert sum(text_cfg["rope_parameters"]["mrope_section"]) == head_dim // 2


@pytest.mark.trajectory
def test_warm_started_policy_follows_the_format_and_beats_chance(tiny_policy_path, base_cfg):
    from mssr_cli.data.registry import load_split
    from mssr_cli.models.loading import load_policy
    from mssr_cli.models.generation import greedy_accuracy

    model, processor = load_policy(base_cfg.model, base_cfg.data)
    metrics = greedy_accuracy(model, processor, load_split(base_cfg.data, "validation"), max_new_tokens=12)
    assert metrics["format_rate"] > 0.9
    assert 0.15 <= metrics["accuracy"] <= 0.5  # the range an instruct starting point sits in


def test_load_policy_rejects_a_bare_tokenizer_folder(tmp_path, base_cfg):
    from omegaconf import OmegaConf

    from mssr_cli.models.loading import load_policy
    from mssr_cli.models.tiny import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)  # no image processor: AutoProcessor returns a tokenizer
    model_cfg = OmegaConf.merge(base_cfg.model, {"name_or_path": str(tmp_path), "preset": "local"})
    with pytest.raises(RuntimeError, match="not a vision-language processor"):
        load_policy(model_cfg, base_cfg.data)


def test_real_preset_loading_path_on_a_local_copy(tiny_policy_path, base_cfg):
    """Real presets go through the same Auto* path; a local folder of the same schema loads with pixel bounds."""
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import compose
    from mssr_cli.models.loading import load_policy

    cfg = compose(["model=qwen25vl-3b", f"model.name_or_path={tiny_policy_path}", "model.dtype=float32"])
    model, processor = load_policy(cfg.model, cfg.data)
    assert processor.image_processor.size["longest_edge"] == cfg.model.max_pixels
    frozen = OmegaConf.merge(cfg.model, {"freeze_vision": True})
    model, _ = load_policy(frozen, cfg.data)
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())


def test_warm_start_labels_cover_exactly_the_completion(tiny_policy_path):
    from transformers import AutoProcessor

    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.models.warm_start import completion_batch

    processor = AutoProcessor.from_pretrained(tiny_policy_path)
    batch = completion_batch(processor, load_digits_split("train", limit=4)[:4])
    for row in range(4):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        text = processor.tokenizer.decode(labelled)
        assert text.startswith("\\boxed{") and text.endswith("}<|im_end|>"), text
        assert "assistant" not in text
