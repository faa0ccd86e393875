"""Metric names: TRL's log keys renamed into mssr's documented namespaces (README: Metrics)."""

from __future__ import annotations

import re

# TRL / transformers log key -> mssr metric name
TRL_TO_MSSR = {
    "reward": "train/reward",
    "reward_std": "train/reward_std",
    "rewards/accuracy/mean": "train/accuracy",
    "completions/mean_length": "train/response_length",
    "completions/clipped_ratio": "train/truncated_frac",
    "loss": "train/loss",
    "learning_rate": "train/lr",
    "entropy": "collapse/entropy",
    "kl": "collapse/kl_ref",
    "clip_ratio/region_mean": "collapse/clip_frac",
    "clip_ratio/low_mean": "collapse/clip_frac_low",
    "clip_ratio/high_mean": "collapse/clip_frac_high",
    "grad_norm": "collapse/grad_norm",
}

REWARD_MEAN = re.compile(r"rewards/(.+)/mean")  # TRL: rewards/<function name>/mean

# Metrics the seam logs under their mssr names already (TRL passes them through its log).
MSSR_NAMESPACES = ("collapse/", "tracker/", "grpo/", "train/")

ENTROPY_BASELINE_STEPS = 5  # collapse/entropy_ratio divides by the mean entropy of the first steps


def rename_trl_logs(logs: dict) -> dict[str, float]:
    """Keep the TRL metrics mssr documents, under mssr's names, and the seam's own; drop the rest."""
    out = {}
    for trl_key, name in TRL_TO_MSSR.items():
        value = logs.get(trl_key)
        if isinstance(value, (int, float)):
            out[name] = float(value)
    for key, value in logs.items():
        name = REWARD_MEAN.fullmatch(key)  # each reward function's batch mean
        if name and isinstance(value, (int, float)):
            out[f"train/reward/{name.group(1)}"] = float(value)
        if key.startswith(MSSR_NAMESPACES) and isinstance(value, (int, float)):
            out[key] = float(value)
    return out


class EntropyRatio:
    """``collapse/entropy_ratio``: entropy over the mean entropy of the first few logged steps."""

    def __init__(self, baseline_steps: int = ENTROPY_BASELINE_STEPS):
        self.baseline_steps = baseline_steps
        self.first: list[float] = []

    def __call__(self, entropy: float) -> float:
        if len(self.first) < self.baseline_steps:
            self.first.append(entropy)
        base = sum(self.first) / len(self.first)
        return entropy / base if base > 0 else float("nan")

    def state_dict(self) -> dict:
        return {"first": list(self.first)}

    def load_state_dict(self, state: dict) -> None:
        self.first = list(state.get("first", []))
