"""Ablations and sweeps: planning, sweep files, and the batch runner (skip finished, survive a failure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.experiments.ablate import plan, valid_variants
from mssr_cli.experiments.sweep import edge_values, expand, load_sweep, overrides_of

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def test_paper_comparison_is_the_default_plan():
    runs, base = plan([], None, seeds=2)
    assert base == "mssr"
    assert [r.name for r in runs] == ["mssr__s0", "no_shaping__s0", "grpo__s0", "mssr__s1", "no_shaping__s1", "grpo__s1"]
    cfgs = {r.name: compose(r.overrides) for r in runs}
    assert cfgs["grpo__s1"].algo.name == "grpo" and cfgs["grpo__s1"].seed == 1
    assert not cfgs["no_shaping__s0"].algo.shaping.enabled and cfgs["mssr__s0"].algo.shaping.enabled
    assert {c.train.rollouts_per_step for c in cfgs.values()} == {128}  # equal rollouts per step
    assert {c.logging.variant for c in cfgs.values()} == {"mssr", "no_shaping", "grpo"}


def test_base_overrides_reach_every_variant_but_grpo_keeps_its_algorithm():
    runs, base = plan(["algo=mvsr", "train.lr=5e-4"], ["grpo", "sampled_entropy"], seeds=1)
    cfgs = {r.name: compose(r.overrides) for r in runs}
    assert base == "mvsr"
    assert cfgs["grpo__s0"].algo.name == "grpo"  # the base's algo=mvsr does not override the variant
    assert {c.train.lr for c in cfgs.values()} == {5e-4}


def test_the_reference_codes_baselines_are_variants_that_keep_their_algorithm():
    runs, base = plan(["algo=mvsr", "train.lr=5e-4"], ["rloo", "reinforce_pp"], seeds=1)
    cfgs = {r.name: compose(r.overrides) for r in runs}
    assert [r.name for r in runs] == ["mvsr__s0", "rloo__s0", "reinforce_pp__s0"] and base == "mvsr"
    assert (cfgs["rloo__s0"].algo.estimator, cfgs["rloo__s0"].algo.rollouts_per_prompt) == ("rloo", 8)
    assert (cfgs["reinforce_pp__s0"].algo.estimator, cfgs["reinforce_pp__s0"].algo.rollouts_per_prompt) == ("reinforce_pp", 1)
    assert {c.train.rollouts_per_step for c in cfgs.values()} == {128}  # equal rollouts per step
    assert {c.train.lr for c in cfgs.values()} == {5e-4}


@pytest.mark.parametrize("bad,words", [(["nope"], ["nope", "no_shaping", "cross_modal_kl"]), ([], [])])
def test_unknown_variants_and_bad_seeds_are_refused(bad, words):
    with pytest.raises(ConfigError) as err:
        plan([], bad, seeds=1 if bad else 0)
    for w in words:
        assert w in str(err.value)
    assert set(valid_variants()) >= {"no_shaping", "entropy_loss", "cross_modal_kl", "no_clip_high",
                                      "per_prompt_rho", "sampled_entropy", "monotone_schedule", "grpo"}


def test_ablate_sets_seed_itself():
    with pytest.raises(ConfigError, match="--seeds"):
        plan(["seed=3"], None, seeds=1)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_value_of_every_sweep_file_composes(path):
    spec = load_sweep(path)
    assert spec["command"] == ["mssr", "train", "${args_no_hyphens}"]
    for params in edge_values(spec):
        compose(overrides_of(params))  # a typo in a sweep file fails here, not on a GPU


def test_the_shipped_sweeps_cover_shaping_lr_and_schedule():
    keys = set().union(*(load_sweep(p)["parameters"] for p in SWEEPS))
    assert {"algo.shaping.alpha", "algo.shaping.kappa", "train.lr", "algo.tracker.schedule"} <= keys


def test_grid_and_random_expansion(tmp_path):
    grid = {"method": "grid", "parameters": {"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}, "c": {"value": True}}}
    sets = expand(grid)
    assert len(sets) == 6 and sets[0] == {"a": 1, "b": "x", "c": True}
    assert overrides_of(sets[0]) == ["a=1", "b=x", "c=true"]
    rnd = {"method": "random", "run_cap": 50,
           "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                          "k": {"distribution": "int_uniform", "min": 1, "max": 3}}}
    draws = expand(rnd)
    assert len(draws) == 50 and all(1e-4 <= d["lr"] <= 1e-2 and d["k"] in (1, 2, 3) for d in draws)
    assert expand(rnd, max_runs=5) == draws[:5]  # seeded: the same draws every time
    with pytest.raises(ConfigError, match="bayes"):
        expand({"method": "bayes", "parameters": {}})


def test_bad_sweep_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {x: {values: [1]}}\ncommand: [python, train.py]\n")
    with pytest.raises(ConfigError, match="args_no_hyphens"):
        load_sweep(bad)
    bad.write_text("method: sideways\nparameters: {}\n")
    with pytest.raises(ConfigError, match="grid, random, bayes"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_batch_reports_a_failed_run_goes_on_and_skips_finished_ones(tmp_path, tiny_policy_path):
    from rich.console import Console

    from mssr_cli.experiments.batch import PlannedRun, run_batch

    short = ["train.max_steps=1", "train.rollouts_per_step=8", "train.eval_every=0", "train.save_every=0",
             "logging.wandb=disabled", "algo.tracker.warm_start=false"]
    runs = [PlannedRun("broken", [*short, "model.name_or_path=/no/such/model"], 1),
            PlannedRun("fine", short, 1)]
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)
    run_batch(runs, tmp_path / "batch", console)
    assert [r.status for r in runs] == ["failed", "done"]
    assert "exit" in runs[0].error and (tmp_path / "batch" / "broken" / "error.log").exists()
    assert json.loads((tmp_path / "batch" / "fine" / "summary.json").read_text())["steps"] == 1
    again = [PlannedRun("fine", short, 1)]
    run_batch(again, tmp_path / "batch", console)
    assert again[0].status == "skipped"


@pytest.mark.slow
def test_local_sweep_runs_two_parameter_sets_and_compares_them(tmp_path, tiny_policy_path):
    from rich.console import Console

    from mssr_cli.experiments.sweep import run_local_sweep

    sweep_file = Path(__file__).resolve().parents[1] / "sweeps" / "mssr_shaping.yaml"
    extra = ["train.max_steps=2", "train.rollouts_per_step=8", "train.eval_every=2", "train.save_every=0",
             "data.val_limit=20", "logging.wandb=disabled", "algo.tracker.warm_start=false"]
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)
    out = run_local_sweep(sweep_file, 2, tmp_path / "sweep", False, console, extra)
    runs = sorted(p.name for p in out.iterdir() if (p / "summary.json").exists())
    assert runs == ["000__kappa-1.5", "001__kappa-2"]
    cfg = compose(json.loads((out / runs[0] / "meta.json").read_text())["overrides"])
    assert (cfg.algo.shaping.alpha, cfg.algo.shaping.kappa, cfg.logging.variant) == (0.1, 1.5, "kappa=1.5")
    assert (out / "compare.csv").exists() and "kappa=2" in (out / "compare.md").read_text()
