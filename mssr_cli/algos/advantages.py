"""Advantage estimators: GRPO's group baseline and the single-rollout (MVSR/MSSR) baseline.

Pure tensor functions, no TRL import. Equations are those of ALGORITHMS.md; the GRPO one
mirrors TRL 1.16's ``GRPOTrainer._generate_and_score_completions`` (``scale_rewards="group"``,
``multi_objective_aggregation="sum_then_normalize"``) operation for operation.
"""

from __future__ import annotations

import torch

__all__ = ["grpo_advantages", "single_rollout_advantages", "zero_std_group_fraction"]

# TRL hard-codes this epsilon in the group normalisation; keep the default identical.
GRPO_EPS = 1e-4


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """The tensor itself if already floating point, else a float32 copy."""
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.float()


def _check_groups(rewards: torch.Tensor, group_size: int) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"batch of {rewards.numel()} rewards is not divisible by group_size={group_size}: "
            "GRPO needs whole groups of rollouts (prompt-major, a prompt's rollouts adjacent)"
        )


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Bessel-corrected std ignoring NaNs, as ``trl.trainer.utils.nanstd`` (same op order).

    x: [N, G] -> [N]. A row with fewer than two non-NaN values gives NaN.
    """
    mean = torch.nanmean(x, dim=dim, keepdim=True)  # [N, 1]
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)  # [N, 1]
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)  # [N, 1]
    correction = count / (count - 1)  # [N, 1]
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance = variance * correction  # [N, 1], unbiased (n - 1) like torch's default .std()
    return torch.sqrt(variance).squeeze(dim)  # [N]


def _group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-rollout copy of its group's std, TRL's ``std_rewards``: [B] -> [B]."""
    if group_size == 1:
        # TRL: "doesn't occur during training": std is taken as 0, so advantages are 0.
        return torch.zeros_like(rewards)  # [B]
    std = _nanstd(rewards.view(-1, group_size), dim=1)  # [B/G]
    return std.repeat_interleave(group_size, dim=0)  # [B]


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = GRPO_EPS) -> torch.Tensor:
    """GRPO group-normalised advantages (GRPO, DeepSeekMath outcome supervision).

        A_i = (r_i - mean_group(r)) / (std_group(r) + eps)

    Groups are consecutive blocks of ``group_size`` rollouts (TRL's prompt-major layout).
    ``std_group`` is the unbiased (Bessel, n - 1) standard deviation, exactly as TRL 1.16
    (``nanstd`` with ``scale_rewards="group"``); ``eps`` is added to the std, not under the
    root. As in TRL, NaN rewards (unscorable completions) are left out of their group's
    mean/std and get advantage 0, and ``group_size == 1`` gives all-zero advantages.
    A group whose rewards are all equal gets advantage 0 (see ``zero_std_group_fraction``).

    Args:
        rewards: [B] scalar reward per rollout, B = num_prompts * group_size.
        group_size: G, rollouts per prompt.
        eps: added to the group std (TRL: 1e-4).

    Returns:
        [B] float advantages, one per rollout (the same for every token of a response).

    Raises:
        ValueError: if B is not divisible by ``group_size`` or rewards is not 1-D.
    """
    r = _as_float(rewards)  # [B]
    _check_groups(r, group_size)
    grouped = r.view(-1, group_size)  # [B/G, G]
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group_size, dim=0)  # [B]
    std = _group_std(r, group_size)  # [B]
    advantages = (r - mean) / (std + eps)  # [B]
    return torch.nan_to_num(advantages, nan=0.0)  # [B], unscorable rollouts carry no signal


def zero_std_group_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rewards are all equal ("wasted" groups with zero advantage).

    Counted as TRL's ``frac_reward_zero_std``: a group is wasted when its std is close to 0
    (``torch.isclose``, atol 1e-8). With ``group_size == 1`` every group is wasted (1.0).

    Args:
        rewards: [B] rewards, prompt-major consecutive groups of ``group_size``.
        group_size: G.

    Returns:
        Fraction in [0, 1]; 0.0 for an empty batch.
    """
    r = _as_float(rewards)  # [B]
    _check_groups(r, group_size)
    if r.numel() == 0:
        return 0.0
    std = _group_std(r, group_size)  # [B], equal-size groups: rollout share == group share
    return torch.isclose(std, torch.zeros_like(std)).float().mean().item()


def single_rollout_advantages(
    rewards: torch.Tensor,
    baselines: torch.Tensor,
    normalize: bool = True,
    eps: float = 1e-6,
    *,
    zero_signal_guard: bool = False,
) -> torch.Tensor:
    """Single-rollout advantage, per-prompt baseline (MSSR paper sec. 4.1 "MVSR"; SPO's estimator).

        a_i = r_i - v(x_i)
        A_i = (a_i - mean(a)) / sqrt(max(var_pop(a), eps))     (global batch normalisation)

    ``var_pop`` is the population (biased, / B) variance, as the reference code's
    ``torch.var(unbiased=False)`` and ``rsqrt(clamp(var, min=eps))``. With B == 1 the
    reference code skips normalisation and returns ``a`` unchanged; so does this function.

    ``baselines`` must be the tracker's values from BEFORE this step's update.

    Args:
        rewards: [B] reward per rollout (one rollout per prompt).
        baselines: [B] v(x_i); moved to ``rewards``' device.
        normalize: apply the global batch normalisation (paper: True).
        eps: floor on the variance (paper: 1e-6).
        zero_signal_guard: off by default (fidelity). When normalising and every reward in
            the batch is equal, ``a`` is only the spread of the baselines, which normalisation
            would blow up to unit variance; the guard returns zeros instead. It acts only when
            normalisation applies (normalize and B > 1): un-normalised ``r - v`` keeps its size.

    Returns:
        [B] float advantages; broadcast to every token by the caller.
    """
    r = _as_float(rewards)  # [B]
    v = _as_float(baselines).to(device=r.device, dtype=r.dtype)  # [B]
    if r.shape != v.shape or r.dim() != 1:
        raise ValueError(
            f"rewards and baselines must both be [B]; got {tuple(r.shape)} and {tuple(v.shape)}"
        )
    a = r - v  # [B]
    if not normalize or a.numel() <= 1:
        return a  # [B], reference quirk: no normalisation for a batch of one
    if zero_signal_guard and bool((r.max() == r.min()).item()):
        return torch.zeros_like(a)  # [B], no reward spread: no learning signal
    mean = a.mean()  # []
    var = a.var(unbiased=False)  # [], population variance
    return (a - mean) * torch.rsqrt(torch.clamp(var, min=eps))  # [B]
