"""`mssr compare` on synthetic run folders whose answers are worked out by hand (no training)."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from mssr_cli.reporting.compare import CompareError, run_compare
from mssr_cli.reporting.runs import find_run_folders

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder,
    *,
    algo,
    seed,
    rollouts_per_step,
    val,
    variant=None,
    entropy_ratio=None,
    step_seconds=None,
    alarms=(),
    rollbacks=(),
    complete=True,
    last_line_cut=False,
    tokens_per_step=None,
    seconds_per_step=1.0,
):
    """A run folder as `mssr train` writes it. ``val``: {step: val/accuracy}; steps run 0..max(val)."""
    folder.mkdir(parents=True)
    max_step = max(val)
    config = {
        "seed": seed,
        "algo": {"name": algo},
        "train": {"rollouts_per_step": rollouts_per_step, "max_steps": max_step},
        "logging": {"variant": variant},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "meta.json").write_text(json.dumps({"command": ["mssr", "train"]}))
    entropy_ratio = entropy_ratio or {}
    step_seconds = step_seconds or {}
    lines = []
    for step in range(max_step + 1):
        line = {
            "step": step,
            "rollouts": step * rollouts_per_step,
            "time/elapsed": step * seconds_per_step,
            "train/reward": 0.5,
            "collapse/entropy": 1.0 - step / 100,
            "collapse/entropy_ratio": entropy_ratio.get(step, 1.0),
            "collapse/adv_abs_mean": 0.5 + step / 100,
            "train/response_length": 20.0 - step / 10,
            "collapse/alarm": 0,
        }
        if step > 0:
            line["time/step_seconds"] = step_seconds.get(step, 1.0)
            if tokens_per_step is not None:
                line["train/tokens"] = step * tokens_per_step
        if step in val:
            line["val/accuracy"] = val[step]
        lines.append(json.dumps(line))
    text = "\n".join(lines) + "\n"
    if last_line_cut:
        text += '{"step": 999, "val/accur'  # the process died mid-write
    (folder / "metrics.jsonl").write_text(text)
    if complete:
        finals = [val[s] for s in sorted(val)]
        summary = {
            "run": folder.name, "variant": variant or algo, "algo": algo, "model": "tiny", "data": "digits",
            "seed": seed, "rollouts": max_step * rollouts_per_step, "steps": max_step,
            "start_val_accuracy": finals[0], "final_val_accuracy": finals[-1], "best_val_accuracy": max(finals),
            "best_step": None, "wall_seconds": 1.0, "stopped": None,
            "collapse_alarms": [{"rule": r, "step": 5, "message": "m", "value": 0.1, "threshold": 0.2} for r in alarms],
            "rollbacks": [{"number": i + 1, "rule": rule, "alarm_step": alarm, "restored_step": restored}
                          for i, (rule, alarm, restored) in enumerate(rollbacks)],
        }  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def steps(*values, every=10):
    """{0: v0, 10: v1, 20: v2, ...}"""
    return {i * every: v for i, v in enumerate(values)}


def build_ablation(root):
    """Worked example.

    grpo (reference, 16 rollouts/step): both seeds end at 0.6, reached first at step 40
        -> target 0.6; reference needs 40 steps = 640 rollouts.
    mvsr (8 rollouts/step): both seeds first reach 0.6 at step 20 (160 rollouts)
        -> steps ratio 20/40 = 0.5; rollouts ratio 160/640 = 0.25.
        finals 0.7, 0.5 -> mean 0.6, sample std sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.141421.
        bests 0.7, 0.6 -> mean 0.65.
        lowest entropy ratios 0.8 (seed 0), 0.6 (seed 1) -> mean 0.7, worst 0.6 (seed 1).
        seed 1 raised an entropy_collapse alarm -> 1 run with alarms.
        step times: all 1.0 s but one 50 s step -> median 1.0 (the mean would be 1.6).
    mssr (8 rollouts/step): never above 0.55 -> never reaches the target (0/2).
    """
    for seed in (0, 1):
        write_run(root / f"grpo__s{seed}", algo="grpo", seed=seed, rollouts_per_step=16,
                  val=steps(0.1, 0.2, 0.3, 0.5, 0.6))  # fmt: skip
    write_run(root / "single" / "mvsr__s0", algo="mvsr", seed=0, rollouts_per_step=8,
              val=steps(0.1, 0.4, 0.6, 0.65, 0.7), entropy_ratio={7: 0.8}, step_seconds={3: 50.0})  # fmt: skip
    write_run(root / "single" / "mvsr__s1", algo="mvsr", seed=1, rollouts_per_step=8,
              val=steps(0.1, 0.5, 0.6, 0.6, 0.5), entropy_ratio={30: 0.6}, alarms=["entropy_collapse"])  # fmt: skip
    for seed in (0, 1):
        write_run(root / "single" / f"mssr__s{seed}", algo="mssr", seed=seed, rollouts_per_step=8,
                  val=steps(0.1, 0.3, 0.5, 0.55, 0.5))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """Shared by the tests below, which only read it (and write compare files into it)."""
    return build_ablation(tmp_path_factory.mktemp("runs") / "ablation")


@pytest.fixture(scope="module")
def compared(ablation):
    return run_compare([ablation], console=quiet())


def quiet():
    return Console(file=io.StringIO(), width=250)


def test_steps_and_rollouts_to_reference_target(compared):
    result = compared
    assert result.reference == "grpo"
    assert result.target == pytest.approx(0.6)
    assert [r.variant for r in result.rows] == ["grpo", "mssr", "mvsr"]  # reference first, then as found

    grpo, mvsr = result.row("grpo"), result.row("mvsr")
    assert (grpo.reached, grpo.steps_to_target, grpo.rollouts_to_target) == (2, 40, 640)
    assert grpo.steps_ratio == pytest.approx(1.0)
    assert (mvsr.reached, mvsr.steps_to_target, mvsr.rollouts_to_target) == (2, 20, 160)
    assert mvsr.steps_ratio == pytest.approx(0.5)
    assert mvsr.rollouts_ratio == pytest.approx(0.25)  # half the steps at half the rollouts per step


def test_spread_over_seeds(compared):
    mvsr = compared.row("mvsr")
    assert mvsr.seeds == 2
    assert mvsr.final.mean == pytest.approx(0.6)
    assert mvsr.final.std == pytest.approx(math.sqrt(0.02))
    assert (mvsr.final.min, mvsr.final.max) == (0.5, 0.7)
    assert mvsr.best.mean == pytest.approx(0.65)
    assert mvsr.entropy_ratio_lowest == pytest.approx(0.7)
    assert (mvsr.entropy_ratio_worst, mvsr.entropy_ratio_worst_run) == (0.6, "seed 1")
    assert (mvsr.runs_with_alarms, mvsr.alarm_rules) == (1, ["entropy_collapse"])
    assert mvsr.step_seconds_median == pytest.approx(1.0)
    assert mvsr.rollouts_per_step == 8
    # Seed statistics (tests/test_compare_stats.py has the rest): finals 0.7, 0.5 against grpo's 0.6, 0.6.
    assert (mvsr.final_ci95.low, mvsr.final_ci95.high) == pytest.approx((0.5, 0.7))  # 2 seeds: min-max
    assert mvsr.final_iqm == pytest.approx(0.6)  # below 4 seeds the IQM is the mean
    assert mvsr.prob_improvement == pytest.approx(0.5)  # 0.7 beats both 0.6s, 0.5 loses both: 2 / 4


def test_variant_that_never_reaches_the_target(compared):
    result = compared
    mssr = result.row("mssr")
    assert mssr.reached == 0
    assert mssr.steps_to_target is None and mssr.steps_ratio is None and mssr.rollouts_ratio is None
    text = result.markdown.read_text()
    assert "never (0/2)" in text


def test_some_seeds_reach_the_target(tmp_path):
    write_run(tmp_path / "g0", algo="grpo", seed=0, rollouts_per_step=4, val=steps(0.2, 0.4, 0.6))  # target 0.6 at 20
    write_run(tmp_path / "m0", algo="mssr", seed=0, rollouts_per_step=4, val=steps(0.2, 0.6, 0.7))  # at 10
    write_run(tmp_path / "m1", algo="mssr", seed=1, rollouts_per_step=4, val=steps(0.2, 0.3, 0.4))  # never
    result = run_compare([tmp_path], console=quiet())
    mssr = result.row("mssr")
    assert (mssr.reached, mssr.steps_to_target, mssr.steps_ratio) == (1, 10, 0.5)
    assert "10 (0.50x, 1/2 reached)" in result.markdown.read_text()


def test_reference_choice(ablation, tmp_path):
    # Explicit reference: mvsr ends at 0.6 on average; mvsr seed 0 reaches it at 20, seed 1 at 20.
    result = run_compare([ablation], reference="mvsr", out=tmp_path / "a", console=quiet())
    assert result.reference == "mvsr" and result.rows[0].variant == "mvsr"
    assert result.row("grpo").steps_ratio == pytest.approx(40 / 20)
    # Without grpo the first variant found (folders sorted by name) is the reference.
    result = run_compare([ablation / "single"], out=tmp_path / "b", console=quiet())
    assert result.reference == "mssr"


def test_unknown_reference_lists_the_variants(ablation, tmp_path):
    with pytest.raises(CompareError) as err:
        run_compare([ablation], reference="ppo", out=tmp_path / "out", console=quiet())
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "\n" not in message
    assert "'ppo'" in message and "grpo, mssr, mvsr" in message


def test_unknown_metric_is_an_error(ablation):
    with pytest.raises(CompareError, match="val/acc'.*val/accuracy"):
        run_compare([ablation], metric="val/acc", console=quiet())


def test_other_metric(ablation, tmp_path):
    # train/reward is 0.5 everywhere: every variant reaches the target at step 0.
    result = run_compare([ablation], metric="train/reward", out=tmp_path, console=quiet())
    assert result.target == pytest.approx(0.5)
    assert all(r.reached == r.seeds and r.steps_to_target == 0 for r in result.rows)
    assert (tmp_path / "train_reward_vs_steps.png").is_file()


def test_incomplete_run_and_folder_without_metrics(tmp_path):
    write_run(tmp_path / "grpo__s0", algo="grpo", seed=0, rollouts_per_step=4, val=steps(0.2, 0.4, 0.6))
    crashed = write_run(tmp_path / "crashed", algo="mssr", seed=0, rollouts_per_step=4, variant="no-shaping",
                        val=steps(0.2, 0.7), complete=False, last_line_cut=True)  # fmt: skip
    empty = tmp_path / "started_only"
    empty.mkdir()
    (empty / "meta.json").write_text("{}")
    console = quiet()
    result = run_compare([tmp_path], console=console)

    row = result.row("no-shaping")  # the variant comes from config.yaml when summary.json is missing
    assert row.incomplete == ["crashed"]
    assert (row.final.mean, row.reached, row.steps_to_target) == (0.7, 1, 10)
    assert [p.name for p in result.runs] == ["crashed", "grpo__s0"]
    assert any("started_only" in w and "metrics.jsonl" in w for w in result.warnings)
    assert any(str(crashed) in w and "line" in w for w in result.warnings)
    printed = console.file.getvalue()
    assert "(1 inc.)" in printed and "started_only" in printed
    assert "crashed" in result.markdown.read_text()


def test_discovery_run_folder_parent_and_dedupe(tmp_path):
    ablation = build_ablation(tmp_path / "ablation")
    one = ablation / "single" / "mvsr__s0"
    # Stray files inside a run (checkpoints, W&B) are not runs of their own.
    (one / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (one / "checkpoints" / "checkpoint-5" / "metrics.jsonl").write_text("")
    assert find_run_folders([one]) == [one]
    assert len(find_run_folders([ablation])) == 6
    assert len(find_run_folders([ablation, ablation / "single", one])) == 6
    with pytest.raises(CompareError, match="no run folders"):
        find_run_folders([_empty(ablation)])
    with pytest.raises(CompareError, match="not a folder"):
        find_run_folders([ablation / "missing"])


def _empty(root):
    path = root.parent / "empty"
    path.mkdir()
    return path


def test_files_written(compared, ablation):
    result = compared
    assert result.out == ablation  # one folder given: written into it
    assert result.markdown == ablation / "compare.md"

    text = result.markdown.read_text()
    assert "| variant | seeds |" in text
    assert "val/accuracy >= 0.600" in text and "Reference: grpo (2 seeds)" in text

    with result.csv.open(newline="") as f:
        records = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(records) == ["grpo", "mssr", "mvsr"]
    assert float(records["mvsr"]["steps_ratio"]) == pytest.approx(0.5)
    assert float(records["mvsr"]["rollouts_ratio"]) == pytest.approx(0.25)
    assert float(records["mvsr"]["final_std"]) == pytest.approx(math.sqrt(0.02))
    assert records["mssr"]["steps_to_target"] == "" and records["mssr"]["reached"] == "0"
    assert records["grpo"]["reference"] == "1" and float(records["grpo"]["target"]) == pytest.approx(0.6)

    names = sorted(p.name for p in result.plots)
    assert names == sorted([  # these runs predate train/tokens: no token plot (a warning says so)
        "val_accuracy_vs_steps.png", "val_accuracy_vs_rollouts.png", "val_accuracy_vs_seconds.png",
        "collapse_entropy_vs_steps.png", "collapse_adv_abs_mean_vs_steps.png", "train_response_length_vs_steps.png",
    ])  # fmt: skip
    for path in result.plots:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_default_out_with_several_paths_and_console_table(ablation, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    console = quiet()
    result = run_compare([ablation / "single", ablation / "grpo__s0"], console=console)
    assert result.out == work / "compare"
    assert (work / "compare" / "compare.csv").is_file()
    printed = console.file.getvalue()
    assert "grpo (ref)" in printed and "0.50x" in printed and "never (0/2)" in printed


def test_importing_compare_stays_light():
    code = (
        "import sys, mssr_cli.reporting.compare\n"
        "heavy = [m for m in ('mssr_cli.training', 'matplotlib', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_files_are_written_whole(tmp_path, monkeypatch):
    """compare.md, compare.csv and the plots go to a temporary name and are renamed into place: a failure
    while writing leaves the previous files whole and no partial one behind."""
    import os as _os

    root = build_ablation(tmp_path / "ablation")
    out = tmp_path / "out"
    run_compare([root], out=out, console=quiet())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert not [n for n in before if n.startswith(".")]
    real_replace = _os.replace

    def failing(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(_os, "replace", failing)
    with pytest.raises(OSError):
        run_compare([root], out=out, console=quiet())
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert {n: after[n] for n in before if n.endswith(".png")} == {n: b for n, b in before.items() if n.endswith(".png")}


def test_cost_to_target_in_tokens_and_seconds(tmp_path, monkeypatch):
    """Equal cost: the same target reached at the same step can cost very different tokens and time."""
    from mssr_cli.reporting import stats

    drawn, band = [], stats.band

    def spy(curves, interpolate=False):
        drawn.append((len(curves), interpolate))
        return band(curves, interpolate)

    monkeypatch.setattr(stats, "band", spy)
    root = tmp_path / "ablation"
    for seed in (0, 1):  # target 0.6 reached at step 3 by both seeds
        write_run(root / f"grpo__s{seed}", algo="grpo", seed=seed, rollouts_per_step=16,
                  val={0: 0.1, 1: 0.2, 2: 0.4, 3: 0.6, 4: 0.6}, tokens_per_step=1600, seconds_per_step=4.0)
    write_run(root / "mssr__s0", algo="mssr", seed=0, rollouts_per_step=2,  # reaches it at step 2
              val={0: 0.1, 1: 0.5, 2: 0.7, 3: 0.7, 4: 0.7}, tokens_per_step=100, seconds_per_step=0.5)
    write_run(root / "old__s0", algo="mvsr", variant="old", seed=0, rollouts_per_step=2,  # before train/tokens
              val={0: 0.1, 1: 0.6, 2: 0.6, 3: 0.6, 4: 0.6})
    out = tmp_path / "out"
    result = run_compare([root], out=out, console=quiet())
    grpo, mssr, old = result.row("grpo"), result.row("mssr"), result.row("old")
    assert (grpo.tokens_to_target, grpo.seconds_to_target) == (4800, 12.0)
    assert (mssr.steps_to_target, mssr.tokens_to_target, mssr.seconds_to_target) == (2, 200, 1.0)
    assert mssr.tokens_ratio == pytest.approx(200 / 4800) and mssr.seconds_ratio == pytest.approx(1 / 12)
    assert old.tokens_to_target is None and old.seconds_to_target == 1.0  # no tokens logged: unknown, not 0
    records = {r["variant"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert float(records["mssr"]["tokens_to_target"]) == 200 and float(records["mssr"]["seconds_ratio"]) == pytest.approx(1 / 12)
    assert records["old"]["tokens_to_target"] == ""
    markdown = (out / "compare.md").read_text()
    assert "tokens to target (vs ref)" in markdown and "| 200 (0.04x) |" in markdown
    names = {p.name for p in result.plots}
    assert {"val_accuracy_vs_tokens.png", "val_accuracy_vs_seconds.png"} <= names
    # the two GRPO seeds, drawn against steps, rollouts, tokens and seconds: the last two interpolated
    assert [i for n, i in drawn if n == 2][:4] == [False, False, True, True]


def test_rollbacks_count_as_alarms_with_the_steps_they_abandoned(tmp_path):
    """A rollback's alarm is not in collapse_alarms (the detector went back with the checkpoint): the compare
    counts it, and the extra steps are per seed (alarm step - restored step) summed, mean over seeds:
    seed 0: (142 - 130) + (175 - 100) = 87; seed 1: 0; seed 2: 198 - 190 = 8 -> 95 / 3 = 31.7."""
    for seed, rollbacks in enumerate([[("format_collapse", 142, 130), ("val_drop", 175, 100)], [],
                                      [("format_collapse", 198, 190)]]):
        write_run(tmp_path / f"rb__s{seed}", algo="mvsr", variant="rb", seed=seed, rollouts_per_step=8,
                  val=steps(0.1, 0.3), rollbacks=rollbacks)
    write_run(tmp_path / "grpo__s0", algo="grpo", seed=0, rollouts_per_step=8, val=steps(0.1, 0.2))
    result = run_compare([tmp_path], console=quiet())
    with result.csv.open(newline="") as f:
        records = {r["variant"]: r for r in csv.DictReader(f)}
    rb = records["rb"]
    assert (rb["runs_with_alarms"], rb["alarm_rules"]) == ("2", "format_collapse;val_drop")
    assert (rb["rollbacks"], rb["runs_with_rollbacks"]) == ("3", "2")
    assert float(rb["extra_steps_mean"]) == pytest.approx(95 / 3)
    assert records["grpo"]["rollbacks"] == "0" and records["grpo"]["extra_steps_mean"] == ""
    assert "3 rollbacks in 2 runs (+31.7 steps/run)" in result.markdown.read_text()


def test_a_given_target_replaces_the_references_final(ablation, tmp_path):
    """Worked example at --target 0.5: grpo first reaches it at step 30; mvsr at 20 (seed 0) and 10 (seed 1):
    15 steps, 0.5x; mssr at 20 in both seeds: 0.67x. At 0.1 every run starts there: the reference's cost is 0,
    so no ratio is printed (not "-x")."""
    result = run_compare([ablation], out=tmp_path / "t05", target=0.5, console=quiet())
    with result.csv.open(newline="") as f:
        records = {r["variant"]: r for r in csv.DictReader(f)}
    assert float(records["grpo"]["target"]) == 0.5 and records["grpo"]["steps_to_target"] == "30"
    assert records["mvsr"]["steps_to_target"] == "15" and float(records["mvsr"]["steps_ratio"]) == pytest.approx(0.5)
    assert float(records["mssr"]["steps_ratio"]) == pytest.approx(20 / 30)
    assert "val/accuracy >= 0.500, given with --target" in result.markdown.read_text()

    text = run_compare([ablation], out=tmp_path / "t01", target=0.1, console=quiet()).markdown.read_text()
    assert "-x" not in text and "| 0 | 0 |" in text
    with pytest.raises(CompareError, match="--target must be a finite number"):
        run_compare([ablation], out=tmp_path / "nan", target=float("nan"), console=quiet())


def test_the_cli_passes_target_through(ablation, tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()",
                          "compare", str(ablation), "--target", "0.5", "--out", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "given with --target" in (tmp_path / "cli" / "compare.md").read_text()
