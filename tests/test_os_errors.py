"""Every OS error of `mssr train` is one line saying what and where (exit 2), and nothing is written half.

Tests run as root in CI, where chmod does not make a folder read-only: the file system's refusals are
raised where the kernel would raise them (os.mkdir, os.open, fsync), for the paths under test only.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.fileio import describe_os_error, write_json_atomic, write_text_atomic

SHORT = ["train.max_steps=1", "logging.wandb=disabled", "logging.progress=false"]


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-3000:]
    return lines[0]


def _refuse(monkeypatch, name: str, under: Path, code: int) -> None:
    """Make ``os.<name>`` fail with ``code`` for paths under ``under``, as the kernel would."""
    real = getattr(os, name)

    def refusing(path, *args, **kwargs):
        if str(path).startswith(str(under)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, name, refusing)


def test_run_dir_on_a_read_only_file_system(tmp_path, monkeypatch):
    target = tmp_path / "ro" / "run"
    _refuse(monkeypatch, "mkdir", tmp_path / "ro", errno.EROFS)
    line = _one_error_line(CliRunner().invoke(app, ["train", *SHORT, "--run-dir", str(target)]))
    assert line.startswith("error: read-only file system: ") and str(tmp_path / "ro") in line
    assert not (tmp_path / "ro").exists()


def test_run_dir_without_write_permission(tmp_path, monkeypatch):
    target = tmp_path / "run"
    target.mkdir()
    _refuse(monkeypatch, "open", target, errno.EACCES)
    line = _one_error_line(CliRunner().invoke(app, ["train", *SHORT, "--run-dir", str(target)]))
    assert line == f"error: permission denied: {target / '.lock'}"
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    target.chmod(0o555)
    try:
        line = _one_error_line(CliRunner().invoke(app, ["train", *SHORT, "--run-dir", str(target)]))
    finally:
        target.chmod(0o755)
    assert "permission denied" in line and str(target) in line


def test_atomic_writes_leave_the_old_file_whole_when_the_disk_fills(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old: whole\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write in (lambda: write_text_atomic(path, "new: " + "x" * 100_000), lambda: write_json_atomic(path, {"a": 1})):
        with pytest.raises(OSError) as err:
            write()
        assert err.value.errno == errno.ENOSPC
        assert path.read_text() == "old: whole\n"
        assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left behind


def test_atomic_writes_keep_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.yaml", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == 0o644  # readable by the group, as open() would make it


def test_describe_os_error_says_what_and_where():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/runs/x")) == \
        "disk full (No space left on device): /runs/x"
    assert describe_os_error(OSError(errno.ENOTDIR, "Not a directory", "/a", None, "/b")) == \
        "not a folder (Not a directory): /a -> /b"
    assert describe_os_error(OSError("something odd")) == "something odd"
