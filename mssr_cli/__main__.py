"""``python -m mssr_cli ...`` is ``mssr ...`` (ablate and sweeps start their runs this way)."""

from mssr_cli.cli import app

app(prog_name="mssr")
