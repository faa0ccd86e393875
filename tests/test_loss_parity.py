"""The loss TRL computes through the seam equals the reference code's formula, value and gradient.

A fixed micro-batch (log-probs, rollout and reference log-probs, advantages, mask) goes through
``RLTrainer._compute_loss`` (TRL's loss, with the seam's hooks) with the policy's forward pass
replaced by a leaf tensor of log-probs, so value and gradient can be compared with the reference's
formula, written here independently of TRL and of mssr_cli:

    r_t = exp(clamp(logp - old, -20, 20))
    pg_t = max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high))      PPO clip with clip-higher
    pg_t = min(pg_t, -A c)               where A < 0                   dual-clip, c = 3
    k3_t = exp(ref - logp) - (ref - logp) - 1                          plain k3 (no ratio factor)
    loss = (token mean of pg over the micro-batch + beta * token mean of k3) / gradient accumulation

(ruiiu/MSSR verl/trainer/core_algos.py ``compute_policy_loss`` and ``compute_kl``; dp_actor.py.)
"""

from __future__ import annotations

import math

import pytest
import torch

from mssr_cli.config.compose import compose

B, T, GA = 4, 7, 4  # micro-batch of 4 rollouts (the reference's per-GPU micro-batch), 7 tokens, 4 accumulated
ITEMS = 170.0  # completion tokens of the whole generation batch of 32 rollouts (8 micro-batches)

PAPER_SIDE = ["algo.loss_agg=micro_token_mean", "algo.kl_bias_correction=false", "algo.vllm_is_correction=false",
              "algo.kl_coef=0.01", "train.rollouts_per_step=32", "train.minibatch_size=16", "train.micro_batch_size=4"]


def build_trainer(overrides: list[str], out_dir):
    from mssr_cli.data.registry import load_split
    from mssr_cli.models.loading import load_policy
    from mssr_cli.rewards.functions import BUILT_INS
    from mssr_cli.training.trainer import RLTrainer
    from mssr_cli.training.trl_args import grpo_args

    cfg = compose([*overrides, "data.train_limit=32", "logging.wandb=disabled"])
    model, processor = load_policy(cfg.model, cfg.data)
    args = grpo_args(cfg, str(out_dir))
    trainer = RLTrainer(model=model, reward_funcs=[BUILT_INS["accuracy"]], args=args, train_dataset=load_split(cfg.data, "train"),
                        processing_class=processor, algo_cfg=cfg.algo)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # as the training loop sets it
    return trainer, cfg


def micro_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    mask[0, 5:] = 0  # rollouts of different lengths: token means differ from sequence means
    mask[2, 2:] = 0
    old = -torch.rand(B, T, generator=g) * 2 - 0.05  # [B, T] rollout log-probs
    logp = old + (torch.rand(B, T, generator=g) * 3 - 1.5)  # ratios from e^-1.5 to e^1.5: clip and dual-clip bind
    logp = logp.clamp(max=-1e-3)
    old[1, 1], logp[1, 1] = -2.0, -0.55  # ratio 4.3 on negative-advantage rows: the dual-clip bound binds
    old[2, 0], logp[2, 0] = -1.9, -0.4
    ref = old + (torch.rand(B, T, generator=g) - 0.5)  # [B, T]
    adv = torch.tensor([1.3, -0.7, -2.1, 0.4])  # [B] both signs
    entropy = torch.rand(B, T, generator=g) * 2  # [B, T] full entropy the forward pass would return
    inputs = {
        "prompt_ids": torch.ones(B, 3, dtype=torch.long), "prompt_mask": torch.ones(B, 3, dtype=torch.long),
        "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
        "num_items_in_batch": torch.tensor(ITEMS),  # tokens of the whole generation batch (other rollouts longer)
        "mssr_row": torch.arange(B),
    }
    return inputs, logp, entropy


def reference_loss(logp, old, ref, adv, mask, beta, clip_low=0.2, clip_high=0.3, dual=3.0, ga=GA, psi=None):
    """The reference code's loss on one micro-batch (see the module docstring)."""
    a = adv[:, None].expand_as(logp)  # [B, T]
    if psi is not None:
        a = a + psi
    neg = torch.clamp(logp - old, -20.0, 20.0)
    ratio = torch.exp(neg)
    clipped = torch.exp(torch.clamp(neg, math.log(1 - clip_low), math.log(1 + clip_high)))
    pg1, pg2, pg3 = -a * ratio, -a * clipped, -a * dual
    higher = torch.max(pg1, pg2)
    final = torch.where(a < 0, torch.min(higher, pg3), higher)
    pg = (final * mask).sum() / mask.sum()
    kl = (ref - logp).clamp(-20, 20)
    k3 = (torch.exp(kl) - kl - 1).clamp(-10, 10)
    return (pg + beta * (k3 * mask).sum() / mask.sum()) / ga


def seam_loss(trainer, inputs, logp, entropy, monkeypatch):
    """The loss and d loss / d logp through RLTrainer._compute_loss, the forward pass replaced by ``logp``."""
    from trl import GRPOTrainer

    leaf = logp.clone().requires_grad_(True)

    def forward(self, model, input_ids, attention_mask, logits_to_keep, *a, compute_entropy=False, **k):
        return leaf, entropy.clone(), None

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", forward)
    trainer._kl_pending = False
    loss = trainer._compute_loss(trainer.model, dict(inputs))
    loss.backward()
    return loss.detach(), leaf.grad


def formula_grad(logp, **kw):
    leaf = logp.clone().requires_grad_(True)
    loss = reference_loss(leaf, **kw)
    loss.backward()
    return loss.detach(), leaf.grad


@pytest.fixture(scope="module")
def mvsr_trainer(tiny_policy_path, tmp_path_factory):
    return build_trainer(["algo=mvsr", *PAPER_SIDE], tmp_path_factory.mktemp("mvsr"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradient_equal_the_reference_formula(mvsr_trainer, monkeypatch, seed):
    trainer, cfg = mvsr_trainer
    assert trainer.args.gradient_accumulation_steps == GA and trainer.args.per_device_train_batch_size == B
    inputs, logp, entropy = micro_batch(seed)
    got, got_grad = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    want, want_grad = formula_grad(logp, old=inputs["old_per_token_logps"], ref=inputs["ref_per_token_logps"],
                                   adv=inputs["advantages"], mask=inputs["completion_mask"].float(), beta=0.01)
    assert abs(got.item() - want.item()) < 1e-6
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=0)
    # the micro-batch really exercises clip-higher, the low clip and dual-clip
    ratio = torch.exp(logp - inputs["old_per_token_logps"])
    assert (ratio > 3).any() and (ratio > 1.3).any() and (ratio < 0.8).any()


def test_trls_defaults_would_differ(mvsr_trainer, monkeypatch):
    """The test can tell: TRL's k3 x ratio and its step-wide token normalisation each change the loss."""
    trainer, _ = mvsr_trainer
    inputs, logp, entropy = micro_batch(0)
    kw = dict(old=inputs["old_per_token_logps"], ref=inputs["ref_per_token_logps"], adv=inputs["advantages"],
              mask=inputs["completion_mask"].float(), beta=0.01)
    want, want_grad = formula_grad(logp, **kw)
    trainer.args.use_bias_correction_kl = True
    try:
        _, grad = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    finally:
        trainer.args.use_bias_correction_kl = False
    assert (grad - want_grad).abs().max() > 1e-5
    trainer.loss_type = "dapo"
    try:
        loss, _ = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    finally:
        trainer.loss_type = "bnpo"
    assert abs(loss.item() - want.item()) > 1e-4


def test_mssr_shaped_loss_equals_the_reference_formula(tiny_policy_path, monkeypatch, tmp_path):
    """MSSR: A'_t = A + min(alpha H_t, |A| / kappa) inside the same loss (full entropy of the forward pass)."""
    trainer, _ = build_trainer(["algo=mssr", *PAPER_SIDE, "algo.shaping.alpha=0.3", "algo.shaping.kappa=1.7"], tmp_path)
    inputs, logp, entropy = micro_batch(5)
    mask = inputs["completion_mask"].float()
    got, got_grad = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    adv = inputs["advantages"][:, None].expand(B, T)
    psi = torch.minimum(0.3 * entropy, adv.abs() / 1.7) * mask  # written out, not mssr_cli's function
    want, want_grad = formula_grad(logp, old=inputs["old_per_token_logps"], ref=inputs["ref_per_token_logps"],
                                   adv=inputs["advantages"], mask=mask, beta=0.01, psi=psi)
    assert abs(got.item() - want.item()) < 1e-6
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=0)


def test_sampled_entropy_bonus_equals_the_reference(tiny_policy_path, monkeypatch, tmp_path):
    """The entropy_loss ablation with entropy_bonus=sampled: loss - coef * token mean of -p log p (with grad) / GA."""
    trainer, _ = build_trainer(["algo=mvsr", *PAPER_SIDE, "algo.entropy_coef=0.05", "algo.entropy_bonus=sampled"], tmp_path)
    inputs, logp, entropy = micro_batch(3)
    mask = inputs["completion_mask"].float()
    got, got_grad = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    leaf = logp.clone().requires_grad_(True)
    base = reference_loss(leaf, old=inputs["old_per_token_logps"], ref=inputs["ref_per_token_logps"],
                          adv=inputs["advantages"], mask=mask, beta=0.01)
    bonus = ((-torch.exp(leaf) * leaf) * mask).sum() / mask.sum() / GA
    want = base - 0.05 * bonus
    want.backward()
    assert abs(got.item() - want.item()) < 1e-6
    torch.testing.assert_close(got_grad, leaf.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("agg", "formula"), [
    # README "Loss aggregation": per micro-batch, before the optimizer sums GA micro-batches
    ("micro_token_mean", lambda l, m: (l * m).sum() / m.sum() / GA),
    ("seq_mean_token_mean", lambda l, m: ((l * m).sum(1) / m.sum(1)).mean() / GA),
    ("seq_mean_token_sum_norm", lambda l, m: (l * m).sum() / (B * 12) / GA),  # 12 = max_completion_length
    # the generation batch's tokens per optimizer update: 32 rollouts = 8 micro-batches = 2 updates of GA
    ("token_mean", lambda l, m: (l * m).sum() / (ITEMS * GA / 8)),
])
def test_each_aggregation_is_its_readme_formula(mvsr_trainer, monkeypatch, agg, formula):
    from mssr_cli.training.trl_args import LOSS_AGG_TO_TRL

    trainer, _ = mvsr_trainer
    inputs, logp, entropy = micro_batch(4)
    mask = inputs["completion_mask"].float()
    trainer.loss_type = LOSS_AGG_TO_TRL[agg]
    try:
        got, _ = seam_loss(trainer, inputs, logp, entropy, monkeypatch)
    finally:
        trainer.loss_type = "bnpo"
    a = inputs["advantages"][:, None].expand(B, T)
    neg = logp - inputs["old_per_token_logps"]
    per_token = torch.where(a < 0, torch.min(torch.max(-a * neg.exp(), -a * neg.exp().clamp(0.8, 1.3)), -a * 3.0),
                            torch.max(-a * neg.exp(), -a * neg.exp().clamp(0.8, 1.3)))
    d = inputs["ref_per_token_logps"] - logp
    per_token = per_token + 0.01 * (d.exp() - d - 1)
    assert abs(got.item() - formula(per_token, mask).item()) < 1e-6
