"""The package's layering (DESIGN.md), checked on every import statement, module level and inside functions.

Nothing imports training except cli (experiments run `mssr train` as a subprocess); data and models
know no evaluation. What two of them share lives below both: the run folder on disk (runs/), model
generation and sampling (models/), cpu_threads, hub, fileio, secrets, thresholds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mssr_cli"
FORBIDDEN = {  # package (or root module) -> packages it must not import
    "evaluation": ("mssr_cli.training",),
    "experiments": ("mssr_cli.training",),
    "reporting": ("mssr_cli.training", "mssr_cli.evaluation"),
    "runs": ("mssr_cli.training", "mssr_cli.evaluation", "mssr_cli.experiments", "mssr_cli.reporting"),
    "config": ("mssr_cli.training", "mssr_cli.evaluation", "mssr_cli.experiments", "mssr_cli.reporting"),
    "models": ("mssr_cli.training", "mssr_cli.evaluation"),
    "data": ("mssr_cli.training", "mssr_cli.evaluation"),
    "rewards": ("mssr_cli.training", "mssr_cli.evaluation"),
    "algos": ("mssr_cli.training", "mssr_cli.evaluation", "mssr_cli.models", "mssr_cli.data"),
    # where runs run: below experiments (which choose them), above the run folder; a run is always a subprocess
    "executors": ("mssr_cli.training", "mssr_cli.evaluation", "mssr_cli.experiments", "mssr_cli.reporting"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_layering(package):
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
           for path in sorted((PACKAGE / package).rglob("*.py"))
           for line, module in imported_modules(path)
           if module.startswith(FORBIDDEN[package])]
    assert not bad, "\n".join(bad)


def test_only_cli_and_training_import_training():
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if p.parent.name != "training" and p.name != "cli.py"]
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
           for path in outside for line, module in imported_modules(path) if module.startswith("mssr_cli.training")]
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mssr_cli.training.distributed import x\n")
    assert imported_modules(source) == [(2, "mssr_cli.training.distributed")]
