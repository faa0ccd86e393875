"""The KL to the reference policy that drives the value tracker's forgetting factor rho.

    k3_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1          (Schulman's k3, >= 0)
    KL(x_i) = sum_t mask_t k3_t / sum_t mask_t                             (token mean per rollout)
    KL_step = mean_i KL(x_i)                                               (over every rollout of the step)

Pure tensor functions, no TRL import. As the reference code (``compute_kl(..., "low_var_kl")``), the
log ratio is clamped to [-20, 20] before the exponential and k3 to [-10, 10] after it, so one
degenerate token cannot make the step's KL infinite. (TRL's KL *loss* has no clamps; see the README's
Fidelity table.)
"""

from __future__ import annotations

import torch

__all__ = ["k3_per_token", "rollout_kl"]

LOG_RATIO_CLAMP = 20.0  # the reference's clamp on log pi_ref - log pi
K3_CLAMP = 10.0  # the reference's clamp on k3


def k3_per_token(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi || pi_ref) per sampled token.

    Args:
        logps: [B, T] log pi(o_t | q, o_<t) of the sampled tokens (the policy that sampled them).
        ref_logps: [B, T] the same under the reference policy.

    Returns:
        [B, T] float32, in [0, 10] (0 where the two agree).
    """
    diff = (ref_logps.float() - logps.float()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    return (torch.exp(diff) - diff - 1).clamp(-K3_CLAMP, K3_CLAMP)  # [B, T]


def rollout_kl(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean k3 KL of each rollout (the reference: ``kl.sum() / mask.sum()`` per row).

    Args:
        logps, ref_logps: [B, T] as in ``k3_per_token``.
        mask: [B, T] 1 on real response tokens.

    Returns:
        [B] float32; a rollout with no response tokens gets 0.
    """
    m = mask.float()  # [B, T]
    return (k3_per_token(logps, ref_logps) * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # [B]
