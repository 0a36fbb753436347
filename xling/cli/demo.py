"""`xling demo`: the whole pipeline on the embedded default (xling.pipeline.demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import console, render
from xling.cli.ingest import progress_bar


def demo(
    out: Annotated[
        Path, typer.Option(help="Directory for the demo warehouse (xling.duckdb) and SAEs.")
    ] = Path("demo-out"),
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Start over: new warehouse and SAEs (the converted model stays cached)."
        ),
    ] = False,
) -> None:
    """The whole pipeline offline: Gemma 3 270M, the CLDR corpus, trained SAEs, ingest, tables."""
    from xling.pipeline.demo import run_demo

    tables = run_demo(out, fresh=fresh, say=console().print, progress=progress_bar)
    for title, df in tables:
        render(df, title=title, digits=3)
