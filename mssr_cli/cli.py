"""The ``mssr`` command line. Commands are thin: compose the config, call one function, print.

Nothing heavy is imported at module level: ``mssr --help`` must not load torch or transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mssr_cli.config.compose import GROUPS
from mssr_cli.config.paths import group_options
from mssr_cli.config.schema import COMMON_KEYS, field_help


def _groups_help() -> str:
    lines = ["Config groups (group=option):"]
    lines += [f"  {g}: {', '.join(group_options(g))}" for g in GROUPS]
    lines += ["", "Common keys (key=value):"]
    lines += [f"  {k}: {field_help(k)}" for k in COMMON_KEYS]
    lines += ["", "Every key: see README.md (Configuration) or `mssr train --dry-run`."]
    # Typer/rich re-wraps paragraphs; a blank line per entry keeps one entry per line.
    return "\n\n".join(lines)


app = typer.Typer(
    name="mssr",
    help="Single-rollout RL (MSSR, MVSR) vs GRPO for multimodal LLMs, on TRL.\n\n" + _groups_help(),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def main() -> None:
    """Single-rollout RL (MSSR, MVSR) vs GRPO for multimodal LLMs, on TRL."""


@app.command(epilog=_groups_help())
def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="Hydra overrides: group=option or key=value.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run folder (default: runs/<name>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Train a policy with RL on the composed config (default: MSSR on the tiny model and digits)."""
    from mssr_cli.console import fail, stdout_console
    from mssr_cli.config.compose import ConfigError, compose

    overrides = list(overrides or [])
    try:
        cfg = compose(overrides)
    except ConfigError as err:
        fail(str(err))
    if dry_run:
        from omegaconf import OmegaConf

        stdout_console().print(OmegaConf.to_yaml(cfg), end="", markup=False, highlight=False)
        return
    from mssr_cli.training.runner import run_training

    run_training(cfg, overrides, run_dir)


if __name__ == "__main__":
    app()
