"""CPU threading chosen on purpose, before torch loads.

On 2 cores, OpenMP's default busy-waiting made torch 20-40x slower whenever another process
took a core (a probe on this task): passive waiting gives the core back instead of spinning.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def configure_cpu_threads(num_threads: int | None) -> int:
    """Set OpenMP's wait policy and torch's thread counts; returns the intra-op thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch first loads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings, no extra threads
    import torch

    n = num_threads or available_cores()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # one model, no parallel ops to overlap
    except RuntimeError:  # already set once in this process (tests run several trainings)
        pass
    return n
