"""What several training processes change (``launcher=ddp|zero2|zero3``): who writes, and shared generation.

- Global rank 0 (the first process of machine 0) alone writes the run folder, metrics.jsonl, W&B and the
  console; every rank computes the same values (the tracker sees the global batch), so nothing needs to
  be sent back to rank 0.
- Generation outside TRL's loop (validation, the tracker warm start) is split: each process
  answers a contiguous shard and every process receives all completions in row order, so every
  rank derives the same metrics and the same tracker state, and none waits at a collective the
  others skip.

The rank comes from the launcher's environment (torchrun and DeepSpeed set ``RANK``), so it is
known before torch.distributed starts (the run folder is opened before the trainer exists).
"""

from __future__ import annotations

import os

_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def process_rank() -> int:
    """This process's global rank (0 when training alone)."""
    return _first_int(_RANK_VARS, 0)


def world_size() -> int:
    """How many training processes the launcher started, over ALL machines (1 when training alone): the count
    every batch setting is divided by (``launcher.num_processes`` x ``launcher.num_machines``)."""
    return _first_int(_SIZE_VARS, 1)


def is_main_process() -> bool:
    return process_rank() == 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world) of the running process group; (0, 1) when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process (nothing to wait for when training alone)."""
    import torch.distributed as dist

    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast_from_main(value):
    """Rank 0's ``value`` (any picklable object) on every process. Under a launcher, torch.distributed must
    have started: before it, each rank would silently keep its own value (a resume where rank 1 starts afresh)."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        if world_size() > 1:
            raise RuntimeError(f"broadcast_from_main before torch.distributed started (WORLD_SIZE={world_size()})")
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_bounds(rows: int, rank: int, world: int) -> tuple[int, int, int]:
    """(start, stop, padded length) of ``rank``'s contiguous shard of ``rows``: shards are as even as
    ``ceil(rows / world)`` allows, and each is padded to that length so that every process runs
    the same number of generation batches (ZeRO-3's synced generation needs it)."""
    per = -(-rows // world)  # ceil
    start = min(rank * per, rows)
    return start, min(start + per, rows), per


def generate_across_processes(generate, dataset) -> list:
    """``generate(rows) -> list`` on this process's shard of ``dataset``; every process gets the
    results of all rows, in row order (a plain call when training alone).

    Must be called by every process (it ends in an all-gather)."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world == 1:
        return generate(dataset)
    start, stop, per = shard_bounds(len(dataset), rank, world)
    rows = list(range(start, stop))
    if per and len(rows) < per:  # repeat a row so every process runs the same batches; dropped below
        rows += [rows[-1] if rows else 0] * (per - len(rows))
    mine = generate(dataset.select(rows))[: stop - start] if per else []
    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    return [item for part in parts for item in part]
