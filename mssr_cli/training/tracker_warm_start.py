"""The value tracker's warm start: n0 rollouts of every training prompt before the first step.

ALGORITHMS.md (MVSR): v0(x) = the mean outcome of n0 rollouts (paper: n0 = 1), from which
alpha0 = N0 v0 and beta0 = N0 (1 - v0). It costs one pass of generation over the training set,
so it is optional (``algo.tracker.warm_start``). Several processes each sample a shard and then
all receive every outcome (``distributed.generate_across_processes``), so every rank seeds the
same tracker.
"""

from __future__ import annotations


def sample_outcomes(model, processor, dataset, rollouts: int, batch_size: int, max_new_tokens: int,
                    temperature: float, top_p: float, progress=None, block_image_token: bool = False,
                    grader: str = "math_verify") -> dict:
    """{prompt id: [0/1 outcome of each of ``rollouts`` sampled completions]} for every row, the same
    on every process (under several processes, every process must call it); ``grader``: reward.grader."""
    from mssr_cli.rewards import accuracy_reward
    from mssr_cli.training.distributed import generate_across_processes, rank_and_world, shard_bounds
    from mssr_cli.models.generation import generate_answers

    rank, world = rank_and_world()
    shard_rows = shard_bounds(len(dataset), rank, world)[2] if world > 1 else len(dataset)
    task = progress.add_task("tracker warm start", total=rollouts * shard_rows) if progress is not None else None

    def answer(rows):
        return generate_answers(
            model, processor, rows, batch_size, max_new_tokens, temperature=max(temperature, 1e-5), top_p=top_p,
            on_batch=(lambda n: progress.advance(task, n)) if task is not None else None,
            block_image_token=block_image_token,
        )

    outcomes: dict = {}
    for _ in range(rollouts):
        completions = generate_across_processes(answer, dataset)  # [rows], in row order, on every process
        for row_id, answer_text, completion in zip(dataset["id"], dataset["answer"], completions, strict=True):
            outcomes.setdefault(row_id, []).append(int(accuracy_reward(completion, answer_text, grader=grader) > 0.5))
    if task is not None:
        progress.remove_task(task)
    return outcomes
