"""Advantage estimators: hand-computed examples, a loop reference, properties, edge cases."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from mssr_cli.algos.advantages import (
    grpo_advantages,
    single_rollout_advantages,
    zero_std_group_fraction,
)

SEEDS = [0, 1, 2, 3, 4]


# ---- GRPO ----------------------------------------------------------------------------------


def test_grpo_hand_computed_bessel_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = grpo_advantages(rewards, group_size=4)
    # group 1: mean 0.25, deviations (0.75, -0.25, -0.25, -0.25)
    #   sum of squares 0.5625 + 3 * 0.0625 = 0.75; unbiased var 0.75 / 3 = 0.25; std 0.5
    #   A = 0.75 / (0.5 + 1e-4) = 1.49970..., -0.25 / 0.5001 = -0.49990...
    # (population std would be sqrt(0.1875) = 0.4330 and give A_0 = 1.7317)
    # group 2: all equal -> std 0 -> A = 0 / 1e-4 = 0
    expected = torch.tensor(
        [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.0, 0.0, 0.0, 0.0]
    )
    torch.testing.assert_close(adv, expected)


def test_grpo_hand_computed_pairs():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=2)
    # group (1, 0): mean 0.5, unbiased var (0.25 + 0.25) / 1 = 0.5, std 0.70711
    #   A = +-0.5 / (0.70711 + 1e-4) = +-0.70701; group (0, 0): A = 0
    s = math.sqrt(0.5) + 1e-4
    torch.testing.assert_close(adv, torch.tensor([0.5 / s, -0.5 / s, 0.0, 0.0]))


def test_grpo_eps_is_added_to_the_std():
    adv = grpo_advantages(torch.tensor([1.0, 0.0]), group_size=2, eps=0.5)
    # std sqrt(0.5) = 0.70711; A = 0.5 / (0.70711 + 0.5) = 0.41421
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5]) / (math.sqrt(0.5) + 0.5))


def _grpo_loop(rewards: list[float], group_size: int, eps: float = 1e-4) -> list[float]:
    """Reference: one group at a time with the statistics module (stdev = n - 1)."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean = statistics.fmean(group)
        std = statistics.stdev(group) if group_size > 1 else 0.0
        out.extend((r - mean) / (std + eps) for r in group)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("group_size", [1, 2, 3, 8])
def test_grpo_matches_loop_reference(seed, group_size):
    gen = torch.Generator().manual_seed(seed)
    n_groups = 5
    binary = torch.randint(0, 2, (n_groups * group_size,), generator=gen).double()
    continuous = torch.rand(n_groups * group_size, generator=gen, dtype=torch.float64)
    for rewards in (binary, continuous):
        expected = torch.tensor(_grpo_loop(rewards.tolist(), group_size), dtype=torch.float64)
        torch.testing.assert_close(grpo_advantages(rewards, group_size), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_groups_are_consecutive_blocks(seed):
    # shuffling whole groups shuffles the advantages the same way (prompt-major layout)
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(6 * 4, generator=gen)
    perm = torch.randperm(6, generator=gen)
    shuffled = rewards.view(6, 4)[perm].reshape(-1)
    expected = grpo_advantages(rewards, 4).view(6, 4)[perm].reshape(-1)
    torch.testing.assert_close(grpo_advantages(shuffled, 4), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_group_properties(seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(16 * 8, generator=gen, dtype=torch.float64)
    adv = grpo_advantages(rewards, 8, eps=0.0).view(16, 8)
    # each group: zero mean, unbiased std 1 (eps = 0)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(16, dtype=torch.float64))
    torch.testing.assert_close(adv.std(dim=1), torch.ones(16, dtype=torch.float64))


def test_grpo_edge_cases():
    # all rewards equal: no signal anywhere
    assert torch.equal(grpo_advantages(torch.ones(8), 4), torch.zeros(8))
    # one rollout per prompt: TRL takes the std as 0, so every advantage is 0
    assert torch.equal(grpo_advantages(torch.tensor([1.0, 0.0, 1.0]), 1), torch.zeros(3))
    # integer rewards come back as float
    assert grpo_advantages(torch.tensor([1, 0]), 2).dtype == torch.float32
    # empty batch
    assert grpo_advantages(torch.zeros(0), 4).shape == (0,)


def test_grpo_nan_reward_is_left_out_and_gets_zero():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, float("nan"), 0.0]), 4)
    # group without the NaN: (1, 0, 0), mean 1/3; squared deviations 4/9 + 1/9 + 1/9 = 6/9
    #   unbiased var (6/9) / 2 = 1/3, std 0.57735; A_0 = (2/3) / (0.57735 + 1e-4)
    s = math.sqrt(1 / 3) + 1e-4
    torch.testing.assert_close(adv, torch.tensor([(2 / 3) / s, (-1 / 3) / s, 0.0, (-1 / 3) / s]))


def test_grpo_rejects_partial_groups():
    with pytest.raises(ValueError, match="not divisible by group_size=4"):
        grpo_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(6), 0)
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 4), 4)


def test_zero_std_group_fraction():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    # groups (1, 1) equal, (0, 1) not, (0, 0) equal -> 2 / 3
    assert zero_std_group_fraction(rewards, 2) == pytest.approx(2 / 3)
    assert zero_std_group_fraction(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2) == 0.0
    assert zero_std_group_fraction(torch.tensor([0.0, 1.0]), 1) == 1.0  # G = 1: all "wasted"
    assert zero_std_group_fraction(torch.zeros(0), 2) == 0.0
    with pytest.raises(ValueError, match="not divisible"):
        zero_std_group_fraction(torch.zeros(3), 2)


# ---- single rollout ---------------------------------------------------------------------


def test_single_rollout_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    baselines = torch.tensor([0.5, 0.5, 0.25, 0.75])
    adv = single_rollout_advantages(rewards, baselines)
    # a = r - v = (0.5, -0.5, 0.75, -0.75); mean 0
    # var_pop = (0.25 + 0.25 + 0.5625 + 0.5625) / 4 = 0.40625; sqrt = 0.637377
    # A = a / 0.637377 = (0.78446, -0.78446, 1.17670, -1.17670)
    expected = torch.tensor([0.5, -0.5, 0.75, -0.75]) / math.sqrt(0.40625)
    torch.testing.assert_close(adv, expected)


def test_single_rollout_uses_population_variance_with_floor():
    # a = (1e-4, -1e-4): var_pop 1e-8 < eps 1e-6 -> divide by sqrt(1e-6) = 1e-3 -> (0.1, -0.1)
    # (sqrt(var + eps) would give 0.0995; sample variance would give other values)
    adv = single_rollout_advantages(torch.tensor([1e-4, -1e-4]), torch.zeros(2))
    torch.testing.assert_close(adv, torch.tensor([0.1, -0.1]))
    # a = (2, 0, 1): mean 1, var_pop (1 + 1 + 0) / 3 = 2/3 -> A = (1, -1, 0) / 0.81650
    adv = single_rollout_advantages(torch.tensor([2.0, 0.0, 1.0]), torch.zeros(3))
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2 / 3))


def test_single_rollout_batch_of_one_is_not_normalised():
    # reference quirk: B == 1 returns a = r - v = 1 - 0.3
    adv = single_rollout_advantages(torch.tensor([1.0]), torch.tensor([0.3]))
    torch.testing.assert_close(adv, torch.tensor([0.7]))
    adv = single_rollout_advantages(
        torch.tensor([0.0]), torch.tensor([0.3]), zero_signal_guard=True
    )
    torch.testing.assert_close(adv, torch.tensor([-0.3]))  # guard only acts when normalising


def test_single_rollout_without_normalisation():
    adv = single_rollout_advantages(
        torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.25, 0.5, 1.0]), normalize=False
    )
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.5, 0.0]))


def test_single_rollout_all_rewards_equal_and_the_guard():
    rewards = torch.zeros(3)
    baselines = torch.tensor([0.2, 0.5, 0.8])
    # a = (-0.2, -0.5, -0.8), mean -0.5, deviations (0.3, 0, -0.3)
    # var_pop = 0.18 / 3 = 0.06 -> A = (1.22474, 0, -1.22474): pure baseline noise
    expected = torch.tensor([0.3, 0.0, -0.3]) / math.sqrt(0.06)
    torch.testing.assert_close(single_rollout_advantages(rewards, baselines), expected)
    guarded = single_rollout_advantages(rewards, baselines, zero_signal_guard=True)
    assert torch.equal(guarded, torch.zeros(3))
    # equal rewards AND equal baselines: a has no spread, var floored -> zeros, no NaN
    adv = single_rollout_advantages(torch.ones(4), torch.full((4,), 0.5))
    assert torch.equal(adv, torch.zeros(4))


@pytest.mark.parametrize("seed", SEEDS)
def test_single_rollout_normalised_properties(seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (64,), generator=gen).double()
    baselines = torch.rand(64, generator=gen, dtype=torch.float64)
    adv = single_rollout_advantages(rewards, baselines)
    assert adv.shape == (64,)
    assert abs(adv.mean().item()) < 1e-9
    assert adv.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-9)
    # order of A matches order of r - v (normalisation is an increasing affine map)
    a = rewards - baselines
    assert torch.equal(torch.argsort(adv), torch.argsort(a))
    # the guard changes nothing when rewards have spread
    guarded = single_rollout_advantages(rewards, baselines, zero_signal_guard=True)
    assert torch.equal(guarded, adv)


def test_single_rollout_shape_mismatch():
    with pytest.raises(ValueError, match="rewards and baselines"):
        single_rollout_advantages(torch.zeros(3), torch.zeros(4))
