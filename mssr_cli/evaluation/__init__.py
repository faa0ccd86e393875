"""``mssr eval``: the paper's benchmarks as lm-eval tasks (``tasks/``), judge-free scoring, offline copies.

Public API (light at import: torch, lm-eval and datasets load when ``run_eval`` runs):

    run_eval(benchmarks, model, limit=None, data_dir=None, batch_size=16, backend="hf", out=None,
             max_new_tokens=1024, temperature=0.0, judge_url=None, console=None) -> dict
    BENCHMARK_NAMES, TASKS_DIR (for ``lm_eval --include_path``)
    EvalError and its subclasses: the one-line errors the CLI prints
"""

from mssr_cli.evaluation.benchmarks import BENCHMARK_NAMES
from mssr_cli.evaluation.errors import (
    BackendUnavailableError,
    BenchmarkDataError,
    EvalError,
    ModelLoadError,
    UnknownBenchmarkError,
)
from mssr_cli.evaluation.runner import TASKS_DIR, run_eval

__all__ = [
    "BENCHMARK_NAMES",
    "TASKS_DIR",
    "BackendUnavailableError",
    "BenchmarkDataError",
    "EvalError",
    "ModelLoadError",
    "UnknownBenchmarkError",
    "run_eval",
]
