"""``mssr compare``: read run folders, summarise each variant over its seeds against a reference, write
compare.md, compare.csv and PNG curves, and print the table. Runs evaluated with ``mssr eval`` add
their accuracy per benchmark (the variants x benchmarks table).

Reads run folders only (offline). Errors the user can fix (a bad path, an unknown metric or
reference variant) raise :class:`CompareError`, a ValueError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.reporting.runs import CompareError, read_runs
from mssr_cli.reporting.variants import (
    VariantRow,
    benchmark_warnings,
    compare_variants,
    duplicate_seed_warnings,
    few_seed_warnings,
)

__all__ = ["CompareError", "CompareResult", "run_compare"]


@dataclass
class CompareResult:
    metric: str
    reference: str
    target: float | None  # the reference's final metric value, mean over its seeds
    rows: list[VariantRow]  # reference first
    runs: list[Path]  # the run folders read
    out: Path
    markdown: Path
    csv: Path
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)  # benchmark columns ("average" last); [] without evals

    @property
    def files(self) -> list[Path]:
        return [self.markdown, self.csv, *self.plots]

    def row(self, variant: str) -> VariantRow:
        return next(r for r in self.rows if r.variant == variant)


def default_out(paths: list[Path]) -> Path:
    """The one folder given, else ./compare."""
    return Path(paths[0]) if len(paths) == 1 else Path.cwd() / "compare"


def run_compare(
    paths: list[Path],
    metric: str = "val/accuracy",
    reference: str | None = None,
    out: Path | None = None,
    console=None,
    target: float | None = None,
) -> CompareResult:
    """Compare the runs at or under ``paths`` (run folders or folders of run folders) by variant.

    Prints the table to ``console`` (default: stdout) and writes compare.md, compare.csv and
    the plots into ``out`` (default: the single folder given, else ./compare).
    """
    from mssr_cli.fileio import write_text_atomic
    from mssr_cli.reporting import plots, table

    if not paths:
        raise CompareError("give at least one run folder or folder of runs")
    paths = [Path(p) for p in paths]
    runs, warnings = read_runs(paths)
    if not runs:
        raise CompareError(f"no readable runs (every run folder lacks metrics.jsonl) in {', '.join(map(str, paths))}")
    cmp = compare_variants(runs, metric, reference, target)
    warnings += duplicate_seed_warnings(cmp.groups) + few_seed_warnings(cmp) + benchmark_warnings(cmp)

    out = Path(out) if out is not None else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "compare.csv"
    table.write_csv(cmp, csv_path)
    plot_paths = plots.write_plots(cmp, out, warnings)
    md_path = out / "compare.md"
    write_text_atomic(md_path, table.markdown(cmp, notes=warnings))

    if console is None:
        from mssr_cli.console import stdout_console

        console = stdout_console()
    console.print(table.rich_table(cmp))
    if cmp.benchmarks:
        console.print(table.benchmark_rich_table(cmp))
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    console.print(f"Wrote {md_path}, {csv_path} and {len(plot_paths)} plots in {out}", markup=False, highlight=False)
    return CompareResult(
        metric=metric, reference=cmp.reference, target=cmp.target, rows=cmp.rows, runs=[r.path for r in runs],
        out=out, markdown=md_path, csv=csv_path, plots=plot_paths, warnings=warnings,
        benchmarks=cmp.benchmarks,
    )  # fmt: skip
