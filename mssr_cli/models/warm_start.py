"""Supervised warm start: teach the random tiny model the answer format, and a little of the task.

Real RL starts from an instruct model that already follows the format and is right some of the
time. The tiny model starts random, so we fine-tune it on the labelled training split until
greedy validation accuracy reaches a target (then stop: the jump from chance to well above it
comes at a seed-dependent step, so a fixed epoch count over- or under-shoots). The check runs
every ``check_every`` optimizer steps, a fixed number of rows rather than a share of an epoch.
Many rows seen a few times, rather than a few rows seen many times, give a policy that is wrong
most of the time but already looks at the image across the digits (256 rows reached 25% by
memorising 4 of the 10 digits, and RL from there was slow and seed-dependent).
"""

from __future__ import annotations

from dataclasses import dataclass

from mssr_cli.thresholds import at_least


@dataclass
class WarmStartResult:
    accuracy: float  # greedy accuracy on the check set when it stopped
    format_rate: float
    epochs: float  # epochs run (fractional: checks happen several times an epoch)
    reached_target: bool


def completion_batch(processor, batch: dict) -> dict:
    """Tokenised prompt + gold completion, with labels only on the completion tokens. The completion is
    the row's ``completion`` when the batch has that column (digit_sum's written-out chains), else the
    bare boxed answer.

    Shapes: input_ids, attention_mask, labels [B, L] (left padded); pixel_values [B*patches, D].
    """
    import torch

    from mssr_cli.data.columns import batch_images
    from mssr_cli.data.prompts import boxed
    from mssr_cli.models.generation import chat_texts

    images = batch_images(batch)  # [rows][images of the row]
    prompts = chat_texts(processor, batch["prompt"], image_counts=[len(row) for row in images])
    eos = processor.tokenizer.eos_token
    targets = batch["completion"] if "completion" in batch else [boxed(a) for a in batch["answer"]]
    completions = [target + eos for target in targets]
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    full = processor(images=images, text=texts, padding=True, return_tensors="pt")
    # The prompt ends with "assistant\n", a pre-token boundary, so the completion tokenises the same alone.
    completion_lengths = [len(ids) for ids in processor.tokenizer(completions, add_special_tokens=False)["input_ids"]]
    labels = torch.full_like(full["input_ids"], -100)
    for row, n in enumerate(completion_lengths):  # left padding: the completion is each row's last n tokens
        labels[row, -n:] = full["input_ids"][row, -n:]
    full["labels"] = labels
    return dict(full)


def warm_start(
    model,
    processor,
    train_set,
    check_set,
    *,
    target_accuracy: float,
    max_epochs: int,
    lr: float,
    batch_size: int,
    check_every: int,
    seed: int,
    progress=None,
    max_new_tokens: int = 16,
) -> WarmStartResult:
    """Fine-tune ``model`` in place on ``train_set`` until greedy accuracy on ``check_set`` >= target
    (answers of at most ``max_new_tokens``)."""
    import torch

    from mssr_cli.models.generation import greedy_accuracy

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = max(1, len(train_set) // batch_size)
    check_every = max(1, check_every)
    task = progress.add_task("warm start", total=max_epochs * steps_per_epoch) if progress else None
    metrics = {"accuracy": 0.0, "format_rate": 0.0}
    step = 0
    model.train()
    for epoch in range(max_epochs):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        shuffled = train_set.select(order)
        for i in range(steps_per_epoch):
            batch = completion_batch(processor, shuffled[i * batch_size : (i + 1) * batch_size])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if progress:
                progress.update(task, advance=1, description=f"warm start (loss {loss.item():.2f}, acc {metrics['accuracy']:.2f})")
            if step % check_every == 0:
                metrics = greedy_accuracy(model, processor, check_set, max_new_tokens=max_new_tokens)
                if at_least(metrics["accuracy"], target_accuracy):
                    if progress:
                        progress.update(task, total=step, completed=step, description=f"warm start (acc {metrics['accuracy']:.2f})")
                    model.eval()
                    return WarmStartResult(metrics["accuracy"], metrics["format_rate"], step / steps_per_epoch, True)
    model.eval()
    return WarmStartResult(metrics["accuracy"], metrics["format_rate"], step / steps_per_epoch, False)
