"""PNG curves for ``mssr compare``: one line per variant (mean over seeds) with a min-max band over seeds.

matplotlib is imported only here, inside the functions, and drawn with the Agg canvas on a
bare Figure (no pyplot): the user's backend and global state are left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mssr_cli.reporting import stats
from mssr_cli.reporting.variants import Comparison

ENTROPY = "collapse/entropy"
ADV_ABS_MEAN = "collapse/adv_abs_mean"
RESPONSE_LENGTH = "train/response_length"  # a collapse shows here too: reasoning shrinks, or output runs to the cap


def plot_file_name(metric: str, x: str) -> str:
    """``val/accuracy`` vs ``steps`` -> ``val_accuracy_vs_steps.png``."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '_', metric).strip('_')}_vs_{x}.png"


XLABELS = {"step": "RL step", "rollouts": "rollouts", "tokens": "completion tokens generated",
           "seconds": "wall seconds of training"}


# Cost axes on which seeds never log the same x: their curves are interpolated onto one grid before the mean
CONTINUOUS_X = ("tokens", "seconds")


def plan(metric: str) -> list[tuple[str, str]]:
    """The (metric, x) pairs to draw; x is one of ``stats.X_AXES``: the metric against every kind of cost."""
    pairs = [*((metric, x) for x in stats.X_AXES), (ENTROPY, "step"), (ADV_ABS_MEAN, "step"), (RESPONSE_LENGTH, "step")]
    return list(dict.fromkeys(pairs))  # --metric collapse/entropy would draw one curve twice


def write_plots(cmp: Comparison, out: Path, warnings: list[str]) -> list[Path]:
    """Draw every planned plot that some run logged; returns the files written."""
    written = []
    for key, x in plan(cmp.metric):
        bands = {}
        for variant, runs in cmp.groups.items():
            curves = [stats.metric_series(r.metrics, key, x=x, rollouts_per_step=r.rollouts_per_step) for r in runs]
            curves = [c for c in curves if c]
            if curves:
                bands[variant] = stats.band(curves, interpolate=x in CONTINUOUS_X)
        if not bands:
            warnings.append(f"no run logged {key} against {x}s: plot skipped")
            continue
        target = cmp.target if key == cmp.metric else None
        path = out / plot_file_name(key, "steps" if x == "step" else x)
        _draw(bands, key, XLABELS[x], target, None if cmp.target_given else cmp.reference, path)
        written.append(path)
    return written


def _draw(bands: dict[str, stats.Band], metric: str, xlabel: str, target: float | None, reference: str | None, path: Path) -> None:
    """``reference``: whose final value the target is (None: a target given with --target)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    marker = "o" if max(len(b.x) for b in bands.values()) <= 30 else None  # sparse curves (validation) show their points
    for variant, b in bands.items():
        (line,) = ax.plot(b.x, b.mean, marker=marker, markersize=3, label=variant)
        if max(b.seeds) > 1:
            ax.fill_between(b.x, b.low, b.high, color=line.get_color(), alpha=0.2, linewidth=0)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target ({reference} final, {target:.3f})" if reference else f"target ({target:.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {xlabel} (mean over seeds, band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # savefig picks the format by suffix
    fig.savefig(partial)
    os.replace(partial, path)  # a reader sees the old plot or the new one, never half
