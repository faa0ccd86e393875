"""RLOO and REINFORCE++ as algorithms: the paper recipe composes to the reference scripts' settings, and each
trains end to end on the embedded default through the seam, with the advantages of its pure function."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from mssr_cli.algos.advantages import outcome_token_rewards, reinforce_pp_advantages, rloo_advantages
from mssr_cli.config.compose import compose, steps_layout
from mssr_cli.training.runner import run_training
from mssr_cli.training.trl_args import grpo_args

# ruiiu/MSSR examples/3b_rloo.sh and 3b_reinforce.sh, both on examples/config.yaml (written out, not read back):
# rollout_batch_size 256 x rollout.n 8 (RLOO) / 2048 x 1 (REINFORCE++), actor global_batch_size 128 prompts
# (x rollout.n rollouts), max_grad_norm 1.0, rollout top_p 0.99, kl_coef 0.01 with use_kl_loss and low_var_kl
# (plain k3), gamma 1.0 (AlgorithmConfig's default), no entropy shaping, 150 steps.
SCRIPT = {  # algo -> dotted key -> value
    "rloo": {"algo.estimator": "rloo", "algo.rollouts_per_prompt": 8, "train.minibatch_size": 1024,
             "train.max_grad_norm": 1.0, "train.top_p": 0.99},
    "reinforce_pp": {"algo.estimator": "reinforce_pp", "algo.rollouts_per_prompt": 1, "train.minibatch_size": 128,
                     "train.max_grad_norm": 1.0, "train.top_p": 0.99},
}
SHARED = {  # config.yaml, both scripts (and the settings every paper run shares)
    "model.name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct", "data.hub_id": "Osilly/Vision-R1-rl",
    "data.train_split": "train", "data.val_split": "test", "data.max_prompt_tokens": 2048,
    "train.rollouts_per_step": 2048, "train.micro_batch_size": 32, "launcher.num_processes": 8,
    "train.max_steps": 150, "train.lr": 1e-6, "train.weight_decay": 0.01, "train.temperature": 1.0,
    "train.val_temperature": 0.6, "train.max_completion_length": 4096, "train.eval_every": 5, "train.save_every": 5,
    "train.keep_checkpoints": 3, "algo.kl_coef": 0.01, "algo.kl_bias_correction": False, "algo.gamma": 1.0,
    "algo.clip_low": 0.2, "algo.clip_high": 0.3, "algo.dual_clip": 3.0, "algo.entropy_coef": 0.0,
    "algo.shaping.enabled": False, "algo.loss_agg": "micro_token_mean", "algo.vllm_is_correction": False,
}
LAYOUT = {"rloo": {"prompts_per_step": 256, "updates_per_step": 2, "grad_accum": 32},
          "reinforce_pp": {"prompts_per_step": 2048, "updates_per_step": 16, "grad_accum": 4}}


@pytest.mark.parametrize("algo", sorted(SCRIPT))
def test_paper_3b_composes_to_the_reference_script(algo, tmp_path, monkeypatch):
    cfg = compose(["experiment=paper_3b", f"algo={algo}"])
    wrong = {k: (OmegaConf.select(cfg, k), v) for k, v in {**SHARED, **SCRIPT[algo]}.items()
             if OmegaConf.select(cfg, k) != v}
    assert not wrong, f"(composed, reference script): {wrong}"
    assert {k: steps_layout(cfg)[k] for k in LAYOUT[algo]} == LAYOUT[algo]
    monkeypatch.setenv("WORLD_SIZE", "8")  # the script's 8 GPUs: 4 rollouts per GPU per micro-batch
    monkeypatch.setattr("mssr_cli.training.trl_args.use_bf16", lambda flag: False)  # no bf16 on a CPU
    args = grpo_args(cfg, str(tmp_path))
    g, updates = SCRIPT[algo]["algo.rollouts_per_prompt"], LAYOUT[algo]["updates_per_step"]
    assert (args.num_generations, args.generation_batch_size, args.per_device_train_batch_size) == (g, 2048, 4)
    assert (args.gradient_accumulation_steps, args.max_steps) == (LAYOUT[algo]["grad_accum"], 150 * updates)
    assert (args.top_p, args.max_grad_norm, args.beta, args.use_bias_correction_kl) == (0.99, 1.0, 0.01, False)
    assert (args.loss_type, args.epsilon, args.epsilon_high, args.delta) == ("bnpo", 0.2, 0.3, 3.0)


def test_the_other_algorithms_keep_their_reference_top_p():
    """config.yaml (GRPO) samples at 0.99, config_mssr.yaml (MVSR, MSSR) at 1.0."""
    assert compose(["experiment=paper_3b", "algo=grpo"]).train.top_p == 0.99
    assert {compose(["experiment=paper_3b", f"algo={a}"]).train.top_p for a in ("mvsr", "mssr")} == {1.0}


# ---- end to end on the embedded default ------------------------------------------------------------

SHORT = ["train.max_steps=2", "train.eval_every=2", "train.rollouts_per_step=16", "data.val_limit=20",
         "train.save_every=0", "logging.progress=false", "logging.wandb=disabled"]


class StepSpy:
    """Records, per RL step, the seam's batch (rewards, advantages it installed) and what each loss call trained on."""

    def __init__(self, monkeypatch):
        from mssr_cli.training.trainer import RLTrainer

        self.steps, self.trained = [], []
        gen, shaped = RLTrainer._generate_and_score_completions, RLTrainer._shaped_advantages
        spy = self

        def _gen(self, inputs):
            out = gen(self, inputs)
            spy.steps.append({"out": out, **self.last_step})
            return out

        def _shaped(self, inputs, logps, entropies):
            result = shaped(self, inputs, logps, entropies)
            spy.trained.append({"rows": inputs["mssr_row"].clone(), "adv": result.clone(),
                                "mask": inputs["completion_mask"].clone()})
            return result

        monkeypatch.setattr(RLTrainer, "_generate_and_score_completions", _gen)
        monkeypatch.setattr(RLTrainer, "_shaped_advantages", _shaped)


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_trained(run, summary, extra_keys: tuple[str, ...]) -> list[dict]:
    """The run finished its steps and logged the reward, the collapse metrics and validation."""
    lines = _metrics(run)
    assert summary["steps"] == 2 and [m["step"] for m in lines] == [0, 1, 2]
    for m in lines[1:]:
        for key in ("train/reward", "collapse/entropy", "collapse/kl_ref", "collapse/grad_norm", "collapse/adv_abs_mean",
                    "collapse/adv_std", "collapse/adv_max", "collapse/adv_raw_abs_mean", *extra_keys):
            assert key in m, key
        assert not any(k.startswith(("tracker/", "collapse/shaping")) for k in m)  # no tracker, no shaping
    assert "val/accuracy" in lines[-1] and (run / "model").is_dir()
    assert any(m["collapse/adv_abs_mean"] > 0 for m in lines[1:]), "every advantage was zero"
    return lines


@pytest.mark.slow
def test_rloo_trains_on_the_leave_one_out_advantages(tmp_path, tiny_policy_path, monkeypatch):
    spy = StepSpy(monkeypatch)
    overrides = ["algo=rloo", *SHORT]
    summary = run_training(compose(overrides), overrides, tmp_path / "rloo")
    _assert_trained(tmp_path / "rloo", summary, ("grpo/zero_std_frac",))
    assert len(spy.steps) == 2
    for step in spy.steps:
        assert len(step["ids"]) == 16 and len(set(step["ids"])) == 2  # 2 prompts x G = 8
        torch.testing.assert_close(step["advantages"], rloo_advantages(step["rewards"], 8))
    step, trained = spy.steps[0], spy.trained[0]  # one update per step: the loss's first call is step 1
    expected = step["advantages"][trained["rows"]].unsqueeze(1) * trained["mask"]  # [B, T], one value per response
    torch.testing.assert_close(trained["adv"], expected.to(trained["adv"]))


@pytest.mark.slow
def test_reinforce_pp_trains_on_whitened_token_returns(tmp_path, tiny_policy_path, monkeypatch):
    """gamma 0.9: per-token advantages that vary within a response reach TRL's loss, row for row."""
    spy = StepSpy(monkeypatch)
    overrides = ["algo=reinforce_pp", "algo.gamma=0.9", *SHORT]
    summary = run_training(compose(overrides), overrides, tmp_path / "rpp")
    _assert_trained(tmp_path / "rpp", summary, ())
    assert len(spy.steps) == 2
    for step in spy.steps:
        mask = step["out"]["completion_mask"].cpu()  # [16, T], one process: the whole step
        assert len(step["ids"]) == len(set(step["ids"])) == 16  # one rollout per prompt
        tokens = outcome_token_rewards(step["rewards"], mask)
        torch.testing.assert_close(step["advantages"], reinforce_pp_advantages(tokens, mask, gamma=0.9))
    step, trained = spy.steps[0], spy.trained[0]
    expected = step["advantages"][trained["rows"]]  # [B, T] in the loss's (shuffled) row order
    torch.testing.assert_close(trained["adv"], expected.to(trained["adv"]))
    lengths = trained["mask"].sum(1)
    varying = [(trained["adv"][i, : int(n)].unique().numel() > 1) for i, n in enumerate(lengths) if n > 1]
    assert any(varying), "gamma < 1 must give different advantages along a response"


@pytest.mark.slow
def test_mssr_train_runs_reinforce_pp_from_the_command_line(tmp_path, tiny_policy_path):
    from distributed_runs import mssr

    run = tmp_path / "run"
    done = mssr("train", "algo=reinforce_pp", *SHORT, "--run-dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _assert_trained(run, json.loads((run / "summary.json").read_text()), ())
    assert json.loads((run / "summary.json").read_text())["algo"] == "reinforce_pp"
    # whitened over the step's tokens: unit (unbiased) spread whenever the rewards differ
    assert all(m["collapse/adv_std"] > 0.9 for m in lines[1:] if m["train/reward_std"] > 0)


@pytest.mark.slow
def test_reinforce_pp_on_two_processes_whitens_over_the_whole_step(tmp_path, tiny_policy_path):
    """Each process holds half of the step's rollouts; the whitening must see every rollout's tokens (the seam
    gathers the response masks) and each process must train on its own rows. Greedy rollouts (top_p -> 0, see
    test_multiprocess) make both layouts sample the same completions, so every metric must agree."""
    from distributed_runs import COMMON, metrics, mssr

    runs = {}
    for name, extra in {"one": [], "two": ["launcher=ddp", "launcher.num_processes=2", "launcher.main_process_port=0"]}.items():
        runs[name] = tmp_path / name
        done = mssr("train", "algo=reinforce_pp", *COMMON, *extra, "--run-dir", str(runs[name]))
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert [m["step"] for m in two] == [0, 1, 2, 3]
    assert any(m["collapse/adv_abs_mean"] > 0.1 for m in one[1:]), "the test needs a real learning signal"
    for x, y in zip(one, two, strict=True):
        for key in ("train/reward", "train/loss", "collapse/adv_abs_mean", "collapse/adv_std", "collapse/adv_max",
                    "collapse/adv_raw_abs_mean", "collapse/grad_norm", "collapse/kl_ref", "val/accuracy"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), (x["step"], key)
