"""`xling sae`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train and list sparse autoencoders.", no_args_is_help=True)
