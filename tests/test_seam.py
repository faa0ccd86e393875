"""Through the seam: GRPO, MVSR and MSSR each run on TRL with our advantages, metrics and tracker state."""

from __future__ import annotations

import json

import pytest
import torch

from mssr_cli.config.compose import compose
from mssr_cli.training.runner import run_training
from mssr_cli.training.trainer import STATE_FILE, RLTrainer

pytestmark = pytest.mark.slow

SHORT = ["train.max_steps=2", "train.eval_every=2", "train.rollouts_per_step=16", "data.val_limit=40",
         "logging.progress=false", "logging.wandb=disabled"]


class Recorder:
    """Captures, per RL step, what the seam produced: the trainer, its batches and the loss inputs."""

    def __init__(self, monkeypatch):
        self.trainers, self.batches, self.loss_inputs, self.shaped = [], [], [], []
        init, gen = RLTrainer.__init__, RLTrainer._generate_and_score_completions
        loss, shaped = RLTrainer._compute_loss, RLTrainer._shaped_advantages
        rec = self

        def _init(self, *a, **k):
            init(self, *a, **k)
            rec.trainers.append(self)

        def _gen(self, inputs):
            out = gen(self, inputs)
            rec.batches.append({"out": out, **{k: v for k, v in self.last_step.items()}})
            return out

        def _loss(self, model, inputs):
            rec.loss_inputs.append(inputs)
            return loss(self, model, inputs)

        def _shaped(self, inputs, logps, entropies):
            result = shaped(self, inputs, logps, entropies)
            rec.shaped.append({"adv": inputs["advantages"].clone(), "entropy": entropies.detach().clone(),
                               "mask": inputs["completion_mask"].clone(), "result": result.clone()})
            return result

        monkeypatch.setattr(RLTrainer, "__init__", _init)
        monkeypatch.setattr(RLTrainer, "_generate_and_score_completions", _gen)
        monkeypatch.setattr(RLTrainer, "_compute_loss", _loss)
        monkeypatch.setattr(RLTrainer, "_shaped_advantages", _shaped)


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_grpo_advantages_equal_trls_own(tmp_path, tiny_policy_path, monkeypatch):
    rec = Recorder(monkeypatch)
    overrides = ["algo=grpo", "algo.rollouts_per_prompt=4", *SHORT, "train.save_every=0"]
    run_training(compose(overrides), overrides, tmp_path / "grpo")
    assert len(rec.batches) == 2
    for batch in rec.batches:
        # TRL computed its own advantages on the same rewards before the seam replaced them
        torch.testing.assert_close(batch["advantages"], batch["trl_advantages"], atol=1e-6, rtol=1e-5)
        assert len(batch["ids"]) == 16 and len(set(batch["ids"])) == 4  # 4 prompts x G = 4
    for line in _lines(tmp_path / "grpo")[1:]:
        assert "grpo/zero_std_frac" in line and "collapse/adv_raw_abs_mean" in line
        assert not any(k.startswith(("tracker/", "collapse/shaping")) for k in line)


@pytest.fixture(scope="module")
def mssr_run(tmp_path_factory, tiny_policy_path):
    """A 2-step MSSR run with a checkpoint every step, recorded through the seam."""
    mp = pytest.MonkeyPatch()
    rec = Recorder(mp)
    run = tmp_path_factory.mktemp("mssr") / "run"
    overrides = ["algo=mssr", *SHORT, "train.save_every=1"]
    try:
        summary = run_training(compose(overrides), overrides, run)
    finally:
        mp.undo()
    return rec, run, summary, overrides


def test_mssr_generates_exactly_one_rollout_per_prompt(mssr_run):
    rec, *_ = mssr_run
    for batch in rec.batches:
        assert len(batch["ids"]) == 16 and len(set(batch["ids"])) == 16
        assert batch["out"]["completion_ids"].shape[0] == 16


def test_the_loss_trains_on_our_token_level_advantages(mssr_run):
    from mssr_cli.algos.shaping import entropy_shaping_term

    rec, *_ = mssr_run
    assert rec.shaped, "the shaping hook never ran inside the loss"
    for call in rec.shaped:
        mask = call["mask"].float()
        adv = call["adv"].unsqueeze(1).expand_as(call["entropy"])
        expected = (adv + entropy_shaping_term(adv, call["entropy"], mask, 0.4, 2.0)) * mask
        assert call["result"].shape == call["entropy"].shape  # (B, T)
        torch.testing.assert_close(call["result"], expected)
    # some row gets different advantages on different tokens: shaping is per token
    assert any((c["result"].max(1).values - c["result"].min(1).values)[c["mask"].sum(1) > 1].abs().max() > 0
               for c in rec.shaped)

    # and TRL's loss reads them: the same micro-batch gives another loss with another shaping weight
    trainer, inputs = rec.trainers[0], rec.loss_inputs[0]
    losses = []
    for alpha in (0.0, 5.0):
        trainer.shaping.alpha = alpha
        with torch.no_grad():
            losses.append(trainer._compute_loss(trainer.model, inputs).item())
    trainer.shaping.alpha = 0.4
    assert losses[0] != pytest.approx(losses[1])


def test_every_trainable_parameter_changes(mssr_run, tiny_policy_path):
    from transformers import AutoModelForImageTextToText

    rec, run, *_ = mssr_run
    trained = AutoModelForImageTextToText.from_pretrained(run / "model")
    start = AutoModelForImageTextToText.from_pretrained(tiny_policy_path)
    names = [n for n, p in rec.trainers[0].model.named_parameters() if p.requires_grad]
    before, after = dict(start.named_parameters()), dict(trained.named_parameters())
    unchanged = [n for n in names if before[n].equal(after[n])]
    assert not unchanged, f"parameters RL did not update: {unchanged[:5]}"


def test_metrics_of_a_single_rollout_run(mssr_run):
    _, run, *_ = mssr_run
    needed = ["collapse/entropy", "collapse/entropy_ratio", "collapse/adv_raw_abs_mean", "collapse/adv_abs_mean",
              "collapse/adv_std", "collapse/adv_max", "collapse/shaping_mean", "collapse/shaping_cap_frac",
              "collapse/kl_ref", "collapse/clip_frac", "collapse/grad_norm", "collapse/alarm", "tracker/value_mean",
              "tracker/rho", "tracker/prompts", "train/format_rate", "train/reward", "train/accuracy"]
    for line in _lines(run)[1:]:
        missing = [k for k in needed if k not in line]
        assert not missing, missing
        assert "grpo/zero_std_frac" not in line
        assert 0.875 <= line["tracker/rho"] <= 0.96
        assert line["tracker/prompts"] == 1497  # the warm start seeded every training prompt
        assert 0 <= line["collapse/shaping_cap_frac"] <= 1 and line["collapse/shaping_mean"] >= 0


def test_checkpoint_then_reload_gives_the_same_tracker(mssr_run):
    from mssr_cli.training.estimators import build_estimator

    rec, run, _, overrides = mssr_run
    live = rec.trainers[0].estimator.tracker
    fresh = build_estimator(compose(overrides).algo)
    state = json.loads((run / "checkpoints" / "checkpoint-2" / STATE_FILE).read_text())
    fresh.load_state_dict(state["estimator"])
    ids = list(range(1497))
    torch.testing.assert_close(fresh.tracker.values(ids), live.values(ids), atol=0, rtol=0)
    for kl in (None, 0.0, 0.004, 0.02):
        assert fresh.tracker.rho_for_kl(kl) == live.rho_for_kl(kl)
    assert fresh.tracker.mean_kl == live.mean_kl
    assert "entropy_ratio" in state and "collapse_detector" in state


def test_resume_restores_the_tracker_instead_of_restarting_it(mssr_run, tmp_path):
    import shutil

    _, run, _, overrides = mssr_run
    copy = tmp_path / "again"
    shutil.copytree(run, copy)
    more = [*overrides, "train.max_steps=3"]  # a resume never warm-starts the tracker again
    run_training(compose(more), more, copy)
    lines = _lines(copy)
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    # without the restored state the tracker would know only this step's 16 prompts
    assert lines[-1]["tracker/prompts"] == 1497


def test_mvsr_runs_without_shaping_metrics(tmp_path, tiny_policy_path):
    overrides = ["algo=mvsr", *SHORT, "train.save_every=0", "algo.tracker.warm_start=false"]
    run_training(compose(overrides), overrides, tmp_path / "mvsr")
    for line in _lines(tmp_path / "mvsr")[1:]:
        assert "tracker/rho" in line and "collapse/adv_abs_mean" in line
        assert not any(k.startswith("collapse/shaping") for k in line)


def test_on_collapse_stop_checkpoints_and_says_why(tmp_path, tiny_policy_path, monkeypatch):
    from mssr_cli.training.collapse import Alarm, CollapseDetector

    original = CollapseDetector.observe

    def observe(self, line):  # a recorded alarm at step 2, whatever the metrics say
        alarms = original(self, line)
        if line.get("step") == 2:
            alarms = [*alarms, Alarm("format_collapse", 2, "format rate 0.1 < 0.5 for 3 steps", 0.1, 0.5)]
            self.alarms.append(alarms[-1])
        return alarms

    monkeypatch.setattr(CollapseDetector, "observe", observe)
    overrides = ["algo=mvsr", *SHORT, "train.max_steps=5", "train.save_every=0", "train.on_collapse=stop",
                 "algo.tracker.warm_start=false"]
    summary = run_training(compose(overrides), overrides, tmp_path / "stop")
    assert summary["steps"] == 2 and "format_collapse at step 2" in summary["stopped"]
    assert (tmp_path / "stop" / "checkpoints" / "checkpoint-2").is_dir()
    assert summary["collapse_alarms"][0]["rule"] == "format_collapse"


def test_blank_image_rows_are_what_the_processor_makes_of_a_black_image(mssr_run):
    from PIL import Image

    rec, *_ = mssr_run
    trainer, inputs = rec.trainers[0], rec.loss_inputs[0]
    black = trainer.processing_class.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    blank = trainer._blank_pixel_values(inputs["pixel_values"])
    assert blank.shape == inputs["pixel_values"].shape
    torch.testing.assert_close(blank[: black["pixel_values"].shape[0]], black["pixel_values"])


def test_cross_modal_kl_enters_the_loss(mssr_run):
    rec, *_ = mssr_run
    trainer, inputs = rec.trainers[0], rec.loss_inputs[0]
    losses = []
    for coef in (0.0, 1.0):
        trainer.cross_modal_kl_coef = coef
        with torch.no_grad():
            losses.append(trainer._compute_loss(trainer.model, inputs).item())
    trainer.cross_modal_kl_coef = 0.0
    # k3 >= 0 and the image matters to a trained policy: the KL term raises the loss
    assert losses[1] > losses[0]
