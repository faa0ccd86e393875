"""Entropy shaping term and the sampled-token entropy proxy."""

from __future__ import annotations

import math

import pytest
import torch

from mssr_cli.algos.shaping import (
    entropy_shaping_term,
    sampled_token_entropy,
    shaping_cap_fraction,
)

SEEDS = [0, 1, 2, 3, 4]

# shared hand example: alpha 0.4, kappa 2
ADV = torch.tensor([1.0, -0.5])  # [B]
ENT = torch.tensor([[0.5, 2.0, 3.0], [0.5, 2.0, 0.1]])  # [B, T]
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])  # [B, T]


def test_shaping_hand_computed():
    psi = entropy_shaping_term(ADV, ENT, MASK, alpha=0.4, kappa=2.0)
    # row 0: alpha*H = (0.2, 0.8, 1.2), |A|/kappa = 1.0/2 = 0.5 -> (0.2, 0.5, masked 0)
    # row 1: alpha*H = (0.2, 0.8, 0.04), |A|/kappa = 0.5/2 = 0.25 -> (0.2, 0.25, 0.04)
    expected = torch.tensor([[0.2, 0.5, 0.0], [0.2, 0.25, 0.04]])
    torch.testing.assert_close(psi, expected)
    # shaped advantage A + psi: positive grows (1 -> 1.2, 1.5), negative shrinks (-0.5 -> -0.3)
    shaped = ADV.unsqueeze(-1) + psi
    torch.testing.assert_close(shaped[1], torch.tensor([-0.3, -0.25, -0.46]))


def test_shaping_token_level_advantages_equal_broadcast():
    token_adv = ADV.unsqueeze(-1).expand(2, 3)  # [B, T]
    torch.testing.assert_close(
        entropy_shaping_term(token_adv, ENT, MASK), entropy_shaping_term(ADV, ENT, MASK)
    )
    # genuinely token-level A: each token gets its own cap
    adv = torch.tensor([[1.0, 0.2, 4.0]])  # caps 0.5, 0.1, 2.0
    psi = entropy_shaping_term(adv, torch.tensor([[1.0, 1.0, 1.0]]), torch.ones(1, 3))
    # alpha*H = 0.4 everywhere -> min(0.4, 0.5), min(0.4, 0.1), min(0.4, 2.0)
    torch.testing.assert_close(psi, torch.tensor([[0.4, 0.1, 0.4]]))


def test_shaping_defaults_are_the_paper_values():
    # alpha 0.4, kappa 2: A = 3 -> cap 1.5; H = 1 -> 0.4
    psi = entropy_shaping_term(torch.tensor([3.0]), torch.tensor([[1.0, 10.0]]), torch.ones(1, 2))
    torch.testing.assert_close(psi, torch.tensor([[0.4, 1.5]]))


def test_shaping_cap_fraction_hand_computed():
    # valid tokens: 5. Cap binds where alpha*H > |A|/kappa:
    # row 0: 0.2 > 0.5 no, 0.8 > 0.5 yes (t2 masked); row 1: 0.2 > 0.25 no, 0.8 > 0.25 yes,
    # 0.04 > 0.25 no -> 2 / 5
    assert shaping_cap_fraction(ADV, ENT, MASK, alpha=0.4, kappa=2.0) == pytest.approx(0.4)
    # equality does not bind: alpha*H = 0.5 * 1.0 = 0.5 == |A|/kappa = 1.0 / 2
    tie = shaping_cap_fraction(torch.tensor([1.0]), torch.ones(1, 1), torch.ones(1, 1), 0.5, 2.0)
    assert tie == 0.0
    assert shaping_cap_fraction(ADV, ENT, torch.zeros(2, 3)) == 0.0  # nothing to count


def test_shaping_fully_masked_rows_and_padding_garbage():
    ent = torch.tensor([[float("nan"), float("inf"), 1.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    psi = entropy_shaping_term(torch.tensor([1.0, 1.0]), ent, mask)
    # row 0 fully masked -> 0 even with NaN/inf there; row 1: min(0.4, 0.5) on real tokens
    torch.testing.assert_close(psi, torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.4, 0.0]]))


def test_shaping_zero_advantage_and_zero_alpha():
    assert torch.equal(entropy_shaping_term(torch.zeros(2), ENT, MASK), torch.zeros(2, 3))
    assert torch.equal(entropy_shaping_term(ADV, ENT, MASK, alpha=0.0), torch.zeros(2, 3))


def test_shaping_carries_no_gradient():
    ent = ENT.clone().requires_grad_(True)
    adv = ADV.clone().requires_grad_(True)
    psi = entropy_shaping_term(adv, ent, MASK)
    assert not psi.requires_grad


def test_shaping_validates_parameters():
    with pytest.raises(ValueError, match="kappa"):
        entropy_shaping_term(ADV, ENT, MASK, kappa=0.0)
    with pytest.raises(ValueError, match="kappa"):
        entropy_shaping_term(ADV, ENT, MASK, kappa=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        entropy_shaping_term(ADV, ENT, MASK, alpha=-0.1)
    with pytest.raises(ValueError, match="kappa"):
        shaping_cap_fraction(ADV, ENT, MASK, kappa=0.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kappa", [1.01, 2.0, 5.0])
def test_shaping_properties(seed, kappa):
    gen = torch.Generator().manual_seed(seed)
    b, t, alpha = 16, 12, 0.4
    adv = torch.randn(b, generator=gen)  # [B]
    ent = torch.rand(b, t, generator=gen) * 4.0  # [B, T], up to 4 nats
    mask = (torch.rand(b, t, generator=gen) > 0.3).long()  # [B, T]
    mask[0] = 0  # one fully masked row
    psi = entropy_shaping_term(adv, ent, mask, alpha=alpha, kappa=kappa)
    assert psi.shape == (b, t) and psi.dtype == torch.float32
    assert (psi >= 0).all()
    assert (psi <= alpha * ent + 1e-7).all()
    assert (psi <= adv.abs().unsqueeze(-1) / kappa + 1e-7).all()
    assert torch.equal(psi[0], torch.zeros(t))
    assert torch.equal(psi[mask == 0], torch.zeros(int((mask == 0).sum())))
    shaped = adv.unsqueeze(-1) + psi  # [B, T]
    assert torch.equal(torch.sign(shaped), torch.sign(adv).unsqueeze(-1).expand(b, t))
    frac = shaping_cap_fraction(adv, ent, mask, alpha=alpha, kappa=kappa)
    cap_hits = ((psi < alpha * ent) & (mask != 0)).sum().item() / (mask != 0).sum().item()
    assert frac == pytest.approx(cap_hits)


def test_sign_can_flip_when_kappa_below_one():
    # shows the sign property above is not vacuous: kappa 0.5, A = -1, H large
    psi = entropy_shaping_term(
        torch.tensor([-1.0]), torch.tensor([[10.0]]), torch.ones(1, 1), 0.4, 0.5
    )
    # psi = min(4.0, 1 / 0.5 = 2.0) = 2.0 -> A + psi = +1.0
    assert (torch.tensor([-1.0]) + psi).item() == pytest.approx(1.0)


# ---- sampled-token entropy ----------------------------------------------------------------


def test_sampled_token_entropy_hand_computed():
    logprobs = torch.tensor([[math.log(0.5), 0.0, -1.0, float("-inf")], [-2.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    h = sampled_token_entropy(logprobs, mask)
    # p = 0.5: -0.5 ln 0.5 = 0.34657; p = 1: 0; p = e^-1: e^-1 * 1 = 0.36788 (the maximum);
    # p = 0: 0; p = e^-2: 2 e^-2 = 0.27067; masked: 0
    expected = torch.tensor(
        [[0.5 * math.log(2), 0.0, math.exp(-1), 0.0], [2 * math.exp(-2), 0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(h, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_token_entropy_properties(seed):
    gen = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(8, 10, generator=gen) * 12  # [B, T], p in (6e-6, 1]
    mask = (torch.rand(8, 10, generator=gen) > 0.2).long()
    h = sampled_token_entropy(logprobs, mask)
    assert h.shape == (8, 10)
    assert (h >= 0).all() and (h <= 1 / math.e + 1e-6).all()
    assert torch.equal(h[mask == 0], torch.zeros(int((mask == 0).sum())))
    p = logprobs.exp()
    torch.testing.assert_close(h[mask == 1], (-p * logprobs)[mask == 1])


def test_sampled_token_entropy_low_precision_input_returns_float32():
    h = sampled_token_entropy(torch.tensor([[-1.0]], dtype=torch.bfloat16), torch.ones(1, 1))
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, torch.tensor([[math.exp(-1)]]))
