"""Group runs by variant (seeds together) and summarise each variant against a reference variant.

The target is the reference variant's final metric value, mean over its seeds. Per seed, the
cost to reach it is that of the first logged step whose value is >= the target, in steps,
rollouts, completion tokens generated and wall seconds; a variant's number is the mean over the
seeds that reached it, and its ratio is that over the reference's own cost to reach it.

Over the seeds' final values (stats.py has the definitions): a 95% bootstrap interval of the mean,
the interquartile mean, and the probability that a seed of the variant ends above a seed of the
reference (higher is better, as for the target).

Benchmarks (each run's ``eval/summary.json``): per variant and benchmark, the same statistics over
the seeds evaluated on it: the mean accuracy, its 95% interval and P(improvement) over the
reference's seeds on that benchmark. "average" is per run the mean over the benchmarks every
evaluated run has (so each run's average covers the same benchmarks), then the same over seeds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from mssr_cli.reporting import stats
from mssr_cli.reporting.runs import CompareError, Run

DEFAULT_REFERENCE = "grpo"
ENTROPY_RATIO = "collapse/entropy_ratio"
STEP_SECONDS = "time/step_seconds"
MIN_SEEDS = 3  # fewer seeds: a warning that the interval and P(improvement) are too rough to trust
AVERAGE = "average"  # the benchmark column holding each run's mean over the common benchmarks


@dataclass
class BenchmarkCell:
    """One variant on one benchmark (or ``AVERAGE``), over its seeds evaluated on it (None: not measurable)."""

    seeds: int  # seeds with an accuracy on this benchmark
    mean: float | None  # mean accuracy over them
    ci95: stats.Interval | None  # bootstrap interval of the mean; None below 2 seeds
    prob_improvement: float | None  # P(accuracy > a reference seed's on this benchmark), ties half; None for the reference
    prob_improvement_ci95: stats.Interval | None  # None when either side has fewer than 2 seeds


@dataclass
class VariantRow:
    """One variant's numbers over its seeds (None: not measurable from these runs)."""

    variant: str
    is_reference: bool
    runs: list[str]  # run folder names
    incomplete: list[str]  # names of runs without summary.json
    rollouts_per_step: int | None  # None when absent or when the seeds differ
    final: stats.Spread | None  # last logged metric value
    best: stats.Spread | None  # highest logged metric value
    reached: int  # seeds that reached the target
    steps_to_target: float | None  # mean over the seeds that reached it
    rollouts_to_target: float | None
    steps_ratio: float | None  # over the reference's steps to the target
    rollouts_ratio: float | None
    entropy_ratio_lowest: float | None  # min over steps of collapse/entropy_ratio, mean over seeds
    entropy_ratio_worst: float | None  # the lowest seed's min
    entropy_ratio_worst_run: str | None
    runs_with_alarms: int
    alarm_rules: list[str] = field(default_factory=list)
    step_seconds_median: float | None = None  # median of time/step_seconds over all steps of all seeds
    tokens_to_target: float | None = None  # completion tokens generated (train/tokens), mean over seeds that reached it
    tokens_ratio: float | None = None
    seconds_to_target: float | None = None  # wall seconds of training (time/elapsed), same seeds
    seconds_ratio: float | None = None
    final_ci95: stats.Interval | None = None  # bootstrap interval of the mean final value; None below 2 seeds
    final_iqm: float | None = None  # interquartile mean of the final values
    prob_improvement: float | None = None  # P(final > a reference seed's final), ties half; None for the reference
    prob_improvement_ci95: stats.Interval | None = None  # None when either side has fewer than 2 seeds
    rollbacks: int = 0  # collapse rollbacks (train.on_collapse=rollback), all seeds together
    runs_with_rollbacks: int = 0
    extra_steps: float | None = None  # RL steps trained and then abandoned by rollbacks, mean over seeds; None: none
    benchmarks: dict[str, BenchmarkCell] = field(default_factory=dict)  # Comparison.benchmarks' order; {}: no evals

    @property
    def seeds(self) -> int:
        return len(self.runs)


@dataclass
class Comparison:
    metric: str
    reference: str
    target: float | None  # the reference's mean final metric value, or the one given (``target_given``)
    rows: list[VariantRow]  # reference first, then the variants in the order they were found
    groups: dict[str, list[Run]]  # same order as rows
    target_given: bool = False  # --target: a fixed value, not the reference's final
    benchmarks: list[str] = field(default_factory=list)  # benchmark columns: sorted by name, AVERAGE last; [] without evals
    average_over: list[str] = field(default_factory=list)  # the benchmarks every evaluated run has ([]: no AVERAGE)


def group_by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    return groups


def pick_reference(variants: list[str], reference: str | None) -> str:
    """``reference`` if given (it must exist), else "grpo" when present, else the first variant."""
    if reference is not None:
        if reference not in variants:
            raise CompareError(f"unknown reference variant {reference!r}; variants: {', '.join(variants)}")
        return reference
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in variants else variants[0]


def check_metric(runs: list[Run], metric: str) -> None:
    """A metric no run logged is a typo: fail with the metrics that were logged."""
    logged = {key for run in runs for line in run.metrics for key in line}
    if metric not in logged:
        known = sorted(logged - {"step"})
        raise CompareError(f"no run logged metric {metric!r}; logged: {', '.join(known) or 'nothing'}")


def compare_variants(runs: list[Run], metric: str, reference: str | None = None, target: float | None = None) -> Comparison:
    """``target``: the value whose cost to reach is measured (default: the reference's mean final value)."""
    if not runs:
        raise CompareError("no runs to compare")
    if target is not None and not math.isfinite(target):
        raise CompareError(f"--target must be a finite number, not {target}")
    check_metric(runs, metric)
    groups = group_by_variant(runs)
    ref = pick_reference(list(groups), reference)
    groups = {ref: groups[ref], **{v: rs for v, rs in groups.items() if v != ref}}

    ref_finals = [_final(run, metric) for run in groups[ref]]
    given = target is not None
    target = target if given else stats.mean_or_none(ref_finals)
    ref_cost, _ = _to_target(groups[ref], metric, target)
    names, common = benchmark_names(runs)
    columns = names + ([AVERAGE] if common else [])
    ref_scores = [run_scores(run, common) for run in groups[ref]]
    rows = [
        _row(variant, rs, metric, target, variant == ref, ref_cost, ref_finals,
             benchmark_cells([run_scores(run, common) for run in rs], ref_scores, columns, variant == ref))
        for variant, rs in groups.items()
    ]  # fmt: skip
    return Comparison(metric=metric, reference=ref, target=target, rows=rows, groups=groups, target_given=given,
                      benchmarks=columns, average_over=common)  # fmt: skip


def benchmark_names(runs: list[Run]) -> tuple[list[str], list[str]]:
    """Every benchmark some run was evaluated on, and those every evaluated run was (what AVERAGE is over),
    both sorted by name. A run without eval results is left out of the second: it has no average at all,
    and counting it would empty the common set."""
    evaluated = [set(run.benchmarks) for run in runs if run.benchmarks]
    if not evaluated:
        return [], []
    return sorted(set.union(*evaluated)), sorted(set.intersection(*evaluated))


def run_scores(run: Run, common: list[str]) -> dict[str, float]:
    """The run's accuracy per benchmark, keyed by name, and AVERAGE: its mean over ``common`` (none without evals).

    Over the common benchmarks only: a run evaluated on one more (easy or hard) benchmark would otherwise
    move its average for a reason that has nothing to do with its variant."""
    scores = dict(run.benchmarks)
    if common and run.benchmarks:  # every evaluated run has all of ``common``
        scores[AVERAGE] = statistics.fmean(run.benchmarks[name] for name in common)
    return scores


def benchmark_cells(
    scores: list[dict[str, float]], ref_scores: list[dict[str, float]], columns: list[str], is_reference: bool
) -> dict[str, BenchmarkCell]:
    """Per benchmark column, the statistics over the seeds that have it (``scores``: one dict per seed)."""
    cells = {}
    for name in columns:
        values = [s[name] for s in scores if name in s]
        ref_values = [s[name] for s in ref_scores if name in s]
        cells[name] = _cell(values, ref_values, is_reference)
    return cells


def _cell(values: list[float], ref_values: list[float], is_reference: bool) -> BenchmarkCell:
    """The final metric's statistics (see ``_row``), on one benchmark's accuracies."""
    compared = bool(values and ref_values) and not is_reference
    return BenchmarkCell(
        seeds=len(values),
        mean=stats.mean_or_none(values),
        ci95=stats.mean_interval(values),
        prob_improvement=float(stats.probability_of_improvement(values, ref_values)) if compared else None,
        prob_improvement_ci95=stats.improvement_interval(values, ref_values) if compared else None,
    )


def benchmark_warnings(cmp: Comparison) -> list[str]:
    """What makes the benchmark columns compare unlike with unlike: runs without evals among runs with,
    runs missing a benchmark (fewer seeds in its column, not in the average), no common benchmark (no
    average), one benchmark scored on different numbers of items (an eval with --limit), and runs whose
    evals used different graders (mssr eval --grader)."""
    if not cmp.benchmarks:
        return []
    runs = [run for rs in cmp.groups.values() for run in rs]
    out = []
    without = [run.name for run in runs if not run.benchmarks]
    if without:
        out.append(f"{len(without)} run{'s have' if len(without) > 1 else ' has'} no eval results "
                   f"(eval/summary.json), in no benchmark column: {', '.join(without)}")  # fmt: skip
    names = [name for name in cmp.benchmarks if name != AVERAGE]
    for run in runs:
        missing = [name for name in names if run.benchmarks and name not in run.benchmarks]
        if missing:
            out.append(f"run {run.name} ({run.variant}) was not evaluated on {', '.join(missing)}: "
                       f"{'its column counts' if len(missing) == 1 else 'their columns count'} one seed fewer")  # fmt: skip
    if not cmp.average_over:
        out.append("no benchmark is common to every evaluated run: no average column")
    elif cmp.average_over != names:
        out.append(f"the benchmark average is over {', '.join(cmp.average_over)} only (those every evaluated run has)")
    for name in names:
        items = {run.benchmark_items[name] for run in runs if name in run.benchmark_items}
        if len(items) > 1:
            out.append(f"benchmark {name} was scored on different numbers of items ({', '.join(map(str, sorted(items)))}; "
                       f"an eval with --limit): its seeds are not comparable")  # fmt: skip
    graders: dict[str, list[str]] = {}
    for run in runs:
        if run.eval_grader is not None:
            graders.setdefault(run.eval_grader, []).append(run.name)
    if len(graders) > 1:
        which = "; ".join(f"{grader}: {', '.join(names)}" for grader, names in sorted(graders.items()))
        out.append(f"the runs' evals used different graders ({which}): the benchmark columns mix two ways of "
                   "scoring (mssr eval --grader)")
    return out


def duplicate_seed_warnings(groups: dict[str, list[Run]]) -> list[str]:
    """Two runs of one variant with the same seed are counted as two seeds; say so."""
    out = []
    for variant, runs in groups.items():
        seen: dict[int, list[str]] = {}
        for run in runs:
            if run.seed is not None:
                seen.setdefault(run.seed, []).append(run.name)
        out += [f"variant {variant!r} has {len(names)} runs with seed {seed}: {', '.join(names)}"
                for seed, names in seen.items() if len(names) > 1]
    return out


def few_seed_warnings(cmp: Comparison) -> list[str]:
    """A variant with fewer than ``MIN_SEEDS`` seeds that logged the metric: its interval and P(improvement)
    rest on too few runs (with 2 the interval is just the two values)."""
    out = []
    for row in cmp.rows:
        n = row.final.n if row.final is not None else 0
        if n == 0 or n >= MIN_SEEDS:  # with none, every cell is empty already
            continue
        seeds = f"only {n} seed{'s' if n > 1 else ''} with a final {cmp.metric} (fewer than {MIN_SEEDS})"
        if n == 1:
            what = "no 95% CI, and any P(improvement) involving it rests on one run"
        else:
            what = "its 95% CI and any P(improvement) involving it are too rough to trust"
        out.append(f"variant {row.variant!r} has {seeds}: {what}")
    return out


def _series(run: Run, metric: str, x: str = "step") -> list[tuple[float, float]]:
    return stats.metric_series(run.metrics, metric, x=x, rollouts_per_step=run.rollouts_per_step)


def _final(run: Run, metric: str) -> float | None:
    return stats.final_value(_series(run, metric))


def _to_target(runs: list[Run], metric: str, target: float | None) -> tuple[dict[str, float | None], int]:
    """The cost of reaching the target on every axis of ``stats.X_AXES`` (steps, rollouts, tokens, seconds),
    mean over the seeds that reached it (None where no such seed logged that axis), and how many did."""
    costs: dict[str, list[float]] = {x: [] for x in stats.X_AXES}
    reached = 0
    for run in runs if target is not None else []:
        step = stats.first_reaching(_series(run, metric), target)
        if step is None:
            continue
        reached += 1
        line = next(m for m in run.metrics if m["step"] == step)
        for x in stats.X_AXES:
            at = stats.x_at(line, x, run.rollouts_per_step)
            if at is not None:
                costs[x].append(at)
    return {x: stats.mean_or_none(v) for x, v in costs.items()}, reached


def _rollbacks(run: Run) -> list[dict]:
    """The run's collapse rollbacks (summary.json); their alarms are not in ``collapse_alarms``: the detector
    state went back with the checkpoint."""
    return [r for r in (run.summary or {}).get("rollbacks") or [] if isinstance(r, dict)]


def _extra_steps(run: Run) -> int:
    """RL steps a run trained and then abandoned (each rollback: from the restored step to the alarm's)."""
    return sum(int(r.get("alarm_step", 0)) - int(r.get("restored_step", 0)) for r in _rollbacks(run))


def _alarms(run: Run) -> tuple[bool, list[str]]:
    rules = [a.get("rule", "?") for a in (run.summary or {}).get("collapse_alarms") or [] if isinstance(a, dict)]
    rules += [r.get("rule", "?") for r in _rollbacks(run)]
    raised = bool(rules) or any(line.get("collapse/alarm") == 1 for line in run.metrics)
    if raised and not rules:
        rules = ["rule not recorded (incomplete run)"]
    return raised, rules


def _row(
    variant: str,
    runs: list[Run],
    metric: str,
    target: float | None,
    is_reference: bool,
    ref_cost: dict[str, float | None],
    ref_finals: list[float | None],
    benchmarks: dict[str, BenchmarkCell],
) -> VariantRow:
    series = [_series(run, metric) for run in runs]
    finals = [v for v in (stats.final_value(s) for s in series) if v is not None]
    ref_finals = [v for v in ref_finals if v is not None]
    compared = bool(finals and ref_finals) and not is_reference
    cost, reached = _to_target(runs, metric, target)

    lowest = [stats.lowest_value(_series(run, ENTROPY_RATIO)) for run in runs]
    measured = [(value, run) for value, run in zip(lowest, runs) if value is not None]
    worst_value, worst_run = min(measured, key=lambda vr: vr[0]) if measured else (None, None)

    alarms = [_alarms(run) for run in runs]
    rules = sorted({rule for _, rs in alarms for rule in rs})

    per_step = {run.rollouts_per_step for run in runs}
    step_seconds = [v for run in runs for _, v in _series(run, STEP_SECONDS)]
    return VariantRow(
        variant=variant,
        is_reference=is_reference,
        runs=[run.name for run in runs],
        incomplete=[run.name for run in runs if not run.complete],
        rollouts_per_step=per_step.pop() if len(per_step) == 1 else None,
        final=stats.spread(finals),
        best=stats.spread([stats.best_value(s) for s in series]),
        reached=reached,
        steps_to_target=cost["step"],
        rollouts_to_target=cost["rollouts"],
        steps_ratio=stats.ratio(cost["step"], ref_cost["step"]),
        rollouts_ratio=stats.ratio(cost["rollouts"], ref_cost["rollouts"]),
        tokens_to_target=cost["tokens"],
        tokens_ratio=stats.ratio(cost["tokens"], ref_cost["tokens"]),
        seconds_to_target=cost["seconds"],
        seconds_ratio=stats.ratio(cost["seconds"], ref_cost["seconds"]),
        entropy_ratio_lowest=stats.mean_or_none(lowest),
        entropy_ratio_worst=worst_value,
        entropy_ratio_worst_run=worst_run.label if worst_run is not None else None,
        runs_with_alarms=sum(raised for raised, _ in alarms),
        alarm_rules=rules,
        step_seconds_median=stats.median_or_none(step_seconds),
        final_ci95=stats.mean_interval(finals),
        final_iqm=stats.iqm(finals) if finals else None,
        prob_improvement=float(stats.probability_of_improvement(finals, ref_finals)) if compared else None,
        prob_improvement_ci95=stats.improvement_interval(finals, ref_finals) if compared else None,
        rollbacks=sum(len(_rollbacks(run)) for run in runs),
        runs_with_rollbacks=sum(bool(_rollbacks(run)) for run in runs),
        extra_steps=stats.mean_or_none([_extra_steps(run) for run in runs]) if any(map(_rollbacks, runs)) else None,
        benchmarks=benchmarks,
    )
