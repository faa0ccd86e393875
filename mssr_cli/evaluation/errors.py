"""Errors ``mssr eval`` reports as one line (the CLI prints ``error: <message>`` and exits 2)."""

from __future__ import annotations


class EvalError(Exception):
    """Base: a problem the user can fix; the message is meant for them as is."""


class UnknownBenchmarkError(EvalError, ValueError):
    """A benchmark name that is not one of ``BENCHMARK_NAMES``."""


class BenchmarkDataError(EvalError):
    """A benchmark's data is neither in the local copy nor reachable on the Hub."""


class BackendUnavailableError(EvalError):
    """An unknown backend, or one whose library is not installed (vLLM)."""


class ModelLoadError(EvalError):
    """``--model`` is neither a run folder, a model folder, a preset nor a loadable Hub id."""
