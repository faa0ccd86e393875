"""Batched generation with the model's chat template, and validation accuracy (greedy by default).

Shared by training (validation, the tracker warm start), the tiny model's supervised warm start and
evaluation parity tests: it lives with the models, so none of those reaches into training/."""

from __future__ import annotations

from collections.abc import Iterator


def chat_texts(processor, prompts: list, with_generation_prompt: bool = True,
               image_counts: list[int] | None = None) -> list[str]:
    """Render conversational prompts with the model's own chat template, as TRL renders them in training
    (``prepare_multimodal_messages``: the row's image slots, then the text); ``image_counts``: images of
    each prompt (None: one each)."""
    from trl.data_utils import prepare_multimodal_messages

    counts = image_counts if image_counts is not None else [1] * len(prompts)
    return [
        processor.apply_chat_template(
            prepare_multimodal_messages(prompt, images=[None] * count),
            add_generation_prompt=with_generation_prompt,
            tokenize=False,
        )
        for prompt, count in zip(prompts, counts, strict=True)
    ]


def batches(dataset, batch_size: int) -> Iterator[dict]:
    for start in range(0, len(dataset), batch_size):
        yield dataset[start : start + batch_size]


def generate_answers(model, processor, dataset, batch_size: int = 64, max_new_tokens: int = 16,
                     temperature: float = 0.0, top_p: float = 1.0, on_batch=None,
                     block_image_token: bool = False) -> list[str]:
    """Completions (decoded, special tokens dropped) for every row, in order.

    Greedy when ``temperature`` is 0, else sampled at ``temperature`` and ``top_p`` with no other
    filter or penalty, whatever the checkpoint's generation_config says (``models.sampling``);
    ``block_image_token``: the model's image placeholder token is never generated (the reference's rollouts
    bias it by -100); ``on_batch(n)`` is called after each batch (progress bars)."""
    import torch

    from mssr_cli.data.columns import batch_images
    from mssr_cli.models.sampling import neutral_generation_config, sampling_config

    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        # exactly the given sampling settings: nothing from the checkpoint's generation_config
        # (the neutral config keeps the checkpoint's token ids, which generate fills in from it)
        with torch.inference_mode(), neutral_generation_config(model):
            suppress = [int(model.config.image_token_id)] if block_image_token else None
            config = sampling_config(max_new_tokens, temperature, top_p, suppress)
            for batch in batches(dataset, batch_size):
                images = batch_images(batch)  # [rows][images of the row], every image in order
                texts = chat_texts(processor, batch["prompt"], image_counts=[len(row) for row in images])
                inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
                inputs = inputs.to(model.device)
                generated = model.generate(**inputs, generation_config=config)
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                outputs += processor.batch_decode(new_tokens, skip_special_tokens=True)
                if on_batch is not None:
                    on_batch(len(texts))
    finally:
        model.train(was_training)
    return outputs


def greedy_accuracy(model, processor, dataset, batch_size: int = 64, max_new_tokens: int = 16,
                    temperature: float = 0.0, seed: int = 0, spread=None, top_p: float = 1.0,
                    block_image_token: bool = False, grader: str = "math_verify") -> dict[str, float]:
    """Validation metrics: ``accuracy`` (boxed answer right) and ``format_rate`` (a boxed answer at all).

    Greedy by default; with ``temperature`` > 0 (the paper validates at 0.6) answers are sampled at ``top_p``
    from a private generator seeded with ``seed``, so validating never shifts the training RNG
    (a resumed run, or one validated more often, then samples the same rollouts).
    ``spread(generate, dataset) -> completions``: how to share the work, e.g. training's
    ``generate_across_processes`` (every process answers a shard and all get every answer; then every
    process must call this). Passed in, so that models/ needs nothing from training/. ``grader``: reward.grader."""
    import torch

    from mssr_cli.rewards import accuracy_reward, extract_boxed
    def answer(rows):
        return generate_answers(model, processor, rows, batch_size, max_new_tokens, temperature=temperature, top_p=top_p,
                                block_image_token=block_image_token)

    devices = [model.device.index] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        completions = spread(answer, dataset) if spread is not None else answer(dataset)
    answers = dataset["answer"]
    correct = [accuracy_reward(c, a, grader=grader) for c, a in zip(completions, answers, strict=True)]
    formatted = [extract_boxed(c) is not None for c in completions]
    n = max(len(completions), 1)
    return {"accuracy": sum(correct) / n, "format_rate": sum(formatted) / n}
