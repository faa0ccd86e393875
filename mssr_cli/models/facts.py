"""Sizes of the real-scale presets, for offline planning (``mssr train --dry-run``).

Read from each model's config.json and model card on the Hugging Face Hub (parameter counts are
the totals the cards state, vision tower included). Kept here so a dry run needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFacts:
    params: float  # all parameters, vision tower included
    vision_params: float  # the vision tower (ViT + merger)
    hidden: int  # language model hidden size
    intermediate: int  # language model MLP width
    layers: int  # language model decoder layers
    heads: int  # attention heads
    kv_heads: int  # key/value heads (grouped-query attention)
    vocab: int  # vocabulary (size of the logits)
    image_patch_pixels: int = 28 * 28  # one vision token per 28x28 px after the 2x2 merge

    def lora_params(self, r: int, targets: list[str]) -> int:
        """Trainable parameters of rank-``r`` LoRA on ``targets`` in every decoder layer: r (in + out) each."""
        kv = self.hidden // self.heads * self.kv_heads
        shapes = {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        per_layer = sum(r * (i + o) for name, (i, o) in shapes.items() if name in targets)
        return per_layer * self.layers


# Hub id -> facts (Qwen/*-Instruct config.json: hidden_size, intermediate_size, num_hidden_layers,
# num_attention_heads, num_key_value_heads, vocab_size).
MODEL_FACTS: dict[str, ModelFacts] = {
    "Qwen/Qwen2-VL-2B-Instruct": ModelFacts(2.21e9, 0.675e9, 1536, 8960, 28, 12, 2, 151936),
    "Qwen/Qwen2-VL-7B-Instruct": ModelFacts(8.29e9, 0.675e9, 3584, 18944, 28, 28, 4, 152064),
    "Qwen/Qwen2.5-VL-3B-Instruct": ModelFacts(3.75e9, 0.669e9, 2048, 11008, 36, 16, 2, 151936),
    "Qwen/Qwen2.5-VL-7B-Instruct": ModelFacts(8.29e9, 0.676e9, 3584, 18944, 28, 28, 4, 152064),
}
