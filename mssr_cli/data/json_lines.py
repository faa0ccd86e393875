"""JSON Lines files as the ``json`` reader of ``datasets`` (pyarrow) reads them: one row per non-blank line.

pyarrow names a malformed line only by its row in a read block (and other readers by a byte
position), so when a file fails to load these helpers find the line itself (1-based, as an editor
shows it) and write a copy whose bad lines are empty objects: every other row then loads, with
its row number unchanged, and the bad ones can be reported or skipped like any other bad row.
"""

from __future__ import annotations

import json
from pathlib import Path


def is_document(path: Path) -> bool:
    """True for one JSON document holding a list of rows (a ``.json`` file), False for JSON Lines."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(b"[")
    return False


def row_lines(path: Path) -> list[int]:
    """The 1-based line number of each row of a JSON Lines file (blank lines hold no row)."""
    with open(path, "rb") as f:
        return [number for number, line in enumerate(f, 1) if line.strip()]


def _unique_keys(pairs: list[tuple]) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:  # pyarrow refuses these; json.loads would keep the last silently
            raise ValueError(f"key {key!r} appears twice")
    return dict(pairs)


def line_problem(line: bytes) -> str | None:
    """Why one non-blank line gives no row (None when it is one JSON object, or null: a row of nulls)."""
    try:  # without the line break, so an error at the line's end says its character, not "line 2"
        value = json.loads(line.rstrip(b"\r\n"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at character {err.colno})"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as err:  # a repeated key
        return f"not valid JSON ({err})"
    if value is None or isinstance(value, dict):
        return None
    return f"not a JSON object: a {type(value).__name__}"


def bad_lines(path: Path) -> dict[int, tuple[int, str]]:
    """{row of the file: (line number, why)} for each non-blank line that is not a JSON object."""
    bad = {}
    with open(path, "rb") as f:
        row = 0
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            problem = line_problem(line)
            if problem:
                bad[row] = (number, problem)
            row += 1
    return bad


def document_problem(path: Path) -> tuple[int, str] | None:
    """(line number, why) where a JSON document does not parse, or None when it does."""
    data = path.read_bytes()
    try:
        json.loads(data)
    except json.JSONDecodeError as err:
        return err.lineno, f"not valid JSON ({err.msg} at character {err.colno})"
    except UnicodeDecodeError as err:
        return data[: err.start].count(b"\n") + 1, "not UTF-8 text"
    return None


def copy_without(path: Path, lines: set[int], copy: Path) -> None:
    """``path`` copied to ``copy`` with each line in ``lines`` (1-based) replaced by ``{}`` (a row of nulls) and
    blank lines left out (no row either way; ``datasets``' reading of mixed-type columns fails on them)."""
    with open(path, "rb") as src, open(copy, "wb") as dst:
        for number, line in enumerate(src, 1):
            if line.strip():
                dst.write(b"{}\n" if number in lines else line.rstrip(b"\r\n") + b"\n")
