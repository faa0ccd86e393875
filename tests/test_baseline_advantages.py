"""The reference code's baselines RLOO and REINFORCE++: hand-computed cases, an independent formula on random
batches (hypothesis), edge cases, and the estimators the seam calls."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mssr_cli.algos.advantages import (
    discounted_returns,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
)

# ---- RLOO --------------------------------------------------------------------------------------


def test_rloo_hand_computed():
    adv = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]), group_size=4)
    # group 1 (1, 0, 0, 0): sum 1; A_0 = 1 - (1 - 1) / 3 = 1; A_1..3 = 0 - (1 - 0) / 3 = -1/3
    # group 2 (1, 1, 0, 0): sum 2; A = 1 - (2 - 1) / 3 = 2/3 for the ones, 0 - 2/3 = -2/3 for the zeros
    torch.testing.assert_close(adv, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]))
    # G = 3, (0.2, 0.5, 0.8): baselines (0.5 + 0.8) / 2 = 0.65, 0.5, 0.35 -> A = (-0.45, 0, 0.45)
    # (GRPO-style r - mean would give (-0.3, 0, 0.3): the leave-one-out mean scales it by G / (G - 1) = 1.5)
    torch.testing.assert_close(rloo_advantages(torch.tensor([0.2, 0.5, 0.8]), 3), torch.tensor([-0.45, 0.0, 0.45]))
    # pairs: (1, 0) -> (+1, -1); (0.5, 0.5) -> 0, no signal from a group of equal rewards
    torch.testing.assert_close(rloo_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2), torch.tensor([1.0, -1.0, 0, 0]))


def test_rloo_edge_cases():
    assert torch.equal(rloo_advantages(torch.ones(8), 4), torch.zeros(8))  # all equal: no signal
    assert rloo_advantages(torch.zeros(0), 4).shape == (0,)  # empty batch
    assert rloo_advantages(torch.tensor([1, 0]), 2).dtype == torch.float32  # integer rewards come back as float
    # a group of one has no other rollout: the reference asserts rollout.n > 1, and so does this function
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        rloo_advantages(torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="not divisible by group_size=4"):
        rloo_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="1-D"):
        rloo_advantages(torch.zeros(2, 4), 4)


def _rloo_formula(rewards: list[float], group_size: int) -> list[float]:
    """Independent: r_i minus the plain mean of the other members of its block."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        out.extend(r - statistics.fmean(group[:i] + group[i + 1 :]) for i, r in enumerate(group))
    return out


@settings(max_examples=200, deadline=None)
@given(group_size=st.integers(2, 8), groups=st.integers(1, 6), binary=st.booleans(), data=st.data())
def test_rloo_matches_the_formula_on_random_batches(group_size, groups, binary, data):
    values = st.sampled_from([0.0, 1.0]) if binary else st.floats(-1, 1, allow_nan=False)
    rewards = data.draw(st.lists(values, min_size=group_size * groups, max_size=group_size * groups))
    adv = rloo_advantages(torch.tensor(rewards, dtype=torch.float64), group_size)
    torch.testing.assert_close(adv, torch.tensor(_rloo_formula(rewards, group_size), dtype=torch.float64))
    # equivalently G / (G - 1) (r - mean): zero mean in every group
    assert adv.view(groups, group_size).sum(dim=1).abs().max().item() < 1e-9


# ---- REINFORCE++ -------------------------------------------------------------------------------

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])  # responses of 3, 2 and 0 tokens


def test_outcome_reward_sits_on_the_last_response_token():
    tokens = outcome_token_rewards(torch.tensor([1.0, 0.5, 1.0]), MASK)
    # row 0 ends at t = 2, row 1 at t = 1; row 2 has no response token, so its reward goes nowhere
    torch.testing.assert_close(tokens, torch.tensor([[0, 0, 1.0, 0], [0, 0.5, 0, 0], [0, 0, 0, 0]]))
    assert outcome_token_rewards(torch.tensor([1.0]), torch.zeros(1, 0)).shape == (1, 0)


def test_reinforce_pp_hand_computed_outcome_rewards():
    tokens = outcome_token_rewards(torch.tensor([1.0, 0.0, 1.0]), MASK)
    adv = reinforce_pp_advantages(tokens, MASK)
    # gamma 1: returns 1 on row 0's three tokens, 0 on row 1's two; n = 5 valid tokens
    # mean 3 / 5 = 0.6; squared deviations 3 x 0.16 + 2 x 0.36 = 1.2; unbiased var 1.2 / 4 = 0.3
    # A = 0.4 / sqrt(0.3) = 0.730297 and -0.6 / sqrt(0.3) = -1.095445, constant per response, 0 off it
    # (biased var 0.24 would give 0.816497 and -1.224745)
    a, b = 0.4 / math.sqrt(0.3), -0.6 / math.sqrt(0.3)
    torch.testing.assert_close(adv, torch.tensor([[a, a, a, 0], [b, b, 0, 0], [0, 0, 0, 0]]))


def test_reinforce_pp_hand_computed_discount_and_reset():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    # row 0, gamma 0.5, backwards: t=3 R = 2 (padding; reset after it), t=2 R = 0 (reset), t=1 R = 1, t=0 R = 0.5
    # (without the reset the padding's 2 would leak in: R_1 = 1 + 0.5 x (0 + 0.5 x 2) = 1.5, R_0 = 0.75)
    returns = discounted_returns(rewards, mask, gamma=0.5)
    torch.testing.assert_close(returns[0, :2], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(returns[1, 0], torch.tensor(1.0))
    adv = reinforce_pp_advantages(rewards, mask, gamma=0.5)
    # valid returns (0.5, 1, 1): mean 2.5 / 3 = 0.8333; deviations (-1/3, 1/6, 1/6), squares sum 1/6
    # unbiased var (1/6) / 2 = 1/12, std 0.288675 -> A = (-1.154701, 0.577350, 0.577350)
    s = math.sqrt(1 / 12)
    torch.testing.assert_close(adv, torch.tensor([[-1 / 3 / s, 1 / 6 / s, 0, 0], [1 / 6 / s, 0, 0, 0]]))


def test_reinforce_pp_edge_cases():
    # every return equal (all wrong): no signal; a fully masked batch: zeros, no NaN
    assert reinforce_pp_advantages(torch.zeros(2, 3), torch.ones(2, 3)).abs().max().item() == 0.0
    assert torch.equal(reinforce_pp_advantages(torch.ones(2, 3), torch.zeros(2, 3)).abs(), torch.zeros(2, 3))
    # all right: returns 1 on every valid token, mean 1 - 1e-8/n: (R - mean) / sqrt(1e-8) stays below 1e-3
    assert reinforce_pp_advantages(outcome_token_rewards(torch.ones(2), MASK[:2]), MASK[:2]).abs().max() < 1e-3
    # one valid token in the whole batch: the reference keeps the biased variance (0), so A ~ 1e-4 R
    one = reinforce_pp_advantages(torch.tensor([[3.0, 0.0]]), torch.tensor([[1, 0]]))
    assert one.abs().max().item() < 1e-3
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        reinforce_pp_advantages(torch.zeros(2, 3), torch.ones(2, 4))


def _returns_formula(rewards: list[list[float]], mask: list[list[int]], gamma: float) -> list[float]:
    """Independent: each valid token's return is the discounted sum of the rewards from it to the end of its run
    of valid tokens (a masked position ends a response); listed row by row."""
    out = []
    for row, m in zip(rewards, mask, strict=True):
        for t in range(len(row)):
            if not m[t]:
                continue
            total, k = 0.0, t
            while k < len(row) and m[k]:
                total += gamma ** (k - t) * row[k]
                k += 1
            out.append(total)
    return out


def _whitened_formula(returns: list[float]) -> list[float]:
    """The reference's masked_whiten on a list of valid returns: eps 1e-8 beside the count and under the root,
    Bessel's correction when there are at least two."""
    n = len(returns)
    mean = sum(returns) / (n + 1e-8)
    var = sum((r - mean) ** 2 for r in returns) / (n + 1e-8) * (n / (n - 1) if n > 1 else 1.0)
    return [(r - mean) / math.sqrt(var + 1e-8) for r in returns]


@st.composite
def token_batches(draw):
    """Token rewards everywhere (padding too, to catch a leak past a response's end), a mask of responses of
    different lengths (prefix masks) or with holes, and a discount in [0, 1]."""
    b, t = draw(st.integers(1, 6)), draw(st.integers(1, 10))
    rewards = draw(st.lists(st.lists(st.floats(-2, 2, allow_nan=False), min_size=t, max_size=t), min_size=b, max_size=b))
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(0, t), min_size=b, max_size=b))
        mask = [[int(i < n) for i in range(t)] for n in lengths]
    else:
        mask = draw(st.lists(st.lists(st.sampled_from([0, 1]), min_size=t, max_size=t), min_size=b, max_size=b))
    gamma = draw(st.one_of(st.just(1.0), st.floats(0, 1)))
    return rewards, mask, gamma


@settings(max_examples=300, deadline=None)
@given(batch=token_batches())
def test_reinforce_pp_matches_the_formula_on_random_batches(batch):
    rewards, mask, gamma = batch
    r, m = torch.tensor(rewards, dtype=torch.float64), torch.tensor(mask)
    adv = reinforce_pp_advantages(r, m, gamma)
    valid = m.bool()
    returns = _returns_formula(rewards, mask, gamma)
    torch.testing.assert_close(discounted_returns(r, m, gamma)[valid], torch.tensor(returns, dtype=torch.float64))
    expected = _whitened_formula(returns) if returns else []
    torch.testing.assert_close(adv[valid], torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=1e-6)
    assert torch.equal(adv[~valid].abs(), torch.zeros_like(adv[~valid]))  # 0 off the responses


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6), data=st.data())
def test_reinforce_pp_outcome_rewards_give_one_advantage_per_response(lengths, data):
    """gamma 1, the reward on the last token: every token of a response gets the same advantage, ordered as the
    rewards are."""
    rewards = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(lengths),
                                              max_size=len(lengths))), dtype=torch.float64)
    mask = torch.tensor([[int(i < n) for i in range(8)] for n in lengths])
    adv = reinforce_pp_advantages(outcome_token_rewards(rewards, mask), mask)
    for i, n in enumerate(lengths):
        assert torch.allclose(adv[i, :n], adv[i, 0].expand(n))
    first = adv[:, 0]
    assert all((first[i] > first[j]) == (rewards[i] > rewards[j]) for i in range(len(lengths)) for j in range(len(lengths)))


# ---- the estimators the seam calls -------------------------------------------------------------


def test_rloo_estimator_reports_wasted_groups():
    from mssr_cli.config.compose import compose
    from mssr_cli.training.estimators import build_estimator

    est = build_estimator(compose(["algo=rloo", "algo.rollouts_per_prompt=2", "train.rollouts_per_step=4"]).algo)
    adv, metrics = est.advantages([7, 7, 8, 8], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    # group 7: 1 - 0 = +1, 0 - 1 = -1; group 8: equal rewards -> 0
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    assert metrics == {"collapse/adv_raw_abs_mean": 0.5, "grpo/zero_std_frac": 0.5}
    assert (est.needs_kl, est.needs_token_mask, est.finish_step(0.1), est.state_dict()) == (False, False, {}, {})


def test_reinforce_pp_estimator_puts_the_reward_on_the_last_token_with_the_configured_gamma():
    from mssr_cli.config.compose import compose
    from mssr_cli.training.estimators import build_estimator

    est = build_estimator(compose(["algo=reinforce_pp", "algo.gamma=0.5"]).algo)
    assert (est.gamma, est.needs_kl, est.needs_token_mask) == (0.5, False, True)
    rewards = torch.tensor([1.0, 0.0, 1.0])
    adv, metrics = est.advantages([0, 1, 2], rewards, MASK)
    tokens = outcome_token_rewards(rewards, MASK)
    torch.testing.assert_close(adv, reinforce_pp_advantages(tokens, MASK, gamma=0.5))
    # returns before whitening: row 0 (0.25, 0.5, 1), row 1 (0, 0): mean |R| over the 5 tokens = 1.75 / 5
    assert metrics == {"collapse/adv_raw_abs_mean": pytest.approx(0.35)}
    assert adv[0, 0] < adv[0, 1] < adv[0, 2]  # gamma < 1: earlier tokens get less of the outcome
    with pytest.raises(ValueError, match="response mask"):
        est.advantages([0], torch.tensor([1.0]))
