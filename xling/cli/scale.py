"""`xling export-parquet` and `xling import-parts`: the warehouse beyond one DuckDB file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, RunOpt, open_warehouse


def export_parquet(
    out: Annotated[Path, typer.Argument(help="New (or empty) directory to write.")],
    run: RunOpt = None,
    db: DbOpt = None,
) -> None:
    """Copy the warehouse to Hive-partitioned Parquet (feature_acts by layer= and lang=).

    Query it in place with --db parquet:DIR (e.g. `xling query gap --db parquet:DIR`), or
    read it from Spark, Polars or another DuckDB. --run keeps one run's rows.
    """
    from xling.warehouse.parquet import export_parquet as export

    with open_warehouse(db) as wh:
        counts = export(wh, out, run=run)
    typer.echo(
        f"wrote {len(counts)} tables ({counts.get('feature_acts', 0):,} feature rows) to {out}"
    )


def import_parts(
    parts: Annotated[Path, typer.Argument(help="Directory of ingest parts (--parts of ingest).")],
    run: Annotated[int, typer.Option("--run", help="The run the parts belong to.")],
    db: DbOpt = None,
) -> None:
    """Load Parquet ingest parts (from `xling ingest --engine ray`) into a run.

    Idempotent: importing again, or after a rerun rewrote some parts, leaves each phrase's
    rows once. The run is marked finished when every phrase it selected has rows.
    """
    from xling.warehouse.parquet import import_parts as load_parts

    with open_warehouse(db, read_only=False) as wh:
        result = load_parts(wh, parts, run)
    state = "finished" if result.finished else f"{result.missing:,} phrases still missing"
    typer.echo(
        f"run {result.run_id}: {result.parts:,} parts, {result.phrases:,} phrases, "
        f"{result.rows:,} feature rows imported; {state}"
    )


def register(app: typer.Typer) -> None:
    """Attach the top-level commands of this module to the main app."""
    app.command("export-parquet")(export_parquet)
    app.command("import-parts")(import_parts)
