"""`xling plot`."""

from __future__ import annotations

import typer

app = typer.Typer(help="The paper's figures (PNG, PDF or SVG).", no_args_is_help=True)
