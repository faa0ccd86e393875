"""The rich consoles the CLI prints to, and the one-line error exit."""

from __future__ import annotations

from typing import NoReturn


def stdout_console():
    from rich.console import Console

    return Console()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit (2: bad usage, as argparse and click do)."""
    import typer

    stderr_console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)
