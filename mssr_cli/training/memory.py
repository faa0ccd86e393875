"""A rough estimate of GPU memory per device for a run, before anything is downloaded.

The terms (GB = 1e9 bytes), for P parameters of which T train, w bytes per weight, N processes:

- weights ``P w`` (ZeRO-3 shards them: / N);
- gradients ``T w`` (ZeRO-2 and ZeRO-3 shard them);
- AdamW state: two moments in the weights' dtype, ``2 T w``, without DeepSpeed; DeepSpeed
  keeps an fp32 master copy and fp32 moments, ``12 T``, sharded by ZeRO-2 and ZeRO-3;
- the frozen reference policy for the KL term, ``P w`` (none with LoRA: TRL disables the
  adapters instead; ZeRO-3 shards it);
- activations of one micro-batch of the longest rollout (prompt + image tokens + completion,
  S tokens): with gradient checkpointing each layer keeps its input (``L S h w``) and one
  layer is live at a time (about ``20 S h w``); without it every layer keeps about ``20 S h w``;
- logits of the completion tokens (``C V``), held in bf16 and once more in fp32 while
  log-probabilities and entropies are taken: ``6 C V`` per rollout in the micro-batch.

vLLM colocate takes its own share of the GPU on top (``train.vllm_gpu_memory_utilization``).
Not counted: the CUDA context (about 0.5-1 GB), allocator fragmentation, and DeepSpeed buffers.
It is an order of magnitude for choosing a launcher, not a guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
LAUNCHERS = ("none", "ddp", "zero2", "zero3")


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    reference: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations + self.logits

    def rows(self) -> list[tuple[str, float]]:
        """(term, GB) pairs, total last."""
        names = ["weights", "gradients", "optimizer", "reference", "activations", "logits"]
        return [(n, getattr(self, n) / GB) for n in names] + [("total", self.total / GB)]


def estimate_memory(
    *,
    params: float,
    trainable: float,
    weight_bytes: int,
    launcher: str,
    processes: int,
    reference_model: bool,
    hidden: int,
    layers: int,
    vocab: int,
    micro_batch: int,
    sequence: int,
    completion: int,
    gradient_checkpointing: bool,
) -> MemoryEstimate:
    """Bytes per device for one training process (see the module docstring for each term)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher={launcher!r}: valid choices: {', '.join(LAUNCHERS)}")
    n = max(processes, 1)
    shard_weights = n if launcher == "zero3" else 1
    shard_grads = n if launcher in ("zero2", "zero3") else 1
    if launcher in ("zero2", "zero3"):
        optimizer = 12 * trainable / n
    else:
        optimizer = 2 * trainable * weight_bytes
    live_layer = 20 * sequence * hidden * weight_bytes
    if gradient_checkpointing:
        activations = micro_batch * (layers * sequence * hidden * weight_bytes + live_layer)
    else:
        activations = micro_batch * layers * live_layer
    return MemoryEstimate(
        weights=params * weight_bytes / shard_weights,
        gradients=trainable * weight_bytes / shard_grads,
        optimizer=optimizer,
        reference=params * weight_bytes / shard_weights if reference_model else 0.0,
        activations=float(activations),
        logits=float(6 * micro_batch * completion * vocab),
    )
