"""The estimator registry the seam calls: ordering of values and updates, metrics, state."""

from __future__ import annotations

import math

import pytest
import torch

from mssr_cli.config.compose import compose
from mssr_cli.training.estimators import build_estimator


def test_unknown_estimator_lists_the_valid_ones():
    algo = compose([]).algo
    algo.estimator = "ppo"
    with pytest.raises(ValueError, match="grpo, single_rollout"):
        build_estimator(algo)


def test_group_estimator_reports_wasted_groups():
    est = build_estimator(compose(["algo=grpo", "algo.rollouts_per_prompt=2", "train.rollouts_per_step=4"]).algo)
    adv, metrics = est.advantages([7, 7, 8, 8], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    # group 7: mean 0.5, std (n-1) = 0.7071 -> +-0.5 / (0.7071 + 1e-4) = +-0.7070; group 8: all equal -> 0
    torch.testing.assert_close(adv, torch.tensor([0.70700, -0.70700, 0.0, 0.0]), atol=1e-4, rtol=0)
    assert metrics["grpo/zero_std_frac"] == 0.5
    assert metrics["collapse/adv_raw_abs_mean"] == pytest.approx(0.25)  # |+-0.5| twice, 0 twice


def test_single_rollout_uses_values_before_the_update_then_updates_with_the_steps_kl():
    est = build_estimator(compose(["algo=mvsr"]).algo)
    # unseen prompts: v = 0.5; a = r - v = [0.5, -0.5]; normalised: mean 0, var_pop 0.25 -> [1, -1]
    adv, metrics = est.advantages([1, 2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0]))
    assert metrics["tracker/value_mean"] == 0.5 and metrics["collapse/adv_raw_abs_mean"] == 0.5
    assert est.tracker.values([1]).item() == 0.5  # not updated until the KL is known
    out = est.finish_step(kl=0.005)
    # KL 0.005 < KL* 0.01: rho = 0.875 + 0.5 * (0.96 - 0.875) = 0.9175
    assert out["tracker/rho"] == pytest.approx(0.9175) and out["tracker/prompts"] == 2
    # prompt 1: N0 = 8, alpha = 0.9175 * 4 + 1 = 4.67, beta = 0.9175 * 4 = 3.67 -> v = 4.67 / 8.34
    assert est.tracker.values([1]).item() == pytest.approx(4.67 / 8.34, abs=1e-5)
    assert est.finish_step(kl=0.005) == {}  # nothing pending: no double update


def test_per_prompt_drift_is_nan_on_first_visit_then_the_kl_change():
    est = build_estimator(compose(["algo=mvsr", "algo.tracker.schedule=per_prompt"]).algo)
    first = est._prompt_drift(["a", "b"], torch.tensor([0.02, float("nan")]))
    assert all(math.isnan(x) for x in first.tolist())
    second = est._prompt_drift(["a", "b"], torch.tensor([0.05, 0.01]))
    assert second[0].item() == pytest.approx(0.03) and math.isnan(second[1].item())
    restored = build_estimator(compose(["algo=mvsr", "algo.tracker.schedule=per_prompt"]).algo)
    restored.load_state_dict(est.state_dict())
    assert restored.last_prompt_kl == est.last_prompt_kl == {"a": pytest.approx(0.05), "b": pytest.approx(0.01)}
