"""`xling steer`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Steering interventions applied through hooks.", no_args_is_help=True)
