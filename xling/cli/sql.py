"""`xling sql`: ad-hoc SQL over the warehouse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, render

TERMINAL_LIMIT = 100  # rows a terminal table shows unless --limit says otherwise


def sql(
    query: Annotated[
        str | None,
        typer.Argument(help="SQL text (several statements allowed), or - to read it from stdin."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the SQL from this file.", dir_okay=False)
    ] = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
    write: Annotated[
        bool, typer.Option("--write", help="Allow statements that change data (one transaction).")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help=f"Show at most this many rows; 0 for all (default: {TERMINAL_LIMIT} for the "
            "table format, all rows for csv, json, markdown and latex).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Cancel the query after this many seconds."),
    ] = None,
) -> None:
    """Run SQL against the warehouse and print the last statement's result (read-only by default).

    Ctrl-C cancels a running query.
    """
    from xling.warehouse.adhoc import run_sql

    text = _query_text(query, file)
    if limit is None:
        limit = TERMINAL_LIMIT if fmt is Format.table else 0
    out = run_sql(db, text, write=write, limit=limit or None, timeout=timeout)
    render(out.frame, fmt, name="result")
    if out.truncated:
        typer.echo(
            f"(showing the first {limit} rows; more were cut: pass --limit 0 for all, "
            "or a larger --limit)",
            err=True,
        )


def _query_text(query: str | None, file: Path | None) -> str:
    from xling.warehouse.errors import XlingError

    if (query is None) == (file is None):
        raise XlingError("give the SQL as an argument, as - (read from stdin), or with --file")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not UTF-8 text"
            raise XlingError(f"cannot read SQL from {file}: {reason}") from None
    if query == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise XlingError("SQL on stdin is not UTF-8 text") from None
    return query
