"""The comparison as a rich table (console), a markdown table (compare.md) and a CSV (compare.csv).

With eval results, a second table: the variants' accuracy per benchmark (the paper's table), and
columns per benchmark appended to the CSV; without, both are exactly as before.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mssr_cli.reporting import stats
from mssr_cli.reporting.stats import Spread
from mssr_cli.reporting.variants import AVERAGE, BenchmarkCell, Comparison, VariantRow

CSV_COLUMNS = [
    "variant", "reference", "metric", "target", "seeds", "incomplete_runs", "rollouts_per_step",
    "final_mean", "final_std", "final_min", "final_max",
    "ci95_low", "ci95_high", "iqm", "prob_improvement", "prob_improvement_low", "prob_improvement_high",
    "best_mean", "best_std", "best_min", "best_max",
    "reached", "steps_to_target", "steps_ratio", "rollouts_to_target", "rollouts_ratio",
    "tokens_to_target", "tokens_ratio", "seconds_to_target", "seconds_ratio",
    "entropy_ratio_lowest_mean", "entropy_ratio_lowest_worst", "entropy_ratio_worst_run",
    "runs_with_alarms", "alarm_rules", "rollbacks", "runs_with_rollbacks", "extra_steps_mean", "step_seconds_median",
]  # fmt: skip


# Appended per benchmark column (and AVERAGE) as ``<benchmark>_<field>``, after CSV_COLUMNS.
BENCHMARK_FIELDS = (
    "mean", "ci95_low", "ci95_high", "prob_improvement", "prob_improvement_low", "prob_improvement_high", "seeds",
)  # fmt: skip


def csv_columns(cmp: Comparison) -> list[str]:
    """CSV_COLUMNS, then ``<benchmark>_<field>`` per benchmark column: none without eval results, so the
    file of a comparison without evals keeps its columns."""
    return CSV_COLUMNS + [f"{name}_{f}" for name in cmp.benchmarks for f in BENCHMARK_FIELDS]


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    """Steps and rollouts: whole numbers unless a mean over seeds makes them fractional."""
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _spread(s: Spread | None, sep: str) -> str:
    if s is None:
        return "-"
    if s.std is None:  # one seed
        return _num(s.mean)
    return f"{_num(s.mean)} ± {_num(s.std)}{sep}({_num(s.min)}–{_num(s.max)})"


def _interval(ci: stats.Interval | None, digits: int, sep: str) -> str:
    return "-" if ci is None else f"[{_num(ci.low, digits)},{sep}{_num(ci.high, digits)}]"


def _improvement(row: VariantRow, sep: str) -> str:
    if row.prob_improvement is None:
        return "-"
    text = _num(row.prob_improvement, 2)
    return text if row.prob_improvement_ci95 is None else f"{text}{sep}{_interval(row.prob_improvement_ci95, 2, sep)}"


def _to_target(row: VariantRow, value: float | None, ratio: float | None, sep: str) -> str:
    if row.reached == 0:
        return f"never (0/{row.seeds})"
    notes = [] if row.is_reference or ratio is None else [f"{_num(ratio, 2)}x"]  # None: the reference's cost was 0
    if row.reached < row.seeds:
        notes.append(f"{row.reached}/{row.seeds} reached")
    return _count(value) + (f"{sep}({', '.join(notes)})" if notes else "")


def _entropy(row: VariantRow, sep: str) -> str:
    if row.entropy_ratio_lowest is None:
        return "-"
    if row.seeds == 1:
        return _num(row.entropy_ratio_lowest, 2)
    worst = f"worst {_num(row.entropy_ratio_worst, 2)}"
    if sep == "\n":
        return f"{_num(row.entropy_ratio_lowest, 2)}\n{worst}\n({row.entropy_ratio_worst_run})"
    return f"{_num(row.entropy_ratio_lowest, 2)} ({worst}, {row.entropy_ratio_worst_run})"


def _alarms(row: VariantRow, sep: str) -> str:
    text = f"{row.runs_with_alarms}/{row.seeds}"
    text += f":{sep}{', '.join(row.alarm_rules)}" if row.alarm_rules else ""
    if row.rollbacks:  # train.on_collapse=rollback: what it did, and the steps it threw away
        text += (f";{sep}{row.rollbacks} rollback{'s' if row.rollbacks > 1 else ''} in {row.runs_with_rollbacks} "
                 f"run{'s' if row.runs_with_rollbacks > 1 else ''} (+{_count(row.extra_steps)} steps/run)")
    return text


def headers(cmp: Comparison) -> list[str]:
    return [
        "variant", "seeds",
        f"final {cmp.metric} mean ± std (min–max)", "final 95% CI", "final IQM", "P(improvement) over ref [95% CI]",
        f"best {cmp.metric} mean ± std (min–max)",
        "steps to target (vs ref)", "rollouts to target (vs ref)", "tokens to target (vs ref)",
        "seconds to target (vs ref)",
        "lowest entropy ratio (mean, worst seed)", "runs with alarms", "s/step (median)",
    ]  # fmt: skip


# The console is narrow: short headers, and the caption says what they mean.
SHORT_HEADERS = [
    "variant", "seeds", "final", "95% CI", "IQM", "P(impr.)", "best", "steps to\ntarget", "rollouts\nto target", "tokens\nto target", "seconds\nto target",
    "min\nentropy\nratio", "runs with\nalarms", "s/step",
]  # fmt: skip
CONSOLE_LEGEND = (
    "final, best: mean ± std over seeds (min–max); 95% CI: bootstrap interval of the mean final value; "
    "IQM: interquartile mean of the final values; P(impr.): chance that a seed ends above a reference seed "
    "(ties half) [95% CI]; (0.50x): ratio to the reference; "
    "min entropy ratio: lowest collapse/entropy_ratio, mean over seeds (worst seed); runs with alarms: with the "
    "collapse rollbacks and the steps they abandoned, mean over seeds; s/step: median; "
    "inc.: incomplete runs (no summary.json)."
)


def cells(row: VariantRow, sep: str = " ") -> list[str]:
    """One table row; ``sep`` splits long cells over lines (a newline on the console, a space in markdown)."""
    incomplete = "inc." if sep == "\n" else "incomplete"  # the console legend says what inc. means
    seeds = str(row.seeds) + (f"{sep}({len(row.incomplete)} {incomplete})" if row.incomplete else "")
    return [
        row.variant + (" (ref)" if row.is_reference else ""),
        seeds,
        _spread(row.final, sep),
        _interval(row.final_ci95, 3, sep),
        _num(row.final_iqm),
        _improvement(row, sep),
        _spread(row.best, sep),
        _to_target(row, row.steps_to_target, row.steps_ratio, sep),
        _to_target(row, row.rollouts_to_target, row.rollouts_ratio, sep),
        _to_target(row, row.tokens_to_target, row.tokens_ratio, sep),
        _to_target(row, row.seconds_to_target, row.seconds_ratio, sep),
        _entropy(row, sep),
        _alarms(row, sep),
        _num(row.step_seconds_median, 2),
    ]


def target_line(cmp: Comparison) -> str:
    """One line: what the reference and the target are."""
    ref = cmp.groups[cmp.reference]
    if cmp.target is None:
        return f"Reference: {cmp.reference} ({len(ref)} seeds), which logged no {cmp.metric}: no target."
    what = "given with --target" if cmp.target_given else "the reference's final value (mean over its seeds)"
    return (
        f"Reference: {cmp.reference} ({len(ref)} seeds); target: {cmp.metric} >= {cmp.target:.3f}, {what}; "
        f"steps/rollouts/tokens/seconds to target: per seed the first step reaching it, mean over the seeds that did."
    )


STATS_LINE = (
    f"Over seeds' final values: 95% CI: percentile bootstrap of the mean ({stats.BOOTSTRAP_RESAMPLES} resamples, "
    f"fixed seed; none below 2 seeds); IQM: mean of the middle 50% (25% trimmed each end; the mean below 4 seeds); "
    f"P(improvement): P(X > Y) + 0.5 P(X = Y), X a seed of the variant, Y one of the reference (Agarwal et al. 2021), "
    f"with its bootstrap 95% CI."
)


def rich_table(cmp: Comparison):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"mssr compare: {cmp.metric}", caption=f"{target_line(cmp)}\n{CONSOLE_LEGEND}", caption_justify="left")
    for i, header in enumerate(SHORT_HEADERS):
        # Variant names stay whole; numbers fold rather than being cut with an ellipsis.
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0, overflow="fold")
    for row in cmp.rows:
        table.add_row(*(Text(c) for c in cells(row, sep="\n")), style="bold" if row.is_reference else None)
    return table


def _percent(cell: BenchmarkCell, seeds: int) -> str:
    """``58.6% [55.1, 61.0]``: mean accuracy and its interval in percent; the seeds when fewer than the variant's."""
    if cell.mean is None:
        return "-"
    text = f"{100 * cell.mean:.1f}%"
    if cell.ci95 is not None:
        text += f" [{100 * cell.ci95.low:.1f}, {100 * cell.ci95.high:.1f}]"
    return text + (f" ({cell.seeds}/{seeds} seeds)" if cell.seeds < seeds else "")


def _cell_improvement(cell: BenchmarkCell) -> str:
    if cell.prob_improvement is None:
        return "-"
    text = _num(cell.prob_improvement, 2)
    return text if cell.prob_improvement_ci95 is None else f"{text} {_interval(cell.prob_improvement_ci95, 2, ' ')}"


def benchmark_line(cmp: Comparison) -> str:
    """What the benchmark cells are (they are not the training metric)."""
    average = (f"; {AVERAGE}: per run the mean over {', '.join(cmp.average_over)} (the benchmarks every evaluated "
               f"run has), then over seeds" if cmp.average_over else "")  # fmt: skip
    return (f"Accuracy from each run's eval/summary.json: mean over the seeds evaluated on the benchmark "
            f"[95% CI of the mean], in %{average}. P(improvement) as above, on the benchmark's accuracies.")  # fmt: skip


def _md_row(items) -> str:
    return "| " + " | ".join(str(i).replace("|", "\\|") for i in items) + " |"


def _md_rule(columns: int) -> str:
    return "|" + "|".join(["---"] + ["---:"] * (columns - 1)) + "|"


def benchmark_markdown(cmp: Comparison) -> list[str]:
    """The Benchmarks section: accuracy per variant and benchmark, then P(improvement) over the reference
    (a table of its own: two numbers with two intervals in one cell would not be readable)."""
    if not cmp.benchmarks:
        return []
    lines = ["", "## Benchmarks", "", _md_row(["variant", "seeds", *cmp.benchmarks]), _md_rule(len(cmp.benchmarks) + 2)]
    lines += [_md_row([row.variant + (" (ref)" if row.is_reference else ""), row.seeds,
                       *(_percent(row.benchmarks[name], row.seeds) for name in cmp.benchmarks)])
              for row in cmp.rows]  # fmt: skip
    others = [row for row in cmp.rows if not row.is_reference]
    if others:
        lines += ["", f"P(improvement) over {cmp.reference} [95% CI]:", "",
                  _md_row(["variant", *cmp.benchmarks]), _md_rule(len(cmp.benchmarks) + 1)]  # fmt: skip
        lines += [_md_row([row.variant, *(_cell_improvement(row.benchmarks[name]) for name in cmp.benchmarks)])
                  for row in others]  # fmt: skip
    return lines + ["", benchmark_line(cmp)]


def benchmark_rich_table(cmp: Comparison):
    """The console's benchmark table: per cell the accuracy [95% CI] and, under it, P(improvement)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="mssr compare: benchmarks", caption=benchmark_line(cmp), caption_justify="left")
    table.add_column("variant", no_wrap=True)
    for name in cmp.benchmarks:
        table.add_column(name, justify="right", overflow="fold")
    for row in cmp.rows:
        items = [_percent(row.benchmarks[name], row.seeds)
                 + ("" if row.is_reference else f"\nP {_cell_improvement(row.benchmarks[name])}")
                 for name in cmp.benchmarks]  # fmt: skip
        variant = row.variant + (" (ref)" if row.is_reference else "")
        table.add_row(Text(variant), *(Text(c) for c in items), style="bold" if row.is_reference else None)
    return table


def markdown(cmp: Comparison, notes: list[str] = ()) -> str:
    head = headers(cmp)
    lines = [f"# mssr compare: {cmp.metric}", "", _md_row(head), _md_rule(len(head))]
    lines += [_md_row(cells(row)) for row in cmp.rows]
    lines += ["", target_line(cmp), "", STATS_LINE]
    incomplete = [name for row in cmp.rows for name in row.incomplete]
    if incomplete:
        lines += ["", f"Incomplete runs (no summary.json; read from metrics.jsonl): {', '.join(incomplete)}."]
    lines += benchmark_markdown(cmp)
    lines += [""] + [f"- {note}" for note in notes] + ([""] if notes else [])
    return "\n".join(lines).rstrip("\n") + "\n"


def csv_records(cmp: Comparison) -> list[dict]:
    def spread_fields(prefix: str, s: Spread | None) -> dict:
        return {f"{prefix}_{k}": (getattr(s, k) if s is not None else None) for k in ("mean", "std", "min", "max")}

    def interval_fields(prefix: str, ci: stats.Interval | None) -> dict:
        return {f"{prefix}_low": ci.low if ci else None, f"{prefix}_high": ci.high if ci else None}

    records = []
    for row in cmp.rows:
        records.append({
            "variant": row.variant,
            "reference": int(row.is_reference),
            "metric": cmp.metric,
            "target": cmp.target,
            "seeds": row.seeds,
            "incomplete_runs": len(row.incomplete),
            "rollouts_per_step": row.rollouts_per_step,
            **spread_fields("final", row.final),
            **interval_fields("ci95", row.final_ci95),
            "iqm": row.final_iqm,
            "prob_improvement": row.prob_improvement,
            **interval_fields("prob_improvement", row.prob_improvement_ci95),
            **spread_fields("best", row.best),
            "reached": row.reached,
            "steps_to_target": row.steps_to_target,
            "steps_ratio": row.steps_ratio,
            "rollouts_to_target": row.rollouts_to_target,
            "rollouts_ratio": row.rollouts_ratio,
            "tokens_to_target": row.tokens_to_target,
            "tokens_ratio": row.tokens_ratio,
            "seconds_to_target": row.seconds_to_target,
            "seconds_ratio": row.seconds_ratio,
            "entropy_ratio_lowest_mean": row.entropy_ratio_lowest,
            "entropy_ratio_lowest_worst": row.entropy_ratio_worst,
            "entropy_ratio_worst_run": row.entropy_ratio_worst_run,
            "runs_with_alarms": row.runs_with_alarms,
            "alarm_rules": ";".join(row.alarm_rules),
            "rollbacks": row.rollbacks,
            "runs_with_rollbacks": row.runs_with_rollbacks,
            "extra_steps_mean": row.extra_steps,
            "step_seconds_median": row.step_seconds_median,
            **_benchmark_fields(row, cmp.benchmarks),
        })  # fmt: skip
    return records


def _benchmark_fields(row: VariantRow, names: list[str]) -> dict:
    """``<benchmark>_<field>`` for each of BENCHMARK_FIELDS, keyed by the benchmark's name (not its position)."""
    out = {}
    for name in names:
        cell = row.benchmarks[name]
        ci, pi = cell.ci95, cell.prob_improvement_ci95
        values = (cell.mean, ci.low if ci else None, ci.high if ci else None, cell.prob_improvement,
                  pi.low if pi else None, pi.high if pi else None, cell.seeds)  # fmt: skip
        out.update({f"{name}_{f}": v for f, v in zip(BENCHMARK_FIELDS, values, strict=True)})
    return out


def write_csv(cmp: Comparison, path: Path) -> None:
    """One row per variant; empty cells where a number is not measurable."""
    import io

    from mssr_cli.fileio import write_text_atomic

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=csv_columns(cmp))
    writer.writeheader()
    for record in csv_records(cmp):
        writer.writerow({k: _csv_cell(v) for k, v in record.items()})
    write_text_atomic(path, text.getvalue())


def _csv_cell(value):
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else value  # 0.65, not 0.6499999999999999
