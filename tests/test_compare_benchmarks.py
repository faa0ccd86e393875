"""`mssr compare` with eval results: accuracy per variant and benchmark, with the seed statistics (issue 21).

Run folders are written by hand (no training, no eval): metrics.jsonl, summary.json and config.yaml by
test_compare.write_run, and ``eval/summary.json`` as ``mssr eval --model <run>`` writes it
(evaluation/runner.py, run_eval). Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest
from test_compare import quiet, steps, write_run

from mssr_cli.reporting.compare import run_compare
from mssr_cli.reporting.runs import read_run
from mssr_cli.reporting.table import BENCHMARK_FIELDS, CSV_COLUMNS

# Per seed 0, 1, 2: accuracy on each benchmark. Written to eval/summary.json with mathvista first, so
# a table keyed by position rather than by name would swap the two sorted columns (mathverse < mathvista).
ACCURACY = {
    "grpo": {"mathvista": [0.50, 0.55, 0.60], "mathverse": [0.40, 0.50, 0.60]},
    "mssr": {"mathvista": [0.45, 0.55, 0.65], "mathverse": [0.50, 0.60, 0.70]},
}


def write_eval(run, accuracies: dict[str, float], items: dict[str, int] | None = None):
    """``<run>/eval/summary.json`` in run_eval's shape; ``items``: n per benchmark (default 100)."""
    items = items or {}
    benchmarks = {}
    for name, accuracy in accuracies.items():
        n = items.get(name, 100)
        benchmarks[name] = {"n": n, "correct": round(accuracy * n), "accuracy": accuracy, "seconds": 1.0,
                            "samples": f"samples_{name}.jsonl", "source": "local"}  # fmt: skip
    summary = {"model": str(run), "run": str(run), "backend": "hf", "limit": None,
               "mean_accuracy": statistics.fmean(accuracies.values()), "benchmarks": benchmarks}  # fmt: skip
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(json.dumps(summary, indent=2))


def build_study(root, evals: bool = True):
    """grpo (reference) and mssr, 3 seeds each; final val/accuracy 0.5 / 0.6 (the training metric)."""
    for variant, per_bench in ACCURACY.items():
        for seed in range(3):
            run = write_run(root / f"{variant}__s{seed}", algo=variant, seed=seed, rollouts_per_step=4, tokens_per_step=100,
                            val=steps(0.1, 0.5 if variant == "grpo" else 0.6))  # fmt: skip
            if evals:
                write_eval(run, {name: values[seed] for name, values in per_bench.items()})
    return root


def read_csv(path):
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, {r["variant"]: r for r in reader}


def numbers(record, *columns):
    return [float(record[c]) for c in columns]


def benchmark_tables(markdown: str) -> tuple[dict, dict]:
    """The Benchmarks section's two tables as {first cell: cells}: accuracy, then P(improvement)."""
    section = markdown.split("## Benchmarks", 1)[1]
    accuracy_part, improvement_part = section.split("P(improvement) over", 1)

    def rows(text):
        lines = [line for line in text.splitlines() if line.startswith("| ")]
        return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}

    return rows(accuracy_part), rows(improvement_part)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("bench") / "study")


@pytest.fixture(scope="module")
def compared(study):
    console = quiet()
    return run_compare([study], console=console), console.file.getvalue()


# ---- reading a run's eval results ---------------------------------------------------------------


def test_run_reads_its_eval_accuracies(study):
    warnings = []
    run = read_run(study / "mssr__s1", warnings)
    assert run.benchmarks == {"mathvista": 0.55, "mathverse": 0.60}
    assert run.benchmark_items == {"mathvista": 100, "mathverse": 100}
    assert warnings == []


def test_run_without_eval_has_no_benchmarks(tmp_path):
    run = read_run(write_run(tmp_path / "grpo__s0", algo="grpo", seed=0, rollouts_per_step=4, val=steps(0.1, 0.5)), [])
    assert run.benchmarks == {} and run.benchmark_items == {}


# ---- the statistics -----------------------------------------------------------------------------


def test_per_benchmark_statistics(compared):
    """mathverse: grpo [0.4, 0.5, 0.6] mean 0.5, CI [0.4, 0.6] (3 seeds: min-max);
                  mssr [0.5, 0.6, 0.7] mean 0.6, CI [0.5, 0.7];
                  P(mssr > grpo): 0.5 beats 0.4, ties 0.5 -> 1.5; 0.6 -> 1 + 1 + 0.5 = 2.5; 0.7 -> 3; 7 / 9.
    mathvista:    grpo [0.5, 0.55, 0.6] mean 0.55, CI [0.5, 0.6];
                  mssr [0.45, 0.55, 0.65] mean 0.55, CI [0.45, 0.65];
                  P: 0.45 -> 0; 0.55 -> 1 + 0.5 = 1.5; 0.65 -> 3; 4.5 / 9 = 0.5.
    average (both benchmarks common): grpo per seed 0.45, 0.525, 0.6 -> mean 0.525, CI [0.45, 0.6];
                  mssr per seed 0.475, 0.575, 0.675 -> mean 0.575, CI [0.475, 0.675];
                  P: 0.475 beats 0.45 -> 1; 0.575 beats 0.45, 0.525 -> 2; 0.675 -> 3; 6 / 9."""
    result, _ = compared
    assert result.benchmarks == ["mathverse", "mathvista", "average"]  # sorted by name, average last
    grpo, mssr = result.row("grpo").benchmarks, result.row("mssr").benchmarks
    assert list(grpo) == list(mssr) == result.benchmarks

    expected = {  # benchmark: (grpo mean, grpo CI, mssr mean, mssr CI, P(mssr over grpo))
        "mathverse": (0.5, (0.4, 0.6), 0.6, (0.5, 0.7), 7 / 9),
        "mathvista": (0.55, (0.5, 0.6), 0.55, (0.45, 0.65), 0.5),
        "average": (0.525, (0.45, 0.6), 0.575, (0.475, 0.675), 6 / 9),
    }
    for name, (ref_mean, ref_ci, mean, ci, p) in expected.items():
        assert grpo[name].seeds == mssr[name].seeds == 3
        assert grpo[name].mean == pytest.approx(ref_mean) and mssr[name].mean == pytest.approx(mean), name
        assert (grpo[name].ci95.low, grpo[name].ci95.high) == pytest.approx(ref_ci), name
        assert (mssr[name].ci95.low, mssr[name].ci95.high) == pytest.approx(ci), name
        assert mssr[name].prob_improvement == pytest.approx(p), name
        low, high = mssr[name].prob_improvement_ci95.low, mssr[name].prob_improvement_ci95.high
        assert 0 <= low <= p <= high <= 1
        # the reference is not compared with itself
        assert grpo[name].prob_improvement is None and grpo[name].prob_improvement_ci95 is None
    assert result.warnings == []  # 3 seeds each, every run evaluated on both: nothing to warn about


def test_csv_appends_columns_per_benchmark(compared):
    result, _ = compared
    header, records = read_csv(result.csv)
    added = [f"{name}_{f}" for name in ("mathverse", "mathvista", "average") for f in BENCHMARK_FIELDS]
    assert header == CSV_COLUMNS + added  # the existing columns first, in their order
    assert "mathverse_mean" in added and "average_prob_improvement" in added and "mathvista_ci95_low" in added
    mssr, grpo = records["mssr"], records["grpo"]
    assert numbers(mssr, "mathverse_mean", "mathverse_ci95_low", "mathverse_ci95_high", "mathverse_prob_improvement") \
        == pytest.approx([0.6, 0.5, 0.7, 7 / 9])  # fmt: skip
    assert numbers(mssr, "mathvista_mean", "mathvista_ci95_low", "mathvista_ci95_high", "mathvista_prob_improvement") \
        == pytest.approx([0.55, 0.45, 0.65, 0.5])  # fmt: skip
    assert numbers(mssr, "average_mean", "average_ci95_low", "average_ci95_high", "average_prob_improvement") \
        == pytest.approx([0.575, 0.475, 0.675, 6 / 9])  # fmt: skip
    low, high = numbers(mssr, "mathverse_prob_improvement_low", "mathverse_prob_improvement_high")
    assert low <= 7 / 9 <= high
    assert numbers(grpo, "mathverse_mean", "average_mean") == pytest.approx([0.5, 0.525])
    assert grpo["mathverse_prob_improvement"] == "" and grpo["average_prob_improvement_low"] == ""
    assert mssr["mathverse_seeds"] == grpo["average_seeds"] == "3"
    # the training metric's columns are still there, unchanged in meaning
    assert numbers(mssr, "final_mean", "prob_improvement") == pytest.approx([0.6, 1.0])


def test_markdown_has_the_benchmark_table(compared):
    result, printed = compared
    markdown = result.markdown.read_text()
    assert "## Benchmarks" in markdown
    assert "| variant | seeds | mathverse | mathvista | average |" in markdown
    accuracy, improvement = benchmark_tables(markdown)
    assert accuracy["grpo (ref)"] == ["3", "50.0% [40.0, 60.0]", "55.0% [50.0, 60.0]", "52.5% [45.0, 60.0]"]
    assert accuracy["mssr"] == ["3", "60.0% [50.0, 70.0]", "55.0% [45.0, 65.0]", "57.5% [47.5, 67.5]"]
    # P(improvement) over grpo: 7/9 = 0.78, 0.50, 6/9 = 0.67, each with its interval; the reference has no row
    assert list(improvement) == ["variant", "mssr"]
    assert [cell.split(" [")[0] for cell in improvement["mssr"]] == ["0.78", "0.50", "0.67"]
    assert all(cell.count("[") == 1 for cell in improvement["mssr"])
    assert "P(improvement) over grpo [95% CI]:" in markdown
    assert "average: per run the mean over mathverse, mathvista" in markdown
    # the console prints the benchmark table too
    assert "mssr compare: benchmarks" in printed and "57.5% [47.5, 67.5]" in printed and "P 0.78" in printed


# ---- without evals: as before -------------------------------------------------------------------


def test_without_evals_nothing_changes(tmp_path):
    """No eval/ folder anywhere: the CSV has exactly CSV_COLUMNS, compare.md no Benchmarks section; and the
    same runs with evals keep every existing column's value (the benchmark columns are only appended)."""
    plain = run_compare([build_study(tmp_path / "plain", evals=False)], console=quiet())
    header, records = read_csv(plain.csv)
    assert header == CSV_COLUMNS
    assert plain.benchmarks == [] and all(row.benchmarks == {} for row in plain.rows)
    markdown = plain.markdown.read_text()
    assert "## Benchmarks" not in markdown and "P(improvement) over grpo" not in markdown

    evaluated = run_compare([build_study(tmp_path / "evaluated")], console=quiet())
    _, with_evals = read_csv(evaluated.csv)
    for variant, record in records.items():
        assert {c: with_evals[variant][c] for c in CSV_COLUMNS} == record
    assert evaluated.markdown.read_text().split("## Benchmarks")[0].rstrip("\n") == markdown.rstrip("\n")


# ---- partial and damaged evals ------------------------------------------------------------------


def test_runs_evaluated_on_some_benchmarks(tmp_path):
    """grpo as in the study, but seed 0 scored mathverse on 50 items (an eval with --limit).
    mssr seeds 0 and 1 also have wemath (0.9, 0.8); seed 2 has not; mvsr (2 seeds) has no eval at all.

    Benchmarks: mathverse, mathvista, wemath; common to every evaluated run: mathverse, mathvista.
    wemath: mssr 2 seeds, mean 0.85, CI [0.8, 0.9] (2 seeds: min-max); no P (grpo has no wemath); grpo 0 seeds.
    average: over mathverse and mathvista only, so as in the study: mssr 0.575, P 6/9. (Over every
    benchmark a run has, mssr's would be mean((0.5 + 0.45 + 0.9) / 3, (0.6 + 0.55 + 0.8) / 3, 0.675) = 0.647.)
    mvsr: every cell empty, 0 seeds."""
    root = build_study(tmp_path / "study", evals=False)
    for variant, per_bench in ACCURACY.items():
        for seed in range(3):
            accuracies = {name: values[seed] for name, values in per_bench.items()}
            if variant == "mssr" and seed < 2:
                accuracies["wemath"] = [0.9, 0.8][seed]
            items = {"mathverse": 50} if (variant, seed) == ("grpo", 0) else None
            write_eval(root / f"{variant}__s{seed}", accuracies, items)
    for seed in range(2):
        write_run(root / f"mvsr__s{seed}", algo="mvsr", seed=seed, rollouts_per_step=4, val=steps(0.1, 0.4))

    result = run_compare([root], console=quiet())
    assert result.benchmarks == ["mathverse", "mathvista", "wemath", "average"]
    mssr, grpo, mvsr = (result.row(v).benchmarks for v in ("mssr", "grpo", "mvsr"))
    assert (mssr["wemath"].seeds, mssr["wemath"].mean) == (2, pytest.approx(0.85))
    assert (mssr["wemath"].ci95.low, mssr["wemath"].ci95.high) == pytest.approx((0.8, 0.9))
    assert mssr["wemath"].prob_improvement is None  # the reference was not evaluated on it
    assert (grpo["wemath"].seeds, grpo["wemath"].mean, grpo["wemath"].ci95) == (0, None, None)
    assert mssr["average"].mean == pytest.approx(0.575) and mssr["average"].prob_improvement == pytest.approx(6 / 9)
    assert grpo["average"].mean == pytest.approx(0.525)
    assert all(cell.seeds == 0 and cell.mean is None and cell.prob_improvement is None for cell in mvsr.values())

    _, records = read_csv(result.csv)
    assert records["mssr"]["wemath_seeds"] == "2" and float(records["mssr"]["wemath_mean"]) == pytest.approx(0.85)
    assert records["mssr"]["wemath_prob_improvement"] == "" and records["grpo"]["wemath_mean"] == ""
    assert records["mvsr"]["average_mean"] == "" and records["mvsr"]["average_seeds"] == "0"

    accuracy, improvement = benchmark_tables(result.markdown.read_text())
    assert accuracy["mssr"][3] == "85.0% [80.0, 90.0] (2/3 seeds)" and accuracy["grpo (ref)"][3] == "-"
    assert accuracy["mvsr"] == ["2", "-", "-", "-", "-"]
    assert improvement["mssr"][2] == "-" and improvement["mvsr"] == ["-", "-", "-", "-"]

    warnings = "\n".join(result.warnings)
    assert "2 runs have no eval results (eval/summary.json), in no benchmark column: mvsr__s0, mvsr__s1" in warnings
    assert "run mssr__s2 (mssr) was not evaluated on wemath" in warnings
    assert "the benchmark average is over mathverse, mathvista only" in warnings
    assert "benchmark mathverse was scored on different numbers of items (50, 100" in warnings
    assert "mathvista was scored on different" not in warnings


def test_evals_with_different_graders_are_a_warning(tmp_path):
    """One run evaluated with --grader mathruler among runs graded by math_verify (summaries without a grader
    predate --grader: math_verify). Alike, no warning."""
    root = build_study(tmp_path / "study")
    assert not [w for w in run_compare([root], console=quiet()).warnings if "graders" in w]
    entry = root / "mssr__s2" / "eval" / "summary.json"
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "grader": "mathruler"}))
    assert read_run(root / "mssr__s2", []).eval_grader == "mathruler"
    assert read_run(root / "mssr__s1", []).eval_grader == "math_verify"
    warnings = "\n".join(run_compare([root], console=quiet()).warnings)
    assert ("the runs' evals used different graders (math_verify: grpo__s0, grpo__s1, grpo__s2, mssr__s0, mssr__s1; "
            "mathruler: mssr__s2)") in warnings


def test_no_common_benchmark_means_no_average(tmp_path):
    """grpo evaluated on mathverse only, mssr on mathvista only: two columns, each with one variant; no average."""
    write_eval(write_run(tmp_path / "grpo__s0", algo="grpo", seed=0, rollouts_per_step=4, val=steps(0.1, 0.5)),
               {"mathverse": 0.5})  # fmt: skip
    write_eval(write_run(tmp_path / "mssr__s0", algo="mssr", seed=0, rollouts_per_step=4, val=steps(0.1, 0.6)),
               {"mathvista": 0.7})  # fmt: skip
    result = run_compare([tmp_path], console=quiet())
    assert result.benchmarks == ["mathverse", "mathvista"]
    assert "no benchmark is common to every evaluated run: no average column" in result.warnings
    header, _ = read_csv(result.csv)
    assert not [c for c in header if c.startswith("average_")]


def test_damaged_eval_summary_is_a_warning(tmp_path):
    """A cut eval/summary.json: that run has no benchmark numbers, a warning names the file, the compare
    goes on. An entry without an accuracy is skipped the same way; the run's other benchmarks count."""
    root = build_study(tmp_path / "study")
    (root / "mssr__s2" / "eval" / "summary.json").write_text('{"benchmarks": {"mathvista": {"n": 1')
    entry = root / "grpo__s1" / "eval" / "summary.json"
    data = json.loads(entry.read_text())
    data["benchmarks"]["mathverse"] = {"n": 100, "error": "crashed"}
    entry.write_text(json.dumps(data))

    console = quiet()
    result = run_compare([root], console=console)
    assert f"{root / 'mssr__s2' / 'eval' / 'summary.json'}: not valid JSON, the run's benchmark results are ignored" \
        in result.warnings  # fmt: skip
    assert f"{entry}: benchmark 'mathverse' has no accuracy, ignored" in result.warnings
    assert "not valid JSON" in console.file.getvalue()
    mssr, grpo = result.row("mssr").benchmarks, result.row("grpo").benchmarks
    # mssr: seeds 0 and 1 only: mathverse [0.5, 0.6] -> 0.55
    assert (mssr["mathverse"].seeds, mssr["mathverse"].mean) == (2, pytest.approx(0.55))
    # grpo: mathverse [0.4, 0.6] -> 0.5; average over mathvista alone now (seed 1 lacks mathverse): 0.55
    assert (grpo["mathverse"].seeds, grpo["mathverse"].mean) == (2, pytest.approx(0.5))
    assert grpo["average"].mean == pytest.approx(0.55)


@pytest.mark.parametrize("text", ["[1, 2]", '{"benchmarks": "none"}'])
def test_eval_summary_of_the_wrong_shape_is_a_warning(tmp_path, text):
    run = write_run(tmp_path / "grpo__s0", algo="grpo", seed=0, rollouts_per_step=4, val=steps(0.1, 0.5))
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(text)
    warnings = []
    assert read_run(run, warnings).benchmarks == {}
    assert warnings == [f"{run / 'eval' / 'summary.json'}: no 'benchmarks' table, the run's benchmark results are ignored"]


def test_a_copied_study_gives_the_same_table(study, tmp_path):
    """The intervals use a fixed bootstrap seed: the same runs give the same benchmark columns."""
    copy = tmp_path / "copy"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("compare.*", "*.png"))
    first = run_compare([study], out=tmp_path / "a", console=quiet())
    second = run_compare([copy], out=tmp_path / "b", console=quiet())
    assert first.csv.read_text() == second.csv.read_text()
