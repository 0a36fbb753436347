"""`xling corpus`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Load and inspect the parallel corpus (CSV/TSV/JSONL/Parquet, Neuronpedia, CLDR, translation).", no_args_is_help=True)
