"""The TRL seam: one small GRPOTrainer subclass through which GRPO, MVSR and MSSR all run.

TRL does generation, batching of images, the PPO-clip loss with clip-higher and dual-clip, the
k3 KL to the reference, optimisation and checkpoints. This class changes four things, each at
one TRL method (``tests/test_trl_seam.py`` fails loudly if one of them changes upstream):

- ``_calculate_rewards``: keep the gathered rewards of the whole batch (every process) and the
  stable prompt ids beside them, in the same order.
- ``_generate_and_score_completions``: replace TRL's advantages with the configured estimator's
  (for every algorithm, GRPO included): one per rollout, or one per token (B, T) for an estimator
  that works on tokens (REINFORCE++), which TRL's loss accepts as they are; tag each rollout with its
  global row so that per-rollout statistics survive TRL's shuffle and split into micro-batches.
- ``_get_per_token_logps_and_entropies`` (only when called from the loss): TRL has just computed
  each token's log-prob and entropy for the loss; add MSSR's shaping term to the advantages
  there, turning them into the (B, T) advantages the loss then reads, with no extra forward pass.
- ``_compute_loss``: add the reference code's sampled-token entropy bonus when configured; with
  one optimizer update per step, measure the step's KL to the reference from the loss's own forward
  pass (the policy is still the rollout policy there), then let the estimator update its tracker.

The value tracker's KL covers every rollout of the step and costs no extra forward pass: with
several updates per step TRL has already computed the rollout policy's log-probs of every rollout
at generation time (``old_per_token_logps``), and the tracker takes them there; with one update the
loss's forward pass is that same policy. Only with ``algo.kl_coef=0`` does the tracker need a pass
of its own, through a reference model kept for it alone (``algo.tracker.always_measure_kl``).
Generation runs with a neutral ``generation_config`` (``models.sampling``), so rollouts sample at
the configured temperature and top-p only, whatever the checkpoint's defaults.

Plus atomic checkpoints that also hold the estimator's state (the value tracker), a copy of the run
folder's config and metrics, and a manifest of sizes and hashes (``runs.checkpoints``); and, for a
collapse rollback (``training.rollback``), a resume that replaces the checkpoint's lr and RNG state.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from mssr_cli.algos.kl import rollout_kl
from mssr_cli.algos.shaping import entropy_shaping_term, sampled_token_entropy, shaping_cap_fraction
from mssr_cli.data.columns import row_images
from mssr_cli.rewards.functions import has_boxed
from mssr_cli.runs import checkpoints
from mssr_cli.runs.checkpoints import STATE_FILE
from mssr_cli.training.estimators import build_estimator
from mssr_cli.models.sampling import neutral_generation_config
# Multimodal tensors of a batch that a forward pass needs besides the token ids (TRL's names).
FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_tiles")
# Any non-zero beta makes TRL build and prepare the reference model; the loss then gets beta = 0 back.
TRACKER_ONLY_BETA = 1.0


class EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler with the same order, made a function of (seed, epoch) so that a resumed run
    sees it too. TRL's seeds one generator once and draws each epoch's permutation after the last, so a
    run resumed in epoch e would replay epoch 0's order; here ``set_epoch(e)`` (the Trainer calls it
    before every epoch) reseeds and replays the first e draws."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)  # the earlier epochs' draws
        return super().__iter__()


class RLTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages come from ``mssr_cli.algos``; see the module docstring."""

    def __init__(self, *args, algo_cfg, keep_checkpoints: int = 2, extra_state: dict | None = None,
                 run_dir: str | None = None, **kwargs):
        estimator = build_estimator(algo_cfg)
        grpo_config = kwargs["args"]
        # algo.kl_coef=0 drops TRL's reference model, but the tracker still reads the KL to it (the reference
        # code measures it whatever the coefficient): keep one for the tracker alone
        self._tracker_ref_only = (estimator.needs_kl and grpo_config.beta == 0.0
                                  and bool(algo_cfg.tracker.always_measure_kl))
        if self._tracker_ref_only:
            grpo_config.beta = TRACKER_ONLY_BETA
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._tracker_ref_only:
                grpo_config.beta = 0.0
        if self._tracker_ref_only:
            self.beta = 0.0  # no KL term in the loss, no TRL reference pass: the seam's own pass feeds the tracker
        self.keep_checkpoints = keep_checkpoints
        self.run_dir = run_dir  # its config and metrics are copied into each checkpoint
        self.estimator = estimator
        self.shaping = algo_cfg.shaping
        self.cross_modal_kl_coef = float(algo_cfg.cross_modal_kl_coef)
        self.cross_modal_kl_grad = bool(algo_cfg.cross_modal_kl_grad)
        # the reference code's bonus: -p log p of the sampled token, with its gradient (TRL's is the full entropy)
        self.sampled_entropy_coef = float(algo_cfg.entropy_coef) if algo_cfg.entropy_bonus == "sampled" else 0.0
        self._blank_row: torch.Tensor | None = None
        self._loss_logps: torch.Tensor | None = None
        # objects with state_dict()/load_state_dict() saved in each checkpoint (entropy baseline, detector)
        self.extra_state = dict(extra_state or {})
        self.last_step: dict = {}  # the latest step's ids, rewards and advantages (tests, debugging)
        self.completion_tokens = 0  # generated so far (train/tokens); saved in each checkpoint
        self.sample_count = 0  # rollouts of each step kept for samples.jsonl (0: none); set by the runner
        # train.on_collapse=rollback (set by the runner): the lr that replaces the one optimizer.pt and scheduler.pt
        # were saved with, the seed that replaces the checkpoint's RNG state, and checkpoint-0 kept for good
        self.rollback_lr: float | None = None
        self.reseed: int | None = None
        self.keep_initial_checkpoint = False
        self.healthy_before = None  # () -> the update step below which a checkpoint is healthy (kept); None: not kept
        # train.skip_nonfinite_updates (set by the runner): an update whose gradient norm is not finite is skipped
        self.skip_nonfinite = False
        self._skip_update = False  # the coming optimizer.step() is skipped (set by _get_grad_norm)
        self._samples: dict[int, dict] = {}  # global row -> the latest step's kept rollout
        self._loss_inputs: dict | None = None
        self._reset_step()

    # ---- one RL step's bookkeeping -------------------------------------------------------------

    def _reset_step(self) -> None:
        self._loss_calls = 0
        self._kl_pending = False  # the tracker still waits for this step's KL (one update per step: from the loss)
        self._kl_rows: list[torch.Tensor] = []  # global row of each on-policy rollout seen by the loss
        self._kl_values: list[torch.Tensor] = []  # its token-mean k3 KL to the reference
        if self.skip_nonfinite:
            self._metrics["train"]["train/skipped_updates"] = [0.0]  # this RL step's, logged with it
        self._stats = {"adv_sum": 0.0, "adv_abs_sum": 0.0, "adv_sq_sum": 0.0, "adv_max": float("-inf"),
                       "tokens": 0.0, "psi_sum": 0.0, "cap_tokens": 0.0,
                       "cross_modal_kl_sum": 0.0, "cross_modal_kl_calls": 0.0}

    # ---- non-finite gradients: skip the update, as the reference does -----------------------------

    def _get_grad_norm(self, model, grad_norm=None):
        """transformers calls this once per update, after clipping and before ``optimizer.step()``."""
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.skip_nonfinite and norm is not None and not torch.isfinite(torch.as_tensor(norm)).all():
            self._skip_update = True  # the guarded step below skips it
        return norm

    def create_optimizer(self, *args, **kwargs):
        """The optimizer, its ``step`` guarded: after a non-finite gradient norm it does nothing (no moment update,
        no weight decay: the reference's ``_optimizer_step``) and the step's ``train/skipped_updates`` grows.
        Under DeepSpeed the engine steps inside backward, before the norm is known: not guarded there."""
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.skip_nonfinite and not self.is_deepspeed_enabled:
            step = optimizer.step

            def guarded_step(*step_args, **step_kwargs):
                if not self._skip_update:
                    return step(*step_args, **step_kwargs)
                self._skip_update = False
                self._metrics["train"]["train/skipped_updates"] = [
                    self._metrics["train"].get("train/skipped_updates", [0.0])[-1] + 1.0]
                return None

            optimizer.step = guarded_step
        return optimizer

    @property
    def _loss_calls_per_step(self) -> int:
        return self.args.steps_per_generation * self.num_iterations

    # ---- rewards and advantages (once per RL step) ---------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather_object

        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # [N, F], N = all processes
        # gather_object keeps process order, as TRL's gather of the rewards does: ids[i] is row i
        self._batch_ids = gather_object([row["id"] for row in inputs])
        self._batch_rewards_per_func = rewards_per_func
        if self.model.training:  # train/format_rate: a boxed answer at all, whatever the reward functions are
            boxed = torch.tensor(has_boxed(completions), dtype=torch.float32, device=self.accelerator.device)  # [B]
            self._metrics["train"]["train/format_rate"] = [self.accelerator.gather(boxed).mean().item()]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        with neutral_generation_config(self.accelerator.unwrap_model(self.model)):
            output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        weights = self.reward_weights.to(self._batch_rewards_per_func.device)
        rewards = (self._batch_rewards_per_func * weights.unsqueeze(0)).nansum(dim=1).float().cpu()  # [N]
        mask = self._gathered_response_mask(output) if self.estimator.needs_token_mask else None  # [N, T_max]
        advantages, metrics = self.estimator.advantages(self._batch_ids, rewards, mask)  # [N] or [N, T_max]
        local = output["prompt_ids"].size(0)
        start = self.accelerator.process_index * local  # TRL's own process slice
        self.last_step = {"ids": list(self._batch_ids), "rewards": rewards, "advantages": advantages,
                          "trl_advantages": output["advantages"].detach().cpu().clone()}
        device = output["advantages"].device
        advantages = advantages[start : start + local]  # [B] or [B, T_max]
        if advantages.dim() == 2:  # per token: this process's completions are padded to its own longest
            advantages = advantages[:, : output["completion_ids"].size(1)]  # [B, T]
        output["advantages"] = advantages.to(device)
        output["mssr_row"] = torch.arange(start, start + local, device=device)  # [B], survives shuffling
        self._reset_step()
        for name, value in metrics.items():
            self._metrics["train"][name] = [value]
        # completion tokens generated so far, every process (mask_truncated_completions is never set: the mask
        # holds every generated token up to and including EOS): compare puts runs on an equal-cost axis
        generated = self.accelerator.gather(output["completion_mask"].sum().reshape(1)).sum().item()
        self.completion_tokens += int(generated)
        self._metrics["train"]["train/tokens"] = [float(self.completion_tokens)]
        self._keep_samples(inputs, output, rewards[start : start + local], advantages, start)
        self._start_tracker_step(output)
        return output

    def _gathered_response_mask(self, batch: dict) -> torch.Tensor:
        """[N, T_max] the response mask of every rollout of the step (every process, batch order, each padded
        to the longest completion of any process), for estimators that work on tokens."""
        mask = self._response_mask(batch).to(torch.int32)  # [B, T]
        mask = self.accelerator.pad_across_processes(mask, dim=1, pad_index=0)  # [B, T_max]
        return self.accelerator.gather(mask).cpu()  # [N, T_max]

    def _keep_samples(self, inputs: list[dict], output: dict, rewards: torch.Tensor, advantages: torch.Tensor,
                      start: int) -> None:
        """The first ``sample_count`` rollouts of this process's batch, decoded, for samples.jsonl; their
        entropy (mean over the completion's tokens) comes from the loss's forward pass."""
        self._samples = {}
        if not self.sample_count or not self.accelerator.is_main_process:
            return
        ids, mask = output["completion_ids"], output["completion_mask"]  # [B, T]
        if advantages.dim() == 2:  # per token: a sample shows its response's token mean
            valid = self._response_mask(output).to(advantages)  # [B, T]
            advantages = (advantages * valid).sum(1) / valid.sum(1).clamp(min=1)  # [B]
        for i in range(min(self.sample_count, ids.size(0))):
            tokens = ids[i][mask[i].bool()].tolist()
            self._samples[start + i] = {
                "id": inputs[i]["id"],
                "completion": self.processing_class.batch_decode([tokens], skip_special_tokens=True)[0],
                "reward": float(rewards[i]),
                "advantage": float(advantages[i]),
                "entropy": None,
                "image": row_images(inputs[i]),  # every image, for the W&B table; not written to samples.jsonl
            }

    def pop_samples(self) -> list[dict]:
        """The kept rollouts of the step just finished (then forgotten)."""
        samples, self._samples = list(self._samples.values()), {}
        return samples

    # ---- the value tracker's KL to the reference (once per RL step, every rollout) --------------

    def _start_tracker_step(self, batch: dict) -> None:
        """Update the tracker now when this step's KL is already known, else leave it to the loss."""
        if not self.estimator.needs_kl:
            self.estimator.finish_step(None)  # no tracker: nothing to measure
            return
        if self._tracker_ref_only:
            started = time.perf_counter()
            batch["ref_per_token_logps"] = self._reference_logps(batch)  # [B, T]; beta = 0: TRL's loss ignores it
            self._metrics["train"]["tracker/ref_pass_seconds"] = [time.perf_counter() - started]
        ref, old = batch.get("ref_per_token_logps"), batch.get("old_per_token_logps")
        if ref is None:  # kl_coef=0 with always_measure_kl=false: rho stays where the window leaves it
            self._finish_tracker_step(None)
        elif old is not None:  # several updates per step: TRL already has the rollout policy's log-probs
            per_rollout = rollout_kl(old, ref, self._response_mask(batch))  # [B]
            self._finish_tracker_step(self.accelerator.gather(per_rollout).cpu())  # [N], batch order
        else:  # one update per step: the loss's forward pass is the rollout policy; measure there
            self._kl_pending = True

    @staticmethod
    def _response_mask(batch: dict) -> torch.Tensor:
        """[B, T] the tokens TRL's loss trains on (completion, minus tool output)."""
        mask = batch["completion_mask"]
        return mask if "tool_mask" not in batch else mask * batch["tool_mask"]

    def _reference_logps(self, batch: dict) -> torch.Tensor:
        """[B, T] log-probs of the sampled tokens under the reference policy, for the tracker alone
        (``algo.kl_coef=0``): one no-grad forward pass, as TRL's own reference pass."""
        from trl.trainer.grpo_trainer import use_adapter

        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)  # [B, P + T]
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)  # [B, P + T]
        extra = {k: batch[k] for k in FORWARD_KEYS if k in batch}
        size = self.args.per_device_train_batch_size
        with torch.no_grad():
            if self.ref_model is not None:
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.ref_model, ids, attention, batch["completion_ids"].size(1), batch_size=size, **extra)
            else:  # PEFT: the base model with the adapters off (or the initial "ref" adapter), as TRL does
                model = self.accelerator.unwrap_model(self.model)
                with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                    logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, ids, attention, batch["completion_ids"].size(1), batch_size=size, **extra)
        return logps

    # ---- loss time: shaping, KL for the tracker, advantage statistics ---------------------------

    def _compute_loss(self, model, inputs):
        # TRL reuses a buffered micro-batch across num_iterations: shape a copy, never the buffer
        inputs = dict(inputs)
        self._loss_inputs = inputs
        try:
            loss = super()._compute_loss(model, inputs)
            if self.sampled_entropy_coef > 0:
                loss = loss - self.sampled_entropy_coef * self._sampled_entropy_bonus(inputs)
            if self.cross_modal_kl_coef > 0:
                kl = self._cross_modal_kl(model, inputs)
                loss = loss + self.cross_modal_kl_coef * (kl if self.cross_modal_kl_grad else kl.detach())
        finally:
            self._loss_inputs, self._loss_logps = None, None
        self._loss_calls += 1
        if self._kl_pending and self._loss_calls == self.args.gradient_accumulation_steps:  # the update's end
            self._finish_tracker_step(self._gathered_loss_kl())
        if self._loss_calls == self._loss_calls_per_step:
            self._publish_step_stats()
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        inputs = self._loss_inputs
        if inputs is not None and kwargs.get("compute_entropy"):  # the loss's own forward pass
            per_token_logps, entropies, _ = out
            self._loss_logps = per_token_logps  # [B, T], with grad: the cross-modal KL and sampled bonus need it
            if self._samples and entropies is not None:
                self._sample_entropies(inputs, entropies)
            inputs["advantages"] = self._shaped_advantages(inputs, per_token_logps, entropies)
            if self._kl_pending:
                self._record_kl(inputs, per_token_logps)
        return out

    def _sample_entropies(self, inputs: dict, entropies: torch.Tensor) -> None:
        """Mean token entropy of each kept rollout in this micro-batch, at its first forward pass."""
        mask = self._response_mask(inputs)  # [B, T]
        per_rollout = (entropies.detach() * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
        for row, value in zip(inputs["mssr_row"].tolist(), per_rollout.tolist(), strict=True):
            sample = self._samples.get(row)
            if sample is not None and sample["entropy"] is None:
                sample["entropy"] = value

    def _sampled_entropy_bonus(self, inputs: dict) -> torch.Tensor:
        """The reference code's entropy bonus: token mean over the micro-batch of -p log p of the sampled
        token under the current policy (with its gradient), scaled for gradient accumulation like TRL's."""
        mask = self._response_mask(inputs).float()  # [B, T]
        logps = self._loss_logps  # [B, T]
        entropy = -torch.exp(logps) * logps  # [B, T]
        return (entropy * mask).sum() / mask.sum().clamp(min=1.0) / self.current_gradient_accumulation_steps

    def _shaped_advantages(self, inputs: dict, per_token_logps: torch.Tensor, entropies: torch.Tensor) -> torch.Tensor:
        """(B, T) advantages the loss trains on: A broadcast to tokens, plus psi for MSSR (eq. psi_t)."""
        mask = self._response_mask(inputs).float()  # [B, T]
        adv = inputs["advantages"]
        adv = (adv.unsqueeze(1) if adv.dim() == 1 else adv).expand_as(per_token_logps)  # [B, T]
        stats = self._stats
        if self.shaping.enabled:
            if self.shaping.entropy == "sampled":
                # the reference code's -p log p of the sampled token, under the rollout policy
                rollout_logps = inputs.get("old_per_token_logps")
                rollout_logps = per_token_logps.detach() if rollout_logps is None else rollout_logps
                entropy = sampled_token_entropy(rollout_logps, mask)  # [B, T]
            else:
                entropy = entropies  # [B, T], full next-token entropy of the policy in this forward pass
            psi = entropy_shaping_term(adv, entropy, mask, self.shaping.alpha, self.shaping.kappa)  # [B, T]
            cap_frac = shaping_cap_fraction(adv, entropy, mask, self.shaping.alpha, self.shaping.kappa)
            stats["psi_sum"] += (psi * mask).sum().item()
            stats["cap_tokens"] += cap_frac * mask.sum().item()  # a count, so micro-batches add up
            adv = adv + psi
        adv = (adv * mask).detach()  # [B, T]
        stats["adv_sum"] += adv.sum().item()
        stats["adv_abs_sum"] += adv.abs().sum().item()
        stats["adv_sq_sum"] += (adv**2).sum().item()
        stats["tokens"] += mask.sum().item()
        if mask.any():
            stats["adv_max"] = max(stats["adv_max"], adv.abs()[mask.bool()].max().item())
        return adv

    def _blank_pixel_values(self, like: torch.Tensor) -> torch.Tensor:
        """pixel_values of blank (black) images with the same patch grids, for every image of every row (several
        per prompt too): every patch of a constant image is the same row, so one row from the model's own image
        processor, repeated."""
        if self._blank_row is None:
            from PIL import Image

            proc = self.processing_class.image_processor
            side = proc.patch_size * proc.merge_size
            pixels = proc(images=[Image.new("RGB", (side, side))], return_tensors="pt")["pixel_values"]
            self._blank_row = pixels[0]
        return self._blank_row.to(like).expand_as(like)

    def _cross_modal_kl(self, model, inputs: dict) -> torch.Tensor:
        """The cross_modal_kl ablation: KL(pi(.|text, image) || pi(.|text, blank image)), k3 estimate on
        the sampled tokens, token mean, scaled for gradient accumulation like TRL's entropy bonus.

        The blank-image pass is the one extra forward pass; it is an anchor (no gradient), like the
        reference model. (The paper's reference code computes this term under no_grad from old
        log-probs, so there it only shifts the logged loss; here it has a gradient.)"""
        mask = inputs["completion_mask"].float()  # [B, T]
        with torch.no_grad():
            blank_logps, _, _ = super()._get_per_token_logps_and_entropies(
                model,
                torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
                torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1),
                inputs["completion_ids"].size(1),
                pixel_values=self._blank_pixel_values(inputs["pixel_values"]),
                image_grid_thw=inputs.get("image_grid_thw"),
                num_images=inputs.get("num_images"),
                mm_token_type_ids=inputs.get("mm_token_type_ids"),
                token_type_ids=inputs.get("token_type_ids"),
            )  # [B, T]
        diff = blank_logps - self._loss_logps  # [B, T]
        k3 = torch.exp(diff) - diff - 1  # [B, T]
        kl = (k3 * mask).sum() / mask.sum().clamp(min=1.0)
        self._stats["cross_modal_kl_sum"] += kl.item()
        self._stats["cross_modal_kl_calls"] += 1
        return kl / self.current_gradient_accumulation_steps

    def _record_kl(self, inputs: dict, per_token_logps: torch.Tensor) -> None:
        """Token-mean k3 KL(pi || pi_ref) of each rollout of this micro-batch, from the loss's log-probs
        (one update per step: this is still the rollout policy), keyed by the rollout's global row."""
        per_rollout = rollout_kl(per_token_logps.detach(), inputs["ref_per_token_logps"], self._response_mask(inputs))
        self._kl_rows.append(inputs["mssr_row"].detach())
        self._kl_values.append(per_rollout)  # [B]

    def _gathered_loss_kl(self) -> torch.Tensor:
        """[N] the KL recorded by the loss for every rollout of the step, in batch order (NaN if unseen)."""
        rows = self.accelerator.gather(torch.cat(self._kl_rows)).cpu()  # [N] over processes
        values = self.accelerator.gather(torch.cat(self._kl_values)).cpu()  # [N]
        per_rollout = torch.full((len(self.last_step["ids"]),), float("nan"))
        per_rollout[rows] = values
        return per_rollout

    def _finish_tracker_step(self, per_rollout: torch.Tensor | None) -> None:
        """The step's one tracker update: KL = mean over every measured rollout of the step (the reference's
        token mean per rollout, then batch mean); per-prompt KL for schedules that read it."""
        self._kl_pending = False
        kl, prompt_kl = None, None
        if per_rollout is not None:
            measured = per_rollout[~torch.isnan(per_rollout)]
            kl = measured.mean().item() if measured.numel() else None
            prompt_kl = per_rollout if self.estimator.needs_prompt_kl else None
        metrics = self.estimator.finish_step(kl, prompt_kl)
        if kl is not None:
            metrics["tracker/kl"] = kl
        for name, value in metrics.items():
            self._metrics["train"][name] = [value]

    def _publish_step_stats(self) -> None:
        keys = ["adv_sum", "adv_abs_sum", "adv_sq_sum", "tokens", "psi_sum", "cap_tokens", "cross_modal_kl_sum",
                "cross_modal_kl_calls"]
        device = self.accelerator.device
        totals = self.accelerator.reduce(torch.tensor([self._stats[k] for k in keys], device=device), reduction="sum")
        total = dict(zip(keys, totals.tolist(), strict=True))
        peak = self.accelerator.gather(torch.tensor([self._stats["adv_max"]], device=device)).max().item()
        n = max(total["tokens"], 1.0)
        mean = total["adv_sum"] / n
        out = {
            "collapse/adv_abs_mean": total["adv_abs_sum"] / n,
            "collapse/adv_std": max(total["adv_sq_sum"] / n - mean**2, 0.0) ** 0.5,
            "collapse/adv_max": peak if peak != float("-inf") else 0.0,
        }
        if self.cross_modal_kl_coef > 0:
            out["collapse/cross_modal_kl"] = total["cross_modal_kl_sum"] / max(total["cross_modal_kl_calls"], 1.0)
        if self.shaping.enabled:
            out["collapse/shaping_mean"] = total["psi_sum"] / n
            out["collapse/shaping_cap_frac"] = total["cap_tokens"] / n
        for name, value in out.items():
            self._metrics["train"][name] = [value]

    # ---- the tracker warm start ----------------------------------------------------------------

    def warm_start_tracker(self, outcomes_by_id: dict) -> None:
        """Seed the value tracker with n0 outcomes per prompt (see ``tracker_warm_start``)."""
        tracker = getattr(self.estimator, "tracker", None)
        if tracker is not None and outcomes_by_id:
            ids = list(outcomes_by_id)
            tracker.warm_start(ids, [outcomes_by_id[i] for i in ids])

    # ---- checkpoints and resuming --------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if type(sampler) is not RepeatSampler:
            return sampler
        return EpochRepeatSampler(sampler.data_source, sampler.mini_repeat_count, sampler.batch_size,
                                  sampler.repeat_count, sampler.shuffle, sampler.seed)

    def _load_optimizer_and_scheduler(self, checkpoint):
        """After a collapse rollback the learning rate is the lowered one, not the one the checkpoint's
        optimizer.pt (param groups) and scheduler.pt (base_lrs) were saved with."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.rollback_lr is not None:
            set_learning_rate(self.optimizer, self.lr_scheduler, self.rollback_lr)

    def _load_rng_state(self, checkpoint):
        """A collapse rollback samples new data order and rollouts: the restored checkpoint's RNG state would
        draw the abandoned ones again."""
        super()._load_rng_state(checkpoint)
        if checkpoint is not None and self.reseed is not None:
            from transformers import set_seed

            set_seed(self.reseed)
            self.reseed = None

    def mssr_state(self) -> dict:
        return {"estimator": self.estimator.state_dict(), "completion_tokens": self.completion_tokens,
                **{name: obj.state_dict() for name, obj in self.extra_state.items()}}

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """The policy weights of a checkpoint, loaded through the model's own key mapping.

        transformers 5 writes checkpoints in the Hub's key layout (save_pretrained reverts its renamings:
        Qwen-VL's ``model.language_model.*`` is written as ``model.*``) but Trainer reloads them with a plain,
        non-strict ``load_state_dict``: every key but ``lm_head`` misses, and the run silently goes on from
        the base weights (huggingface/transformers#43701, #48805). ``from_pretrained`` maps the keys back;
        the strict copy fails loudly if anything is still left out."""
        target = self.model if model is None else model
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(target, "peft_config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # their own loaders
        dtypes = {p.dtype for p in target.parameters()}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32  # mixed (an fp32 head): no value is rounded
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded

    def load_mssr_state(self, checkpoint_dir: str) -> None:
        """Restore the estimator (tracker) and extra state saved beside a checkpoint.

        The checkpoint has verified against its manifest, which always lists this file: a missing or
        unreadable one is an error here, never a silently restarted tracker."""
        with open(os.path.join(checkpoint_dir, STATE_FILE)) as f:
            state = json.load(f)
        self.estimator.load_state_dict(state["estimator"])
        self.completion_tokens = int(state.get("completion_tokens", 0))
        for name, obj in self.extra_state.items():
            if name in state:
                obj.load_state_dict(state[name])

    def _save_checkpoint(self, model, trial):
        final_root = self.args.output_dir
        staging_root = os.path.join(final_root, ".staging")
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = os.path.join(staging_root, name)
        if self.args.should_save:  # one process clears a leftover, before any process writes into it
            shutil.rmtree(staged, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.args.output_dir = staging_root  # the parent writes into <output_dir>/checkpoint-N
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every process's part (its RNG state, ZeRO shards) is written
            if not self.args.should_save:
                return
            with open(os.path.join(staged, STATE_FILE), "w") as f:
                json.dump(self.mssr_state(), f)
            if self.run_dir is not None:
                checkpoints.copy_run_files(Path(self.run_dir), Path(staged))
            checkpoints.write_manifest(Path(staged))  # last: it vouches for everything above
        except OSError as err:  # disk full, quota, a vanished mount: the newest complete checkpoint stays
            if self.args.should_save:
                checkpoints.remove_tree(Path(staged))  # give the space back
            raise CheckpointWriteError(name, err, checkpoints.newest_verified(Path(final_root))[0]) from err
        finally:
            self.args.output_dir = final_root
        # one rename makes the checkpoint appear whole: a crash mid-save leaves only .staging behind
        target = os.path.join(final_root, name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staged, target)
        checkpoints.drop_old(Path(final_root), self.keep_checkpoints, keep_initial=self.keep_initial_checkpoint,
                             healthy_before=self.healthy_before() if self.healthy_before else None)


def set_learning_rate(optimizer, scheduler, lr: float) -> None:
    """Make ``lr`` the learning rate from now on: the scheduler's base, and each param group's current value
    (base x the schedule's factor at its step; 1 for the constant schedule mssr uses)."""
    groups = optimizer.param_groups
    scheduler = getattr(scheduler, "scheduler", scheduler)  # a wrapper (accelerate's) holds the torch scheduler
    lambdas = getattr(scheduler, "lr_lambdas", None)
    step = getattr(scheduler, "last_epoch", 0)
    current = [lr * f(step) for f in lambdas] if lambdas and len(lambdas) == len(groups) else [lr] * len(groups)
    for group, value in zip(groups, current, strict=True):
        group["lr"] = value
        group["initial_lr"] = lr
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr] * len(groups)
        scheduler._last_lr = list(current)  # what Trainer logs as the step's learning_rate, read before step()


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, ...): says which, why, and which complete one remains."""

    def __init__(self, name: str, cause: OSError, newest: Path | None):
        from mssr_cli.fileio import describe_os_error

        self.name, self.cause, self.newest = name, cause, newest
        kept = f"the newest complete checkpoint is {newest.name}" if newest else "no complete checkpoint was saved yet"
        super().__init__(cause.errno, f"writing {name} failed, {describe_os_error(cause)}; {kept}")
