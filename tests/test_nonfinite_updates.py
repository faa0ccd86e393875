"""`train.skip_nonfinite_updates` (on in the paper recipes): an update whose gradient norm is not finite is
skipped, as the reference's `_optimizer_step` does, counted as `train/skipped_updates`, and the `nonfinite`
collapse rule sees it. TRL steps anyway (the key off): the weights become NaN.

The gradients of one update are poisoned for real (a NaN in one parameter's gradient just before clipping), in
the first of the two updates of step 2, so the step's logged grad norm (its last update's) stays finite: only
the skip count shows what happened.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mssr_cli.config.compose import compose
from mssr_cli.training.collapse import CollapseDetector, CollapseRules
from mssr_cli.training.runner import run_training

SHORT = ["train.max_steps=2", "train.eval_every=0", "train.save_every=0", "train.rollouts_per_step=16",
         "train.minibatch_size=8", "train.micro_batch_size=8", "data.train_limit=64", "logging.progress=false",
         "logging.wandb=disabled", "algo.tracker.warm_start=false", "train.log_samples_every=0"]
POISONED_UPDATE = 3  # 2 updates per step: the first update of step 2


def _train_with_a_poisoned_update(tmp_path, skip: bool):
    from accelerate import Accelerator

    clip = Accelerator.clip_grad_norm_
    calls = []

    def poisoning_clip(self, parameters, *args, **kwargs):  # what the Trainer calls once per update
        parameters = list(parameters)
        calls.append(1)
        if len(calls) == POISONED_UPDATE:
            next(p for p in parameters if p.grad is not None).grad.view(-1)[0] = float("nan")
        return clip(self, parameters, *args, **kwargs)

    overrides = [*SHORT, f"train.skip_nonfinite_updates={str(skip).lower()}"]
    run = tmp_path / ("skip" if skip else "trl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Accelerator, "clip_grad_norm_", poisoning_clip)
        run_training(compose(overrides), overrides, run)
    assert len(calls) == 4, calls  # one clip per update: the poison hit the update it was meant for
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    weights = {k: v for f in (run / "model").glob("*.safetensors") for k, v in load_file(str(f)).items()}
    return lines, weights


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_nonfinite_gradient_norm_skips_the_update_and_alarms(tmp_path, tiny_policy_path):
    lines, weights = _train_with_a_poisoned_update(tmp_path, skip=True)
    steps = {line["step"]: line for line in lines}
    assert steps[1]["train/skipped_updates"] == 0 and steps[2]["train/skipped_updates"] == 1
    assert math.isfinite(steps[2]["collapse/grad_norm"])  # the step's last update was healthy
    assert all(torch.isfinite(w.float()).all() for w in weights.values()), "the skipped update left the weights whole"
    assert steps[2].get("collapse/alarm"), steps[2]  # the nonfinite rule saw the skip

    _, poisoned = _train_with_a_poisoned_update(tmp_path, skip=False)  # TRL's behaviour: it steps anyway
    assert not all(torch.isfinite(w.float()).all() for w in poisoned.values())


def test_the_nonfinite_rule_reads_the_skip_count():
    detector = CollapseDetector(CollapseRules())
    assert not detector.observe({"step": 1, "train/loss": 0.1, "collapse/grad_norm": 1.0, "train/skipped_updates": 0})
    (alarm,) = detector.observe({"step": 2, "train/loss": 0.1, "collapse/grad_norm": 1.0, "train/skipped_updates": 2})
    assert alarm.rule == "nonfinite" and "train/skipped_updates=2" in alarm.message


def test_the_paper_recipes_skip_and_the_embedded_default_steps_as_trl():
    assert compose(["experiment=paper_7b"]).train.skip_nonfinite_updates is True
    assert compose([]).train.skip_nonfinite_updates is False
