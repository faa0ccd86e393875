"""W&B sweep files (``sweeps/*.yaml``): read, check, and expand them into runs for ``--local``.

A sweep file's parameters are Hydra overrides (``key: {values: [...]}`` -> ``key=value``), and
its command is ``mssr train ${args_no_hyphens}``, so W&B's agent and ``mssr sweep --local`` run
the same thing. ``--local`` expands ``grid`` (every combination) and ``random`` (``run_cap`` or
``--max-runs`` draws, seeded) here, without a W&B server; ``bayes`` needs the server's model and
is refused locally.

``metric.name`` must be one of ``SWEEP_METRICS`` (``runs/wandb_run.py``): names every run leaves in its W&B
summary, which is what the sweep server ranks. Under ``wandb agent`` a run logs online to the agent's
sweep, whatever ``logging.wandb`` defaults to (``runs/wandb_run.py``).
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

from mssr_cli.config.compose import ConfigError
from mssr_cli.runs.wandb_run import SWEEP_METRICS

DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform", "categorical")
# summary.json-only metric names (valid for a W&B sweep) -> the metrics.jsonl metric a local sweep compares
PER_STEP = {"best_val_accuracy": "val/accuracy", "final_val_accuracy": "val/accuracy", "wall_seconds": "time/elapsed"}


def load_sweep(path: Path) -> dict:
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a sweep file (e.g. sweeps/mssr_shaping.yaml)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a sweep file is YAML)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the sweep file ({err.strerror or type(err).__name__})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise ConfigError(f"{path}: a sweep file needs a 'parameters' mapping")
    if spec.get("method") not in ("grid", "random", "bayes"):
        raise ConfigError(f"{path}: method={spec.get('method')}; valid choices: grid, random, bayes")
    metric = spec.get("metric", {"name": "val/accuracy"})
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise ConfigError(f"{path}: metric must be a mapping with a name (e.g. metric: {{name: val/accuracy, goal: maximize}})")
    if metric["name"] not in SWEEP_METRICS:  # W&B would rank on a summary key no run has: every run ties
        raise ConfigError(f"{path}: metric.name={metric['name']} is not a metric every mssr run leaves in its W&B "
                          f"summary; valid names: {', '.join(SWEEP_METRICS)}")
    command = " ".join(map(str, spec.get("command", [])))
    if "mssr train" not in command or "${args_no_hyphens}" not in command:
        raise ConfigError(f"{path}: command must be 'mssr train ${{args_no_hyphens}}' (parameters are Hydra overrides)")
    for name, p in spec["parameters"].items():
        if not isinstance(p, dict) or not ({"value", "values"} & set(p) or p.get("distribution") in DISTRIBUTIONS):
            raise ConfigError(f"{path}: parameter {name}: needs value, values, or a distribution in {', '.join(DISTRIBUTIONS)}")
        if problem := _parameter_problem(p):
            raise ConfigError(f"{path}: parameter {name}: {problem}")
    return spec


def _parameter_problem(p: dict) -> str | None:
    """What makes one parameter unusable (expanding it would fail mid-plan with a TypeError)."""
    if "value" in p:
        return None
    if "values" in p:
        values = p["values"]
        return None if isinstance(values, list) and values else f"values must be a non-empty list, got {values!r}"
    low, high = p.get("min"), p.get("max")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers:
        return f"distribution {p['distribution']} needs numeric min and max, got min={low!r}, max={high!r}"
    if low > high:
        return f"min {low} is above max {high}"
    if p["distribution"] == "log_uniform_values" and low <= 0:
        return f"log_uniform_values needs min > 0, got {low}"
    return None


def _fmt(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _draw(p: dict, rng: random.Random):
    if "value" in p:
        return p["value"]
    if "values" in p:
        return rng.choice(p["values"])
    dist, lo, hi = p["distribution"], p.get("min"), p.get("max")
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if dist == "q_uniform":
        q = p.get("q", 1)
        return round(rng.uniform(lo, hi) / q) * q
    raise ConfigError(f"distribution {dist} is not supported locally")


def expand(spec: dict, max_runs: int | None = None, seed: int = 0) -> list[dict]:
    """The parameter sets a local sweep runs, in order."""
    params = spec["parameters"]
    if spec["method"] == "grid":
        for name, p in params.items():
            if "distribution" in p and "values" not in p and "value" not in p:
                raise ConfigError(f"parameter {name}: a grid sweep needs values, not a distribution")
        names = list(params)
        options = [[params[n]["value"]] if "value" in params[n] else list(params[n]["values"]) for n in names]
        combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*options)]
        return combos[:max_runs] if max_runs else combos
    if spec["method"] == "bayes":
        raise ConfigError("method=bayes needs the W&B server's model; run it with `wandb agent`, or use grid/random locally")
    count = max_runs or spec.get("run_cap") or 10
    rng = random.Random(seed)
    return [{n: _draw(p, rng) for n, p in params.items()} for _ in range(count)]


def overrides_of(params: dict) -> list[str]:
    """Hydra overrides for one parameter set (what ${args_no_hyphens} gives the agent's command)."""
    return [f"{k}={_fmt(v)}" for k, v in params.items()]


def edge_values(spec: dict) -> list[dict]:
    """Every listed value and both ends of every distribution, one parameter at a time: what a
    test composes so that a typo in a sweep file never reaches a GPU."""
    params = spec["parameters"]
    base = {n: (p["value"] if "value" in p else p["values"][0] if "values" in p else p["min"]) for n, p in params.items()}
    sets = []
    for n, p in params.items():
        vals = [p["value"]] if "value" in p else list(p["values"]) if "values" in p else [p["min"], p["max"]]
        sets += [{**base, n: v} for v in vals]
    return sets


def run_label(params: dict, varying: list[str]) -> str:
    """The variant label compare groups by: the varying parameters except the seed (seeds pool)."""
    def short(v):
        return f"{v:.3g}" if isinstance(v, float) else _fmt(v)

    return ",".join(f"{k.rsplit('.', 1)[-1]}={short(params[k])}" for k in varying if k != "seed") or "base"


def run_local_sweep(path: Path, max_runs: int | None, out: Path | None, dry_run: bool, console,
                    extra: list[str] | None = None, wait: bool = True, evals: list[str] | None = None,
                    eval_limit: int | None = None) -> Path:
    """Expand the sweep, run each parameter set (plus ``extra`` overrides) as a run, compare them."""
    from mssr_cli.config.compose import compose
    from mssr_cli.experiments.batch import PlannedRun, run_plan

    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"--max-runs {max_runs}: need at least 1 run")
    spec = load_sweep(path)
    sets = expand(spec, max_runs)
    metric = spec.get("metric", {}).get("name", "val/accuracy")
    metric = PER_STEP.get(metric, metric)  # compare reads metrics.jsonl; it reports final and best itself
    varying = [n for n in spec["parameters"] if len({_fmt(s[n]) for s in sets}) > 1]
    out = out or Path("runs") / f"sweep__{spec.get('name') or Path(path).stem}"
    runs = []
    for i, params in enumerate(sets):
        label = run_label(params, varying)
        overrides = [*(extra or []), *overrides_of(params), f"logging.variant='{label}'"]  # quoted: labels hold = and ,
        cfg = compose(overrides)  # fail before anything runs
        if cfg.train.eval_every == 0 and metric.startswith("val/"):  # the compared metric would never be logged
            raise ConfigError(f"{path}: train.eval_every=0 (run {i}): it would never log {metric}, the metric the "
                              f"sweep compares; give train.eval_every=N (N >= 1)")
        seed_tag = f"__s{params['seed']}" if "seed" in params else ""
        runs.append(PlannedRun(f"{i:03d}__{label.replace('=', '-').replace(',', '__')}"[:100] + seed_tag, overrides,
                               int(cfg.train.max_steps)))
    return run_plan(runs, out, f"local sweep {spec.get('name', path)}", dry_run, console, metric=metric, wait=wait, evals=evals,
                    eval_limit=eval_limit)
