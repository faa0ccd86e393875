"""The package's layering, checked on every import statement (module level and inside functions).

training/ builds on models/, data/, rewards/ and algos/; evaluation/ on models/, data/ and rewards/.
What two of them share lives below both (models.generation, models.sampling, cpu_threads, hub), so
no arrow points from evaluation, models or data into training, and none from data into evaluation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mssr_cli"
FORBIDDEN = {  # package -> packages it must not import
    "evaluation": ("mssr_cli.training",),
    "models": ("mssr_cli.training", "mssr_cli.evaluation"),
    "data": ("mssr_cli.training", "mssr_cli.evaluation"),
    "rewards": ("mssr_cli.training", "mssr_cli.evaluation"),
    "algos": ("mssr_cli.training", "mssr_cli.evaluation", "mssr_cli.models", "mssr_cli.data"),
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


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from mssr_cli.training.distributed import x\n")
    assert imported_modules(source) == [(2, "mssr_cli.training.distributed")]
