"""Advantage estimators: GRPO's group baseline, the single-rollout (MVSR/MSSR) baseline, and the
reference code's own baselines RLOO and REINFORCE++.

Pure tensor functions, no TRL import. Equations are those of ALGORITHMS.md; the GRPO one
mirrors TRL 1.16's ``GRPOTrainer._generate_and_score_completions`` (``scale_rewards="group"``,
``multi_objective_aggregation="sum_then_normalize"``) operation for operation; RLOO and
REINFORCE++ follow the reference code (ruiiu/MSSR ``verl/trainer/core_algos.py``, read, not copied).
"""

from __future__ import annotations

import torch

__all__ = [
    "discounted_returns",
    "grpo_advantages",
    "outcome_token_rewards",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "single_rollout_advantages",
    "zero_std_group_fraction",
]

# TRL hard-codes this epsilon in the group normalisation; keep the default identical.
GRPO_EPS = 1e-4
# The reference's masked_whiten: added to the token count in its masked means and under the rsqrt.
WHITEN_EPS = 1e-8


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


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: leave-one-out group baseline (Ahmadian et al. 2024, arXiv 2402.14740, eq. 4).

        A_i = r_i - (sum_{j in group(i), j != i} r_j) / (G - 1)

    Groups are consecutive blocks of ``group_size`` rollouts (prompt-major, as ``grpo_advantages``).
    No normalisation, as the reference code. Equivalently A_i = G / (G - 1) * (r_i - mean_group(r)),
    so a group whose rewards are all equal gets advantage 0.

    A group of one has no other rollout to form a baseline: the reference asserts
    ``rollout.n > 1`` ("RLOO needs rollout.n > 1.") and so does this function (ValueError).

    Args:
        rewards: [B] scalar reward per rollout, B = num_prompts * group_size.
        group_size: G >= 2, rollouts per prompt.

    Returns:
        [B] float advantages, one per rollout (the same for every token of a response).

    Raises:
        ValueError: rewards not 1-D, B not divisible by ``group_size``, or ``group_size < 2``.
    """
    r = _as_float(rewards)  # [B]
    _check_groups(r, group_size)
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: RLOO needs at least 2 rollouts per prompt (the reference asserts it)")
    grouped = r.view(-1, group_size)  # [B/G, G]
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # [B/G, G], mean of the other G - 1
    return (grouped - others).reshape(-1)  # [B]


def _check_tokens(token_values: torch.Tensor, mask: torch.Tensor) -> None:
    if token_values.dim() != 2 or token_values.shape != mask.shape:
        raise ValueError(
            f"token values and mask must both be [B, T]; got {tuple(token_values.shape)} and {tuple(mask.shape)}"
        )


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outcome reward placed on each response's last valid token, 0 elsewhere (the reference's reward
    tensor: ``reward[i, length_i - 1] = score_i``; for a contiguous mask the last valid token is that one).

    Args:
        rewards: [B] scalar reward per rollout.
        mask: [B, T] 1 on response tokens; a fully masked row gets no reward anywhere.

    Returns:
        [B, T] float token rewards.
    """
    r = _as_float(rewards)  # [B]
    m = torch.as_tensor(mask).to(device=r.device) != 0  # [B, T]
    if r.dim() != 1 or m.dim() != 2 or m.size(0) != r.numel():
        raise ValueError(f"rewards must be [B] and mask [B, T]; got {tuple(r.shape)} and {tuple(m.shape)}")
    out = torch.zeros(m.shape, dtype=r.dtype, device=r.device)  # [B, T]
    if m.size(1) == 0:
        return out
    positions = torch.arange(m.size(1), device=r.device).expand_as(m)  # [B, T]
    last = torch.where(m, positions, -1).max(dim=1).values  # [B], -1: no response token
    rows = torch.nonzero(last >= 0).squeeze(1)  # [B'] rows with at least one response token
    out[rows, last[rows]] = r[rows]
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Per-token discounted returns, computed backwards and reset after each response's end.

        R_t = r_t + gamma * m_{t+1} * R_{t+1},   R_T = 0

    The factor m_{t+1} is the reference's reset ("running_return *= mask[:, t]" after step t): nothing
    from a masked position (padding after the end) reaches the tokens before it.

    Args:
        token_rewards: [B, T] reward per token.
        mask: [B, T] 1 on response tokens.
        gamma: discount factor (the reference: 1.0).

    Returns:
        [B, T] returns; at masked positions the value the recursion gives there (callers mask it).
    """
    r = _as_float(token_rewards)  # [B, T]
    m = torch.as_tensor(mask).to(device=r.device, dtype=r.dtype)  # [B, T]
    _check_tokens(r, m)
    returns = torch.zeros_like(r)  # [B, T]
    running = r.new_zeros(r.size(0))  # [B]
    for t in reversed(range(r.size(1))):
        running = r[:, t] + gamma * running  # [B]
        returns[:, t] = running
        running = running * m[:, t]  # reset: the token before a masked one starts afresh
    return returns


def reinforce_pp_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262): discounted token returns whitened over the whole batch.

        R_t = r_t + gamma * m_{t+1} * R_{t+1}                          (``discounted_returns``)
        mu  = sum(m R) / (sum(m) + 1e-8)
        var = sum(m (R - mu)^2) / (sum(m) + 1e-8) * n / (n - 1),   n = sum(m)   (unbiased; n <= 1: no correction)
        A_t = (R_t - mu) / sqrt(var + 1e-8) * m_t

    Mean and variance run over every valid token of the batch, so a long response weighs more;
    the epsilons are the reference's ``masked_whiten``. With outcome rewards on the last token
    (``outcome_token_rewards``) and gamma = 1, A_t is constant over a response's tokens.
    A batch whose returns are all equal gets advantage 0; a fully masked batch gets zeros.

    Args:
        token_rewards: [B, T] reward per token.
        mask: [B, T] 1 on response tokens (bool, int or float).
        gamma: discount factor (the reference: 1.0).

    Returns:
        [B, T] float advantages, 0 where ``mask`` is 0.
    """
    returns = discounted_returns(token_rewards, mask, gamma)  # [B, T]
    m = torch.as_tensor(mask).to(device=returns.device, dtype=returns.dtype)  # [B, T]
    n = m.sum()  # [], valid tokens of the batch
    mean = (returns * m).sum() / (n + WHITEN_EPS)  # []
    var = ((returns - mean) ** 2 * m).sum() / (n + WHITEN_EPS)  # [], biased
    if n > 1:
        var = var * n / (n - 1)  # [], Bessel over tokens, as the reference's masked_var
    return (returns - mean) * torch.rsqrt(var + WHITEN_EPS) * m  # [B, T]
