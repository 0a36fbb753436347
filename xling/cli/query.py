"""`xling query`."""

from __future__ import annotations

import typer

app = typer.Typer(help="The paper's metrics from the SQL views.", no_args_is_help=True)
