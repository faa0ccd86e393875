"""``mssr ablate``: the base configuration and each chosen variant, same settings, same seeds.

Variants are the files of ``conf/ablation/`` (diffs applied on top of the base). With no
variant given, the paper's comparison runs: the base (MSSR), ``no_shaping`` (= MVSR) and
``grpo`` (the group baseline at equal rollouts per step).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mssr_cli.config.compose import ConfigError, compose
from mssr_cli.config.paths import conf_dir, group_options
from mssr_cli.experiments.batch import PlannedRun

PAPER_VARIANTS = ["no_shaping", "grpo"]


def valid_variants() -> list[str]:
    return [v for v in group_options("ablation") if v != "none"]


def _switches_algo(variant: str) -> bool:
    # a variant that replaces the algorithm (grpo) must not have the base's algo= override win over it
    return "override /algo" in (conf_dir() / "ablation" / f"{variant}.yaml").read_text()


def default_out(overrides: list[str], base_algo: str) -> Path:
    """Deterministic, so that running the same command again finds (and skips) its finished runs."""
    key = hashlib.sha1("\n".join(sorted(overrides)).encode()).hexdigest()[:8] if overrides else "default"
    return Path("runs") / f"ablate__{base_algo}__{key}"


def plan(overrides: list[str], variants: list[str] | None, seeds: int) -> tuple[list[PlannedRun], str]:
    """The runs of an ablation (validated: every config composes) and the base variant's name."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1 seed")
    variants = PAPER_VARIANTS if variants is None else variants
    unknown = [v for v in variants if v not in valid_variants()]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; valid variants: {', '.join(valid_variants())}")
    if any(o.startswith(("seed=", "logging.variant=")) for o in overrides):
        raise ConfigError("ablate sets seed and logging.variant itself: drop them from the overrides (use --seeds)")
    base_cfg = compose(overrides)
    base = base_cfg.algo.name
    runs = []
    for seed in range(seeds):
        for variant in [base, *variants]:
            extra = [] if variant == base else [f"ablation={variant}"]
            given = [o for o in overrides if not (variant != base and _switches_algo(variant) and o.startswith("algo="))]
            run_overrides = [*given, *extra, f"seed={seed}", f"logging.variant={variant}"]
            cfg = compose(run_overrides)  # fail before anything runs
            if cfg.train.eval_every == 0:  # nothing would log val/accuracy, the metric the ablation compares
                raise ConfigError(
                    f"train.eval_every=0{f' (with ablation={variant})' if variant != base else ''}: no run would "
                    f"validate, and ablate compares val/accuracy; give train.eval_every=N (N >= 1; "
                    f"N={int(cfg.train.max_steps)} validates only before the first and after the last step)")
            runs.append(PlannedRun(f"{variant}__s{seed}", run_overrides, int(cfg.train.max_steps)))
    return runs, base


def run_ablation(overrides: list[str], variants: list[str] | None, seeds: int, out: Path | None, dry_run: bool,
                 console, wait: bool = True, evals: list[str] | None = None, eval_limit: int | None = None) -> Path:
    """Plan, run (or print with ``dry_run``) and compare; returns the ablation folder."""
    from mssr_cli.experiments.batch import run_plan

    runs, base = plan(overrides, variants, seeds)
    out = out or default_out(overrides, base)
    names = {r.name.rsplit("__s", 1)[0] for r in runs}
    return run_plan(runs, out, "ablation", dry_run, console, reference="grpo" if "grpo" in names else base, wait=wait,
                    evals=evals, eval_limit=eval_limit)
