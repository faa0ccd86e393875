"""Pure tensor math of the algorithms (GRPO, MVSR, MSSR; the baselines RLOO, REINFORCE++); no TRL or transformers import.

See ALGORITHMS.md for the equations; each lives in exactly one function here.
"""

from mssr_cli.algos.advantages import (
    discounted_returns,
    grpo_advantages,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
    single_rollout_advantages,
    zero_std_group_fraction,
)
from mssr_cli.algos.kl import k3_per_token, rollout_kl
from mssr_cli.algos.shaping import (
    entropy_shaping_term,
    sampled_token_entropy,
    shaping_cap_fraction,
)
from mssr_cli.algos.value_tracker import SCHEDULES, BetaValueTracker

__all__ = [
    "SCHEDULES",
    "BetaValueTracker",
    "discounted_returns",
    "entropy_shaping_term",
    "grpo_advantages",
    "k3_per_token",
    "outcome_token_rewards",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "rollout_kl",
    "sampled_token_entropy",
    "shaping_cap_fraction",
    "single_rollout_advantages",
    "zero_std_group_fraction",
]
