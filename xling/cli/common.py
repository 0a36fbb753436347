"""Options and helpers shared by every command: --db, --run, --format, rendering."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"
    latex = "latex"


DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db", envvar="XLING_DB", help="Warehouse file (default: ./xling.duckdb, or $XLING_DB)."
    ),
]
RunOpt = Annotated[
    int | None,
    typer.Option("--run", help="Run id (default: the latest finished run)."),
]
FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format.", case_sensitive=False),
]


def open_warehouse(db: Path | None, *, read_only: bool = True) -> Warehouse:
    from xling.warehouse import Warehouse

    return Warehouse(db, read_only=read_only)


def console(stderr: bool = False):
    from rich.console import Console

    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return Console(stderr=stderr, width=width)


def render(
    df: pd.DataFrame,
    fmt: Format = Format.table,
    *,
    title: str | None = None,
    name: str = "table",
    digits: int = 4,
) -> None:
    """Print `df`: a rich table for people, or text for machines and papers."""
    if fmt is not Format.table:
        from xling.analysis.formats import format_frame

        text = format_frame(df, fmt.value, name=name, digits=digits, caption=title)
        typer.echo(text, nl=False)
        return
    import math

    from rich.table import Table
    from rich.text import Text

    # Text, not str: rich reads markup in strings, so a stored value such as `[/x]` would
    # crash the table and `[bold]` would be applied instead of shown.
    table = Table(title=Text(title) if title else None, show_lines=False)
    for col in df.columns:
        numeric = df[col].dtype.kind in "iuf"
        table.add_column(Text(str(col)), justify="right" if numeric else "left")
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(
                    ""
                    if math.isnan(v)
                    else f"{v:.{digits}g}"
                    if abs(v) >= 1e5
                    else f"{v:.{digits}f}"
                )
            else:
                cells.append("" if v is None else str(v))
        table.add_row(*map(Text, cells))
    console().print(table)
    if df.empty:
        console(stderr=True).print("(no rows)")


def parse_list(value: str | None) -> list[str] | None:
    """'en,zh , ru' -> ['en', 'zh', 'ru']; None and '' stay None."""
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_layers(value: str | None) -> list[int] | None:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    if not value:
        return None
    from xling.warehouse.errors import XlingError

    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise XlingError(f"bad layer list {value!r}; use e.g. 0-3,7") from None
    if any(layer < 0 for layer in out):
        raise XlingError(f"bad layer list {value!r}; layers are 0-based")
    return sorted(set(out))
