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


def _package_of(path: Path, root: Path) -> list[str]:
    """The dotted package a module file lives in, as parts: mssr_cli/reporting/x.py -> [mssr_cli, reporting]."""
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix("").parts)
    return parts if path.name == "__init__.py" and parts.pop() == "__init__" else parts[:-1]


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved against its package:
    `from ..training import x` in mssr_cli/reporting/ is mssr_cli.training; `from .. import training`,
    mssr_cli.training too (each name may be a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom):
            package = _package_of(path, root)
            base = ".".join(package[: len(package) - node.level + 1])
            if node.module:
                found.append((node.lineno, f"{base}.{node.module}"))
            else:
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
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


@pytest.mark.parametrize("statement,module", [
    ("from ..training import runner", "mssr_cli.training"),
    ("from .. import training", "mssr_cli.training"),
    ("from ..training.distributed import x", "mssr_cli.training.distributed"),
    ("from .compare import run_compare", "mssr_cli.reporting.compare"),
])
def test_the_check_resolves_relative_imports(statement, module, tmp_path):
    """A relative import inside a reporting function is resolved against its package, and the reporting rule
    catches it (a module file at mssr_cli/reporting/ under a scratch root)."""
    probe = tmp_path / "mssr_cli" / "reporting" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"def f():\n    {statement}\n")
    found = imported_modules(probe, root=tmp_path)
    bad = [m for _, m in found if m.startswith(FORBIDDEN["reporting"])]
    assert [m for _, m in found] == [module], found
    assert bool(bad) == module.startswith("mssr_cli.training"), (statement, found)
