"""Generation backends: answers for prompts with ``<image>`` placeholders and their images.

- ``hf`` (default): our own batched ``generate`` with the model's own processor and chat template,
  exactly the rendering training and validation use (a user turn: the images, then the text).
- ``vllm``: lm-eval's ``vllm-vlm`` model (GPU machines with the ``vllm`` extra), driven through
  lm-eval's own ``generate_until``; ``generate_lm_eval`` works with any lm-eval multimodal model
  (the tests run it with ``hf-multimodal``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from mssr_cli.evaluation.benchmarks import IMAGE_PLACEHOLDER
from mssr_cli.evaluation.errors import BackendUnavailableError

BACKENDS = ("hf", "vllm")


def chat_text(processor, prompt: str) -> str:
    """The model's chat rendering of one user turn; each ``<image>`` becomes an image slot in place."""
    content: list[dict] = []
    for i, part in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        if i:
            content.append({"type": "image"})
        if part:
            content.append({"type": "text", "text": part})
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def generate_hf(model, processor, prompts: list[str], images: list[list], *, batch_size: int = 16,
                max_new_tokens: int = 1024, temperature: float = 0.0, top_p: float = 1.0,
                on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Completions (special tokens dropped) in prompt order; greedy when ``temperature`` is 0.

    Prompts are batched longest first so that similar lengths share a batch (less padding)."""
    import torch

    if getattr(processor, "chat_template", None) is None:
        raise BackendUnavailableError("the model's processor has no chat template: evaluate an instruction-tuned model")
    texts = [chat_text(processor, p) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(0)  # sampled evaluations repeat
    outputs: list[str] = [""] * len(texts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                inputs = processor(
                    text=[texts[i] for i in rows], images=[images[i] for i in rows], padding=True, return_tensors="pt"
                ).to(model.device)
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
                decoded = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, text in zip(rows, decoded, strict=True):
                    outputs[i] = text
                if on_batch is not None:
                    on_batch(len(rows))
    finally:
        model.train(was_training)
    return outputs


def generate_lm_eval(lm, prompts: list[str], images: list[list], *, max_new_tokens: int = 1024,
                     temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
    """Completions from an lm-eval multimodal model (``vllm-vlm``, ``hf-multimodal``), chat-templated by it."""
    from lm_eval.api.instance import Instance

    gen_kwargs: dict = {"until": [], "max_gen_toks": max_new_tokens, "do_sample": temperature > 0, "temperature": temperature}
    if temperature > 0 and top_p < 1.0:
        gen_kwargs["top_p"] = top_p
    requests = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(lm.apply_chat_template([{"role": "user", "content": prompt}]), dict(gen_kwargs), {"visual": imgs}),
            idx=i,
        )
        for i, (prompt, imgs) in enumerate(zip(prompts, images, strict=True))
    ]
    return list(lm.generate_until(requests))


VLLM_PROMPT_TOKENS = 8192  # room for the prompt (text + its images' vision tokens) in vLLM's context


def vllm_model(model_path: str, max_new_tokens: int, max_images: int = 1):
    """lm-eval's ``vllm-vlm`` model, or a one-line error when vLLM is not installed.

    vLLM batches continuously: every prompt of a chunk goes in at once (``batch_size="auto"``);
    ``max_images``: the most images one prompt has (vLLM refuses a prompt with more)."""
    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailableError(
            "--backend vllm needs vLLM, which is not installed: pip install 'mssr-cli[vllm]' (GPU machines); "
            "--backend hf works everywhere"
        )
    from lm_eval.models.vllm_vlms import VLLM_VLM

    return VLLM_VLM(
        pretrained=model_path, batch_size="auto", max_gen_toks=max_new_tokens, max_images=max_images,
        max_model_len=VLLM_PROMPT_TOKENS + max_new_tokens,
    )


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        vllm_model("", 1)  # raises the not-installed message before anything heavy loads
