"""`xling sql`: ad-hoc SQL over the warehouse."""

from __future__ import annotations

from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, render


def sql(
    query: Annotated[str, typer.Argument(help="SQL text; several statements allowed.")],
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
    write: Annotated[
        bool, typer.Option("--write", help="Allow statements that change data (one transaction).")
    ] = False,
) -> None:
    """Run SQL against the warehouse and print the last statement's result (read-only by default)."""
    from xling.warehouse.adhoc import run_sql

    render(run_sql(db, query, write=write), fmt, name="result")
