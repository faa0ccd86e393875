"""The tracker's KL: k3 per token (the reference's clamps), token mean per rollout."""

from __future__ import annotations

import math

import torch

from mssr_cli.algos.kl import k3_per_token, rollout_kl


def test_hand_computed_example():
    # log pi = log 0.5, log pi_ref = log 0.25: d = log(0.5) = -0.6931; k3 = e^d - d - 1 = 0.5 + 0.6931 - 1
    logps = torch.tensor([[math.log(0.5), math.log(0.2), 0.0]])  # [1, 3]
    ref = torch.tensor([[math.log(0.25), math.log(0.2), 0.0]])
    k3 = k3_per_token(logps, ref)
    torch.testing.assert_close(k3, torch.tensor([[0.5 + math.log(2) - 1, 0.0, 0.0]]))
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    torch.testing.assert_close(rollout_kl(logps, ref, mask), torch.tensor([(0.5 + math.log(2) - 1) / 2]))


def test_clamps_as_the_reference():
    logps = torch.tensor([[-50.0, 0.0, -1.0]])
    ref = torch.tensor([[0.0, -50.0, -1.0]])
    k3 = k3_per_token(logps, ref)
    # d = +50 -> 20 -> e^20 - 21 -> 10;  d = -50 -> -20 -> e^-20 + 19 = 19.0 -> 10
    torch.testing.assert_close(k3, torch.tensor([[10.0, 10.0, 0.0]]))
    assert torch.isfinite(k3).all()


def test_random_properties():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logps, ref = -torch.rand(5, 9, generator=g) * 4, -torch.rand(5, 9, generator=g) * 4
        mask = (torch.rand(5, 9, generator=g) > 0.3).long()
        mask[0] = 0  # a rollout with no response tokens
        k3 = k3_per_token(logps, ref)
        assert (k3 >= 0).all() and (k3 <= 10).all()
        per_rollout = rollout_kl(logps, ref, mask)
        assert per_rollout[0] == 0
        for i in range(1, 5):  # a loop version of the vectorised token mean
            tokens = [k3[i, t].item() for t in range(9) if mask[i, t]]
            expected = sum(tokens) / len(tokens) if tokens else 0.0
            assert abs(per_rollout[i].item() - expected) < 1e-6
    assert (k3_per_token(logps, logps) == 0).all()
