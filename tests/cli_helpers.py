"""What every refusal through the command line must look like (shared by the CLI tests)."""

from __future__ import annotations

import subprocess


def one_line_error(out: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, exactly one stderr line ``error: ...`` holding every one of ``words``."""
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
