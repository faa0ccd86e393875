"""Through the seam, on real single-rollout steps: the advantages trained on, the tracker's KL and its
update, and the sampled-entropy branch, each checked against a computation written here.

The steps are real (tiny Qwen2-VL, digits): TRL shuffles each generation batch before splitting it into
micro-batches, so rollouts reach the loss in another order than the batch's, and the prompt ids (dataset
rows) differ from batch positions; a mix-up of id, batch position or micro-batch position fails here.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mssr_cli.algos.advantages import single_rollout_advantages
from mssr_cli.algos.value_tracker import BetaValueTracker
from mssr_cli.config.compose import compose
from mssr_cli.training.estimators import SingleRolloutEstimator
from mssr_cli.training.runner import run_training
from mssr_cli.training.trainer import RLTrainer

pytestmark = pytest.mark.slow

SHORT = ["train.max_steps=2", "train.eval_every=0", "train.save_every=0", "train.rollouts_per_step=16",
         "data.train_limit=64", "logging.progress=false", "logging.wandb=disabled"]


def token_mean_k3(logps, ref, mask):
    """[B] plain k3 KL per rollout, token mean (the reference's tracker KL), written out."""
    d = (ref - logps).clamp(-20, 20)
    k3 = (torch.exp(d) - d - 1).clamp(-10, 10)
    m = mask.float()
    return (k3 * m).sum(1) / m.sum(1).clamp(min=1)


class Recorder:
    def __init__(self, mp):
        self.steps, self.losses, self.finishes, self.updates, self.generated, self.shaped = [], [], [], [], [], []
        rec = self
        advantages, finish = SingleRolloutEstimator.advantages, SingleRolloutEstimator.finish_step
        update, loss, gen = BetaValueTracker.update, RLTrainer._compute_loss, RLTrainer._generate_and_score_completions
        shaped = RLTrainer._shaped_advantages

        def _advantages(self, ids, rewards, mask=None):
            before = copy.deepcopy(self.tracker)
            out = advantages(self, ids, rewards, mask)
            rec.steps.append({"ids": list(ids), "rewards": rewards.clone(), "values": before.values(ids), "adv": out[0]})
            return out

        def _finish(self, kl, prompt_kl=None):
            rec.finishes.append({"kl": kl, "prompt_kl": None if prompt_kl is None else prompt_kl.clone(),
                                 "last": dict(self.last_prompt_kl)})
            out = finish(self, kl, prompt_kl)
            rec.finishes[-1]["last"] = dict(self.last_prompt_kl)
            return out

        def _update(self, *a, **k):
            rec.updates.append(1)
            return update(self, *a, **k)

        def _loss(self, model, inputs):
            rec.losses.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in inputs.items()})
            return loss(self, model, inputs)

        def _gen(self, inputs):
            out = gen(self, inputs)
            rec.generated.append({k: out[k].detach().clone() for k in
                                  ("old_per_token_logps", "ref_per_token_logps", "completion_mask") if k in out})
            return out

        def _shaped(self, inputs, logps, entropies):
            result = shaped(self, inputs, logps, entropies)
            rec.shaped.append({"adv": inputs["advantages"].clone(), "logps": logps.detach().clone(),
                               "old": inputs.get("old_per_token_logps"), "mask": inputs["completion_mask"].clone(),
                               "ref": inputs.get("ref_per_token_logps"), "rows": inputs["mssr_row"].clone(),
                               "result": result.clone()})
            return result

        for cls, name, fn in [(SingleRolloutEstimator, "advantages", _advantages),
                              (SingleRolloutEstimator, "finish_step", _finish), (BetaValueTracker, "update", _update),
                              (RLTrainer, "_compute_loss", _loss), (RLTrainer, "_generate_and_score_completions", _gen),
                              (RLTrainer, "_shaped_advantages", _shaped)]:
            mp.setattr(cls, name, fn)


def record_run(tmp_path_factory, overrides):
    mp = pytest.MonkeyPatch()
    rec = Recorder(mp)
    run = tmp_path_factory.mktemp("run") / "run"
    try:
        run_training(compose(overrides), overrides, run)
    finally:
        mp.undo()
    rec.lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rec.lines = [line for line in rec.lines if line["step"] > 0]  # the RL steps (step 0: validation, if any)
    return rec


@pytest.fixture(scope="module")
def one_update(tmp_path_factory, tiny_policy_path):
    """MVSR, per-prompt rho, one optimizer update per step in 4 micro-batches of 4 (KL from the loss)."""
    return record_run(tmp_path_factory, ["algo=mvsr", "algo.tracker.schedule=per_prompt", "train.micro_batch_size=4",
                                         *SHORT])


@pytest.fixture(scope="module")
def two_updates(tmp_path_factory, tiny_policy_path):
    """MVSR, two optimizer updates per step (mini-batch 8 of 16): KL from TRL's generation-time log-probs."""
    return record_run(tmp_path_factory, ["algo=mvsr", "train.minibatch_size=8", "train.micro_batch_size=4", *SHORT])


def test_advantages_trained_on_are_keyed_by_prompt_id(one_update):
    rec = one_update
    assert len(rec.steps) == 2 and len(rec.losses) == 8  # 2 steps x 4 micro-batches
    for step, step_losses in zip(rec.steps, [rec.losses[:4], rec.losses[4:]], strict=True):
        ids = step["ids"]
        assert ids != list(range(len(ids)))  # ids are dataset rows, not batch positions
        assert step["values"].unique().numel() > 1  # the warm start made per-prompt baselines differ
        expected = single_rollout_advantages(step["rewards"], step["values"])  # [N], batch order
        rows = torch.cat([m["mssr_row"] for m in step_losses])
        assert sorted(rows.tolist()) == list(range(16)) and rows.tolist() != list(range(16))  # shuffled
        trained = torch.cat([m["advantages"] for m in step_losses])  # [N], micro-batch order, before shaping
        torch.testing.assert_close(trained, expected[rows], atol=1e-6, rtol=0)


def test_one_tracker_update_per_step_with_minibatches(one_update, two_updates):
    for rec in (one_update, two_updates):
        assert len(rec.updates) == 2 and len(rec.finishes) == 2
        assert all(f["kl"] is not None for f in rec.finishes)


def test_per_prompt_kl_is_mapped_to_batch_rows_and_prompt_ids(one_update):
    rec = one_update
    for i, finish in enumerate(rec.finishes):
        ids = rec.steps[i]["ids"]
        prompt_kl = finish["prompt_kl"]
        assert prompt_kl is not None and prompt_kl.shape == (16,) and not torch.isnan(prompt_kl).any()
        assert finish["kl"] == pytest.approx(prompt_kl.mean().item(), abs=1e-7)
        for row, key in enumerate(ids):  # keyed by prompt id, from the value of its batch row
            assert finish["last"][str(key)] == pytest.approx(prompt_kl[row].item(), abs=1e-7)
    assert [line["tracker/kl"] for line in rec.lines] == pytest.approx([f["kl"] for f in rec.finishes], abs=1e-6)


def test_per_prompt_kl_values_are_each_rows_own(one_update):
    """Each row's KL, recomputed from the log-probs of the loss's forward pass (one update per step: the
    rollout policy) and TRL's reference log-probs, sits at that row of the step's per-prompt KL."""
    rec = one_update
    assert len(rec.shaped) == 8  # the loss's forward pass of every micro-batch (2 steps x 4)
    for i, finish in enumerate(rec.finishes):
        for call in rec.shaped[4 * i: 4 * i + 4]:
            want = token_mean_k3(call["logps"], call["ref"], call["mask"])  # [4]
            torch.testing.assert_close(finish["prompt_kl"][call["rows"]], want, atol=1e-6, rtol=0)
    step2 = rec.finishes[1]["prompt_kl"]
    assert (step2 > 0).all() and step2.unique().numel() == 16  # step 2 has moved: a mix-up of rows would show


def test_tracker_kl_covers_every_rollout_from_generation_logps(two_updates):
    rec = two_updates
    for gen, finish, line in zip(rec.generated, rec.finishes, rec.lines, strict=True):
        assert "old_per_token_logps" in gen  # several updates per step: TRL computed them at generation
        per_rollout = token_mean_k3(gen["old_per_token_logps"], gen["ref_per_token_logps"], gen["completion_mask"])
        assert per_rollout.shape == (16,)  # every rollout of the step, not the first mini-batch
        assert finish["kl"] == pytest.approx(per_rollout.mean().item(), abs=1e-6)
        assert line["tracker/kl"] == pytest.approx(per_rollout.mean().item(), abs=1e-6)
    assert rec.finishes[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1 samples from the reference itself
    assert rec.finishes[1]["kl"] > 0


def test_tracker_kl_is_measured_without_a_kl_loss(tmp_path_factory, tiny_policy_path):
    rec = record_run(tmp_path_factory, ["algo=mvsr", "algo.kl_coef=0", *SHORT])
    assert [f["kl"] is not None for f in rec.finishes] == [True, True] and rec.finishes[1]["kl"] > 0
    assert len(rec.lines) == 2
    assert all("tracker/ref_pass_seconds" in line and "collapse/kl_ref" not in line for line in rec.lines)
    off = record_run(tmp_path_factory, ["algo=mvsr", "algo.kl_coef=0", "algo.tracker.always_measure_kl=false", *SHORT])
    assert [f["kl"] for f in off.finishes] == [None, None] and len(off.updates) == 2
    assert len(off.lines) == 2 and all(line["tracker/rho"] == pytest.approx((0.875 + 0.96) / 2) for line in off.lines)


def test_sampled_entropy_branch_shapes_with_the_rollout_policys_sampled_token(tmp_path_factory, tiny_policy_path):
    rec = record_run(tmp_path_factory, ["algo=mssr", "algo.shaping.entropy=sampled", "algo.shaping.alpha=0.7",
                                        "algo.shaping.kappa=1.5", "algo.tracker.warm_start=false", *SHORT])
    assert rec.shaped
    for call in rec.shaped:
        mask = call["mask"].float()
        rollout = call["logps"] if call["old"] is None else call["old"]  # one update per step: the same policy
        h = -torch.exp(rollout) * rollout  # [B, T] -p log p of the sampled token
        adv = call["adv"][:, None].expand_as(h)
        expected = (adv + torch.minimum(0.7 * h, adv.abs() / 1.5)) * mask
        torch.testing.assert_close(call["result"], expected, atol=1e-6, rtol=0)


def test_sampled_entropy_with_several_updates_reads_the_rollout_policys_log_probs(tmp_path_factory, tiny_policy_path):
    """Two optimizer updates per step: from the second one on, the policy being trained is no longer the rollout
    policy, and the sampled-token entropy must come from TRL's generation-time log-probs (old_per_token_logps)."""
    rec = record_run(tmp_path_factory, ["algo=mssr", "algo.shaping.entropy=sampled", "algo.shaping.alpha=0.7",
                                        "algo.shaping.kappa=1.5", "algo.tracker.warm_start=false",
                                        "train.minibatch_size=8", "train.micro_batch_size=4", "train.lr=1e-2", *SHORT])
    assert rec.shaped and all(call["old"] is not None for call in rec.shaped)  # the branch that reads them ran
    moved = 0
    for call in rec.shaped:
        mask = call["mask"].float()
        h = -torch.exp(call["old"]) * call["old"]  # [B, T] -p log p of the sampled token, rollout policy
        adv = call["adv"][:, None].expand_as(h)
        expected = (adv + torch.minimum(0.7 * h, adv.abs() / 1.5)) * mask
        torch.testing.assert_close(call["result"], expected, atol=1e-6, rtol=0)
        moved += bool(((call["logps"] - call["old"]).abs() * mask).max() > 1e-3)
    assert moved, "no micro-batch after an update: the test would not tell the two policies apart"


def test_tracker_kl_without_a_kl_loss_under_lora(tmp_path_factory, tiny_policy_path):
    """LoRA keeps no reference copy: the tracker's own pass is the base with the adapters off (as TRL's)."""
    # no LoRA dropout: the loss's forward pass then gives exactly the rollout policy's log-probs
    rec = record_run(tmp_path_factory, ["algo=mvsr", "algo.kl_coef=0", "model.lora.enabled=true", "model.lora.r=8",
                                        "model.lora.dropout=0", "train.lr=1e-2", *SHORT])
    assert len(rec.updates) == 2 and rec.finishes[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at zero
    assert rec.finishes[1]["kl"] > 1e-5  # one update later the adapted policy has moved from the base (10x the bound above)
    assert all("tracker/ref_pass_seconds" in line for line in rec.lines)
