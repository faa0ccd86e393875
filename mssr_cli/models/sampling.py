"""Sampling exactly as configured: no knob inherited from a checkpoint's ``generation_config``.

transformers 5 fills every generation setting a caller leaves unset from the model's
``generation_config`` (Qwen2.5-VL-Instruct ships top_k=1, top_p=0.001, repetition_penalty=1.05),
then from global defaults (top_k=50). The reference code samples rollouts, its tracker warm start
and validation with vLLM at the training settings only: temperature, top-p, no top-k, no min-p,
no repetition penalty. Everything that generates here goes through these two helpers.
"""

from __future__ import annotations

import contextlib

# The model config keys a neutral generation config keeps: which tokens end, pad and start a sequence.
TOKEN_KEYS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")


def sampling_config(max_new_tokens: int, temperature: float, top_p: float = 1.0, suppress: list[int] | None = None):
    """A ``GenerationConfig`` that samples at ``temperature`` and ``top_p`` and nothing else
    (greedy when ``temperature`` is 0); every filter and penalty is set to its no-op value.
    ``suppress``: token ids never generated (e.g. the image placeholder: ``train.block_image_token``)."""
    from transformers import GenerationConfig

    # penalties act in greedy decoding too; the sampling filters only when sampling (set for greedy,
    # transformers warns that they are ignored)
    no_ops = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, num_beams=1)
    if suppress:
        no_ops["suppress_tokens"] = list(suppress)
    if temperature <= 0:
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, **no_ops)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,  # 0: no top-k filter (None would fall back to the checkpoint's, then to 50)
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        **no_ops,
    )


def _base_models(model) -> list:
    """The model and, under PEFT, the wrapped transformers model: each may hold a generation_config."""
    found = [model]
    base = getattr(model, "get_base_model", None)
    if callable(base):
        found.append(base())
    return [m for m in found if getattr(m, "generation_config", None) is not None]


@contextlib.contextmanager
def neutral_generation_config(model):
    """Within the block, ``model.generation_config`` holds only the special token ids, so nothing a
    checkpoint sets (min_p, top_k, penalties, ...) can fill a setting the caller left unset."""
    from transformers import GenerationConfig

    saved = [(m, m.generation_config) for m in _base_models(model)]
    try:
        for m, original in saved:
            kept = {k: getattr(original, k, None) for k in TOKEN_KEYS if getattr(original, k, None) is not None}
            m.generation_config = GenerationConfig(**kept)
        yield model
    finally:
        for m, original in saved:
            m.generation_config = original
