"""Advantage estimators by name: the seam calls ``ESTIMATORS[algo.estimator](algo)`` and nothing else.

Each estimator turns one RL step's rewards (the global batch, every process) into per-rollout
(or per-token) advantages with the pure functions of ``mssr_cli.algos`` and reports its own metrics. The
trainer never special-cases an estimator by name (STYLE.md: avoid verl's one flaw).

Protocol:
    needs_kl, needs_prompt_kl                      # whether finish_step reads the step's KL (per prompt)
    needs_token_mask                               # whether advantages() reads the rollouts' response mask
    advantages(ids, rewards, mask) -> (A, metrics) # once per RL step, before the loss; A is [B] (one value per
                                                   # rollout) or [B, T] (per token, 0 where mask is 0)
    finish_step(kl, prompt_kl)                     # the step's KL to the reference, once per RL step
    state_dict() / load_state_dict(d)              # JSON-serialisable training state
"""

from __future__ import annotations

import torch

from mssr_cli.algos.advantages import grpo_advantages, single_rollout_advantages, zero_std_group_fraction
from mssr_cli.algos.advantages import discounted_returns, outcome_token_rewards, reinforce_pp_advantages, rloo_advantages
from mssr_cli.algos.value_tracker import BetaValueTracker


class StatelessEstimator:
    """An estimator without a value tracker: no KL to read, nothing to save."""

    needs_kl = False  # no tracker: the seam measures no KL for it
    needs_prompt_kl = False  # the seam gathers per-rollout KL only for estimators that read it
    needs_token_mask = False  # the seam gathers every process's response mask only for estimators that read it

    def finish_step(self, kl: float | None, prompt_kl: torch.Tensor | None = None) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class GroupEstimator(StatelessEstimator):
    """GRPO: A_i = (r_i - mean_group r) / (std_group r + eps), groups of G adjacent rollouts."""

    def __init__(self, algo):
        self.group_size = int(algo.rollouts_per_prompt)
        self.eps = float(algo.grpo_eps)

    def advantages(self, ids: list, rewards: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        adv = grpo_advantages(rewards, self.group_size, eps=self.eps)  # [B]
        groups = rewards.view(-1, self.group_size)  # [B / G, G]
        raw = rewards - groups.mean(dim=1).repeat_interleave(self.group_size)  # [B], before scaling
        return adv, {
            "collapse/adv_raw_abs_mean": raw.abs().mean().item(),
            "grpo/zero_std_frac": zero_std_group_fraction(rewards, self.group_size),
        }


class LeaveOneOutEstimator(StatelessEstimator):
    """RLOO: A_i = r_i - mean of the other G - 1 rewards of its group; not normalised (the reference)."""

    def __init__(self, algo):
        self.group_size = int(algo.rollouts_per_prompt)

    def advantages(self, ids: list, rewards: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        adv = rloo_advantages(rewards, self.group_size)  # [B]
        return adv, {
            "collapse/adv_raw_abs_mean": adv.abs().mean().item(),  # no normalisation: raw is what trains
            "grpo/zero_std_frac": zero_std_group_fraction(rewards, self.group_size),  # equal rewards: A = 0 too
        }


class ReinforcePlusPlusEstimator(StatelessEstimator):
    """REINFORCE++: the outcome reward on each response's last token, discounted returns, whitened over
    every valid token of the step; per-token advantages [B, T] (constant over a response when gamma = 1)."""

    needs_token_mask = True  # the returns and the whitening run over the tokens of every rollout of the step

    def __init__(self, algo):
        self.gamma = float(algo.gamma)

    def advantages(self, ids: list, rewards: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        if mask is None:
            raise ValueError("REINFORCE++ needs the response mask [B, T] of every rollout of the step")
        token_rewards = outcome_token_rewards(rewards, mask)  # [B, T]
        adv = reinforce_pp_advantages(token_rewards, mask, self.gamma)  # [B, T], 0 off the responses
        valid = mask.to(adv.dtype)  # [B, T]
        returns = discounted_returns(token_rewards, mask, self.gamma)  # [B, T], before whitening
        return adv, {"collapse/adv_raw_abs_mean": ((returns.abs() * valid).sum() / valid.sum().clamp(min=1)).item()}


class SingleRolloutEstimator:
    """MVSR/MSSR: a = r - v(x) with v from the Beta tracker before this step's update, then
    batch-normalised; the tracker is updated once the step's KL to the reference is known."""

    def __init__(self, algo):
        t = algo.tracker
        self.tracker = BetaValueTracker(
            rho_min=t.rho_min, rho_max=t.rho_max, target_kl=t.target_kl, kl_window=t.kl_window,
            v_init=t.v_init, schedule=t.schedule, d_half=t.d_half,
        )
        self.needs_kl = True  # rho follows the step's KL to the reference
        self.needs_token_mask = False  # one advantage per rollout
        self.needs_prompt_kl = t.schedule == "per_prompt"  # SPO's rho(x) reads each prompt's KL
        self.normalize = bool(algo.normalize)
        self.zero_signal_guard = bool(algo.zero_signal_guard)
        self.pending: tuple[list, torch.Tensor] | None = None  # (ids, rewards) awaiting the step's KL
        self.last_prompt_kl: dict = {}  # per_prompt schedule: each prompt's KL to the reference at its last visit

    def advantages(self, ids: list, rewards: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        values = self.tracker.values(ids).to(rewards)  # [B], before this step's update
        adv = single_rollout_advantages(
            rewards, values, normalize=self.normalize, zero_signal_guard=self.zero_signal_guard
        )  # [B]
        self.pending = (list(ids), rewards.detach().cpu())
        return adv, {
            "collapse/adv_raw_abs_mean": (rewards - values).abs().mean().item(),
            "tracker/value_mean": values.mean().item(),
        }

    def finish_step(self, kl: float | None, prompt_kl: torch.Tensor | None = None) -> dict[str, float]:
        """Apply the pending update: the step's KL joins the window, then rho, then alpha/beta."""
        if self.pending is None:
            return {}
        ids, rewards = self.pending
        self.pending = None
        if self.tracker.schedule == "per_prompt":
            rho = self.tracker.update(ids, rewards, kl=kl, prompt_kl=self._prompt_drift(ids, prompt_kl))
        else:
            rho = self.tracker.update(ids, rewards, kl=kl)
        return {"tracker/rho": float(rho), "tracker/prompts": float(self.tracker.num_prompts)}

    def _prompt_drift(self, ids: list, prompt_kl: torch.Tensor | None) -> torch.Tensor | None:
        """SPO's D(x), the KL between the policy that last answered x and the current one, needs the
        old policy; as a free proxy use |KL_ref(x) now - KL_ref(x) at x's last visit|. A first visit
        gives NaN, which the tracker maps to rho_max as the reference code does for unseen prompts."""
        if prompt_kl is None:
            return None
        drift = torch.full((len(ids),), float("nan"))  # [B]
        for i, (key, now) in enumerate(zip(ids, prompt_kl.tolist(), strict=True)):
            before = self.last_prompt_kl.get(str(key))
            if before is not None and now == now:  # now == now: not NaN
                drift[i] = abs(now - before)
            if now == now:
                self.last_prompt_kl[str(key)] = now
        return drift

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), "last_prompt_kl": dict(self.last_prompt_kl)}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.last_prompt_kl = dict(state.get("last_prompt_kl", {}))


ESTIMATORS = {"grpo": GroupEstimator, "single_rollout": SingleRolloutEstimator, "rloo": LeaveOneOutEstimator,
              "reinforce_pp": ReinforcePlusPlusEstimator}


def build_estimator(algo):
    """The estimator named by ``algo.estimator``; an unknown name lists the valid ones."""
    try:
        return ESTIMATORS[algo.estimator](algo)
    except KeyError:
        raise ValueError(
            f"algo.estimator={algo.estimator}: unknown estimator; valid choices: {', '.join(ESTIMATORS)}"
        ) from None
