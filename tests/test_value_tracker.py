"""Beta-Bernoulli value tracker: warm start, updates, both rho schedules, checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mssr_cli.algos.value_tracker import SCHEDULES, BetaValueTracker

MID = (0.875 + 0.96) / 2  # 0.9175, rho before any KL is known
SPAN = 0.96 - 0.875  # 0.085


def approx(x):
    return pytest.approx(x, abs=1e-12)


# ---- prior, warm start, values -------------------------------------------------------------


def test_prior_and_unseen_ids():
    tracker = BetaValueTracker()
    # N0 = 1 / (1 - 0.875) = 8; prior alpha = beta = 0.5 * 8 = 4
    assert tracker.n0 == approx(8.0)
    assert tracker.prior == (approx(4.0), approx(4.0))
    vals = tracker.values([3, "q7"])
    assert vals.dtype == torch.float32 and vals.shape == (2,)
    torch.testing.assert_close(vals, torch.tensor([0.5, 0.5]))
    assert tracker.num_prompts == 0  # reading values does not create state
    assert tracker.mean_value() == 0.5
    assert tracker.last_rho is None


def test_non_default_v_init_prior():
    tracker = BetaValueTracker(v_init=0.25)
    # prior alpha = 0.25 * 8 = 2, beta = 0.75 * 8 = 6
    assert tracker.prior == (approx(2.0), approx(6.0))
    assert tracker.values([0]).item() == pytest.approx(0.25)
    tracker.update([0], torch.tensor([1.0]))
    # rho = 0.9175: alpha = 0.9175 * 2 + 1 = 2.835, beta = 0.9175 * 6 = 5.505
    assert tracker.values([0]).item() == pytest.approx(2.835 / (2.835 + 5.505))


def test_warm_start_values():
    tracker = BetaValueTracker()
    tracker.warm_start([0, 1, 2], [[1], [0], [1, 0, 1]])
    # v0 = 1, 0, 2/3 -> alpha0 = 8, 0, 16/3; beta0 = 0, 8, 8/3
    torch.testing.assert_close(tracker.values([0, 1, 2, 99]), torch.tensor([1.0, 0.0, 2 / 3, 0.5]))
    state = {k: (a, b) for k, a, b in tracker.state_dict()["prompts"]}
    assert state[2] == (approx(16 / 3), approx(8 / 3))
    assert tracker.num_prompts == 3
    assert tracker.mean_value() == pytest.approx((1 + 0 + 2 / 3) / 3)


def test_warm_start_binarises_pools_and_skips_empty():
    tracker = BetaValueTracker()
    # 0.9 -> 1, 0.5 -> 0 (strict >); id 4 given twice pools (1, 0, 1) -> 2/3; empty -> prior
    tracker.warm_start([4, 5, 4, 6], [[0.9], [0.5], [0, 1], []])
    torch.testing.assert_close(tracker.values([4, 5, 6]), torch.tensor([2 / 3, 0.0, 0.5]))
    assert tracker.num_prompts == 2
    with pytest.raises(ValueError, match="2 ids but 1 outcome"):
        tracker.warm_start([0, 1], [[1]])


def test_first_update_after_warm_start_no_kl():
    tracker = BetaValueTracker()
    tracker.warm_start([0], [[1]])  # alpha 8, beta 0
    before = tracker.values([0])
    rho = tracker.update([0], torch.tensor([0.0]))
    assert rho == approx(MID)
    # alpha = 0.9175 * 8 = 7.34, beta = 0.9175 * 0 + 1 = 1 -> v = 7.34 / 8.34 = 0.880096
    assert tracker.values([0]).item() == pytest.approx(7.34 / 8.34)
    assert before.item() == 1.0  # the baseline handed out earlier is untouched
    assert tracker.last_rho == approx(MID) and tracker.num_updates == 1


def test_rewards_are_binarised():
    tracker = BetaValueTracker()
    tracker.update([0, 1, 2, 3], torch.tensor([0.7, 0.5, float("nan"), 1.0]))
    # prior (4, 4), rho 0.9175: r = 1 -> v = 4.67 / 8.34; r = 0 -> v = 3.67 / 8.34
    up, down = 4.67 / 8.34, 3.67 / 8.34
    torch.testing.assert_close(tracker.values([0, 1, 2, 3]), torch.tensor([up, down, down, up]))


def test_duplicate_ids_in_one_batch_apply_in_order():
    forward, backward = BetaValueTracker(), BetaValueTracker()
    forward.update([7, 7], torch.tensor([1.0, 0.0]))
    backward.update([7, 7], torch.tensor([0.0, 1.0]))
    # forward: (4, 4) -> (0.9175*4 + 1, 0.9175*4) = (4.67, 3.67)
    #          -> (0.9175*4.67, 0.9175*3.67 + 1) = (4.284725, 4.367225): v = 0.495232
    # backward: (3.67, 4.67) -> (4.367225, 4.284725): v = 0.504768
    assert forward.values([7]).item() == pytest.approx(4.284725 / 8.65195)
    assert backward.values([7]).item() == pytest.approx(4.367225 / 8.65195)
    assert forward.num_prompts == 1


def test_id_types():
    tracker = BetaValueTracker()
    tracker.update([1], torch.tensor([1.0]))
    # numpy and torch integers are the same prompt as the int; the string "1" is another
    same = tracker.values([np.int64(1), torch.tensor(1), 1.0])
    torch.testing.assert_close(same, torch.full((3,), 4.67 / 8.34))
    assert tracker.values(["1"]).item() == 0.5
    assert tracker.values(torch.tensor([1, 2])).tolist() == pytest.approx([4.67 / 8.34, 0.5])
    with pytest.raises(TypeError, match="ints or strings"):
        tracker.values([(1, 2)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sequences_stay_in_range_and_window_converges(seed):
    gen = torch.Generator().manual_seed(seed)
    tracker = BetaValueTracker(schedule="monotone")
    for _ in range(60):
        ids = torch.randint(0, 5, (8,), generator=gen)
        rewards = torch.randint(0, 2, (8,), generator=gen).float()
        tracker.update(ids, rewards, kl=torch.rand(1, generator=gen).item() * 0.02)
        vals = tracker.values(range(5))
        assert ((vals >= 0) & (vals <= 1)).all()
    # fixed rho: alpha + beta -> 1 / (1 - rho) once each prompt saw many updates
    fixed = BetaValueTracker(rho_min=0.9, rho_max=0.9)
    for _ in range(400):
        fixed.update([0], torch.tensor([1.0]))
    ((_, a, b),) = fixed.state_dict()["prompts"]
    assert a + b == pytest.approx(10.0) and fixed.values([0]).item() == pytest.approx(1.0)


# ---- rho: "paper" schedule ----------------------------------------------------------------


def test_paper_schedule_branches():
    def rho_after(kl, **kw):
        return BetaValueTracker(**kw).update([0], torch.tensor([1.0]), kl=kl)

    assert rho_after(None) == approx(MID)  # no KL yet: midpoint
    assert rho_after(0.02) == approx(0.875)  # above target: rho_min
    assert rho_after(0.0025) == approx(0.875 + 0.25 * SPAN)  # below: linear, 0.89625
    assert rho_after(0.01) == approx(0.96)  # at target: still the linear branch -> rho_max
    assert rho_after(0.0100001) == approx(0.875)  # just above: the jump down
    assert rho_after(-0.004) == approx(0.875)  # 0.875 - 0.4 * 0.085 = 0.841 -> clipped
    assert rho_after(0.0) == approx(0.875)
    assert rho_after(0.05, target_kl=0.1) == approx(0.875 + 0.5 * SPAN)  # target honoured


def test_kl_joins_window_before_rho_and_window_rolls():
    tracker = BetaValueTracker(kl_window=2)
    # step 1: window (0.004) -> mean 0.004 -> 0.875 + 0.4 * 0.085 = 0.909
    assert tracker.update([0], torch.tensor([1.0]), kl=0.004) == approx(0.909)
    # step 2: window (0.004, 0.008) -> mean 0.006 -> 0.875 + 0.6 * 0.085 = 0.926
    assert tracker.update([0], torch.tensor([1.0]), kl=0.008) == approx(0.926)
    # step 3: 0.004 rolls out, window (0.008, 0.002) -> mean 0.005 -> 0.9175
    # (without rolling: mean 0.0046667 -> 0.91467)
    assert tracker.update([0], torch.tensor([1.0]), kl=0.002) == approx(0.9175)
    assert tracker.mean_kl == approx(0.005)
    # no KL this step: window unchanged, same rho
    assert tracker.update([0], torch.tensor([1.0])) == approx(0.9175)
    # a non-finite KL is ignored too
    assert tracker.update([0], torch.tensor([1.0]), kl=float("nan")) == approx(0.9175)


def test_kl_given_per_rollout_is_averaged():
    tracker = BetaValueTracker()
    # (0.002 + 0.006) / 2 = 0.004 -> 0.909
    assert tracker.update(
        [0, 1], torch.ones(2), kl=torch.tensor([0.002, 0.006], dtype=torch.float64)
    ) == approx(0.909)
    assert tracker.rho == approx(0.909)


def test_default_window_is_twenty_steps():
    tracker = BetaValueTracker()
    for _ in range(20):
        tracker.update([0], torch.tensor([1.0]), kl=0.05)
    assert tracker.rho == approx(0.875)
    for _ in range(19):
        tracker.update([0], torch.tensor([1.0]), kl=0.0)
    # window: one 0.05 and nineteen 0.0 -> mean 0.0025 -> 0.89625
    assert tracker.mean_kl == approx(0.0025)
    assert tracker.rho == approx(0.875 + 0.25 * SPAN)
    tracker.update([0], torch.tensor([1.0]), kl=0.0)  # the last 0.05 leaves
    assert tracker.rho == approx(0.875)


def test_update_applies_the_returned_rho():
    tracker = BetaValueTracker()
    rho = tracker.update([0, 1], torch.tensor([1.0, 0.0]), kl=0.004)  # 0.909
    # prior (4, 4): r = 1 -> (0.909*4 + 1, 0.909*4) = (4.636, 3.636); r = 0 -> (3.636, 4.636)
    assert rho == approx(0.909)
    expected = torch.tensor([4.636 / 8.272, 3.636 / 8.272])
    torch.testing.assert_close(tracker.values([0, 1]), expected)


# ---- rho: "monotone" schedule -------------------------------------------------------------


def test_monotone_schedule_branches():
    def rho_after(kl):
        return BetaValueTracker(schedule="monotone").update([0], torch.tensor([1.0]), kl=kl)

    assert rho_after(None) == approx(MID)
    assert rho_after(0.0) == approx(0.96)
    assert rho_after(0.0025) == approx(0.96 - 0.25 * SPAN)  # 0.93875
    assert rho_after(0.01) == approx(0.875)  # continuous at the target (paper: 0.96)
    assert rho_after(0.02) == approx(0.875)  # ratio capped at 1
    assert rho_after(-0.004) == approx(0.96)  # 0.96 + 0.034 -> clipped to rho_max


# ---- rho: SPO per-prompt schedule ---------------------------------------------------------


def test_per_prompt_schedule():
    tracker = BetaValueTracker(schedule="per_prompt", d_half=0.06)
    d = torch.tensor([0.0, 0.06, 0.01, float("nan")], dtype=torch.float64)
    # 2^0 = 1 -> 0.96; 2^-1 = 0.5 -> 0.875; 2^(-1/6) = 0.890899; NaN (unknown) -> 0.96
    rhos = [0.96, 0.875, 2 ** (-1 / 6), 0.96]
    rho = tracker.update([0, 1, 2, 3], torch.ones(4), kl=0.02, prompt_kl=d)
    assert rho == approx(sum(rhos) / 4)
    # each prompt got its own rho: alpha = rho * 4 + 1, beta = rho * 4
    expected = torch.tensor([(4 * r + 1) / (8 * r + 1) for r in rhos])
    torch.testing.assert_close(tracker.values([0, 1, 2, 3]), expected)
    assert tracker.mean_kl == approx(0.02)  # the KL still joins the window (introspection)
    # no D at all: every rollout gets rho_max
    assert tracker.update([0], torch.ones(1)) == approx(0.96)
    # huge D underflows to rho_min, very negative D overflows to rho_max
    assert tracker.update([0, 1], torch.ones(2), prompt_kl=torch.tensor([1e6, -1e6])) == approx(
        (0.875 + 0.96) / 2
    )
    with pytest.raises(ValueError, match="prompt_kl has 1 entries"):
        tracker.update([0, 1], torch.ones(2), prompt_kl=torch.tensor([0.1]))


# ---- validation, checkpoints --------------------------------------------------------------


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="paper, monotone, per_prompt"):
        BetaValueTracker(schedule="global")
    assert SCHEDULES == ("paper", "monotone", "per_prompt")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rho_min": 0.97},  # above rho_max
        {"rho_min": 1.0, "rho_max": 1.0},  # N0 undefined
        {"target_kl": 0.0},
        {"kl_window": 0},
        {"v_init": 1.5},
        {"d_half": 0.0},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        BetaValueTracker(**kwargs)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="2 ids but 3 rewards"):
        BetaValueTracker().update([0, 1], torch.ones(3))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_state_dict_json_round_trip(schedule):
    tracker = BetaValueTracker(kl_window=3, schedule=schedule)
    tracker.warm_start([0, "img-5", 2], [[1], [0, 1], [0]])
    for step in range(5):
        tracker.update(
            [0, "img-5", 1, "1"],
            torch.tensor([1.0, 0.0, 1.0, float(step % 2)]),
            kl=0.003 * step,
            prompt_kl=torch.tensor([0.01, 0.02, 0.03, 0.04]),
        )
    restored = BetaValueTracker(kl_window=3, schedule=schedule)
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    ids = [0, "img-5", 1, "1", 2, "never-seen"]
    assert torch.equal(restored.values(ids), tracker.values(ids))
    assert restored.state_dict() == tracker.state_dict()  # int 1 and str "1" both survive
    assert restored.num_prompts == tracker.num_prompts == 5
    assert restored.last_rho == tracker.last_rho and restored.mean_kl == tracker.mean_kl
    for kl in (0.02, None, 0.001):  # identical behaviour thereafter
        rewards = torch.tensor([0.0, 1.0, 1.0, 0.0])
        d = torch.tensor([0.05, 0.0, 0.1, 0.2])
        a = tracker.update(ids[:4], rewards, kl=kl, prompt_kl=d)
        b = restored.update(ids[:4], rewards, kl=kl, prompt_kl=d)
        assert a == b
        assert torch.equal(restored.values(ids), tracker.values(ids))


def test_load_state_dict_rejects_foreign_state():
    with pytest.raises(ValueError, match="not a BetaValueTracker state"):
        BetaValueTracker().load_state_dict({"alpha": {}})


def test_empty_batch_is_harmless():
    tracker = BetaValueTracker()
    assert tracker.values([]).shape == (0,)
    assert tracker.update([], torch.zeros(0), kl=0.02) == approx(0.875)
    assert math.isclose(BetaValueTracker(schedule="per_prompt").update([], torch.zeros(0)), 0.96)
