"""`xling bench`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: lm-eval import and runs, bits-per-byte.", no_args_is_help=True)
