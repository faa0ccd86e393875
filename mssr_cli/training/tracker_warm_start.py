"""The value tracker's warm start: n0 rollouts of every training prompt before the first step.

ALGORITHMS.md (MVSR): v0(x) = the mean outcome of n0 rollouts (paper: n0 = 1), from which
alpha0 = N0 v0 and beta0 = N0 (1 - v0). It costs one pass of generation over the training set,
so it is optional (``algo.tracker.warm_start``). Several processes each sample a shard and then
share the outcomes, so every rank seeds the same tracker.
"""

from __future__ import annotations


def sample_outcomes(model, processor, dataset, rollouts: int, batch_size: int, max_new_tokens: int,
                    temperature: float, top_p: float, accelerator=None, progress=None) -> dict:
    """{prompt id: [0/1 outcome of each of ``rollouts`` sampled completions]} for every row."""
    from accelerate.utils import gather_object

    from mssr_cli.rewards import accuracy_reward
    from mssr_cli.training.validation import generate_answers

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True) if world > 1 else dataset
    task = progress.add_task("tracker warm start", total=rollouts * len(shard)) if progress is not None else None
    outcomes: dict = {}
    for _ in range(rollouts):
        completions = generate_answers(
            model, processor, shard, batch_size, max_new_tokens, temperature=max(temperature, 1e-5), top_p=top_p,
            on_batch=(lambda n: progress.advance(task, n)) if task is not None else None,
        )
        for row_id, answer, completion in zip(shard["id"], shard["answer"], completions, strict=True):
            outcomes.setdefault(row_id, []).append(int(accuracy_reward(completion, answer) > 0.5))
    if world > 1:
        merged: dict = {}
        for part in gather_object([outcomes]):
            merged.update(part)
        outcomes = merged
    if task is not None:
        progress.remove_task(task)
    return outcomes
