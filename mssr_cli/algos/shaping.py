"""Entropy-based advantage shaping, the MSSR method (from Cheng et al., arXiv 2506.14758).

    psi_t = min(alpha * H_t.detach(), |A_t| / kappa),    A'_t = A_t + psi_t    (psi_t >= 0)

Pure tensor functions, no TRL import. A high-entropy token's negative advantage shrinks by
at most |A_t| / kappa and its positive advantage grows by at most as much; with kappa > 1
the shaped advantage never changes sign. Low-entropy tokens are left (almost) alone.
"""

from __future__ import annotations

import torch

__all__ = ["entropy_shaping_term", "sampled_token_entropy", "shaping_cap_fraction"]


def _check_params(alpha: float, kappa: float) -> None:
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0 (psi is capped at |A| / kappa), got {kappa!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (psi must be non-negative), got {alpha!r}")


def _shaping_operands(
    advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, alpha: float, kappa: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two arms of the min and the boolean mask, broadcast to [B, T]."""
    _check_params(alpha, kappa)
    adv = torch.as_tensor(advantages).detach()  # [B] or [B, T]
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)  # [B, 1], one sequence-level advantage per response
    ent = torch.as_tensor(entropy).detach()  # [B, T]
    adv = adv.to(ent.device)
    valid = torch.as_tensor(mask, device=ent.device) != 0  # [B, T]
    entropy_arm = alpha * ent.clamp(min=0)  # [B, T], entropy is >= 0; guard round-off
    advantage_arm = adv.abs() / kappa  # [B, 1] or [B, T]
    entropy_arm, advantage_arm, valid = torch.broadcast_tensors(entropy_arm, advantage_arm, valid)
    return entropy_arm, advantage_arm, valid  # each [B, T]


def entropy_shaping_term(
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.4,
    kappa: float = 2.0,
) -> torch.Tensor:
    """Entropy shaping term psi (MSSR paper, advantage shaping; Cheng et al. 2025, psi(H_t)).

        psi_t = min(alpha * H_t.detach(), |A_t| / kappa),   zero where mask == 0

    The caller adds it to the advantage: A'_t = A_t + psi_t. psi carries no gradient
    (both operands are detached), so it only re-weights the policy-gradient term.

    Which entropy: the paper states the full-distribution entropy H(pi(.|q, o_<t)); the
    reference code (EasyR1/veRL fork, ``compute_token_entropy``) uses -p log p of the
    sampled token under the rollout policy (``old_log_probs``), see ``sampled_token_entropy``.
    This function takes whichever the caller computed.

    Args:
        advantages: [B] (broadcast to every token) or [B, T] normalised advantages A.
        entropy: [B, T] per-token entropy H (>= 0; negative round-off is clamped to 0).
        mask: [B, T] 1 for real response tokens, 0 for padding (bool, int or float).
        alpha: entropy coefficient (paper: 0.4), >= 0.
        kappa: cap divisor (paper: 2.0), > 0; kappa > 1 keeps sign(A + psi) == sign(A).

    Returns:
        psi: [B, T] float, >= 0, zero at masked positions.

    Raises:
        ValueError: kappa <= 0 or alpha < 0.
    """
    entropy_arm, advantage_arm, valid = _shaping_operands(advantages, entropy, mask, alpha, kappa)
    psi = torch.minimum(entropy_arm, advantage_arm)  # [B, T]
    psi = torch.where(valid, psi, torch.zeros_like(psi))  # [B, T], where (not *): NaN-safe padding
    return psi if psi.is_floating_point() else psi.float()


def shaping_cap_fraction(
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.4,
    kappa: float = 2.0,
) -> float:
    """Share of real tokens where the |A| / kappa cap binds in psi (metric collapse/).

    The cap binds at token t when alpha * H_t > |A_t| / kappa (strictly), i.e. psi equals
    the advantage arm rather than the entropy arm.

    Args:
        advantages: [B] or [B, T]; entropy: [B, T]; mask: [B, T]; alpha, kappa: as
            ``entropy_shaping_term``.

    Returns:
        Fraction in [0, 1] over positions with mask != 0; 0.0 when there are none.
    """
    entropy_arm, advantage_arm, valid = _shaping_operands(advantages, entropy, mask, alpha, kappa)
    n_valid = int(valid.sum().item())
    if n_valid == 0:
        return 0.0
    binds = (entropy_arm > advantage_arm) & valid  # [B, T]
    return int(binds.sum().item()) / n_valid


def sampled_token_entropy(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sampled-token entropy proxy, as the reference code's ``compute_token_entropy``.

        H_t ~= -p_t * log p_t,    p_t = exp(logprob of the sampled token o_t)

    A one-term approximation of the full entropy -sum_v pi(v) log pi(v) (the term of the
    token actually sampled). The reference code evaluates it on the rollout policy's log
    probabilities. Computed in at least float32; a logprob of -inf (p = 0) gives 0.

    Args:
        logprobs: [B, T] log pi(o_t | q, o_<t) of the sampled tokens.
        mask: [B, T] 1 for real response tokens, 0 for padding.

    Returns:
        [B, T] float, zero where mask == 0; values lie in [0, 1/e] for valid logprobs <= 0.
    """
    logprobs = torch.as_tensor(logprobs)
    lp = logprobs.to(torch.promote_types(logprobs.dtype, torch.float32))  # [B, T]
    p = lp.exp()  # [B, T]
    h = torch.where(p > 0, -p * lp, torch.zeros_like(lp))  # [B, T], 0 * -inf would be NaN
    valid = torch.as_tensor(mask, device=h.device) != 0  # [B, T]
    return torch.where(valid, h, torch.zeros_like(h))  # [B, T]
