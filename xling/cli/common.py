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
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace --out if it exists (never the warehouse).")
]
FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format.", case_sensitive=False),
]


def open_warehouse(
    db: Path | None, *, read_only: bool = True, wait: float | None = None
) -> Warehouse:
    from xling.warehouse import Warehouse

    return Warehouse(db, read_only=read_only, wait=wait)


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
    """Print `df`: a rich table for people, or text for machines and papers.

    The rich table never cuts a number: columns that do not fit the terminal go on to a
    further table that repeats the leading key columns (run, layer, language, ...).
    """
    from xling.analysis.formats import Grid, cell_texts, format_grid

    grid = Grid.from_frame(df)
    if fmt is not Format.table:
        typer.echo(format_grid(grid, fmt.value, name=name, digits=digits, caption=title), nl=False)
        return
    out = console()
    cells = cell_texts(grid, digits)
    grid, cells, constant = _drop_constant(grid, cells, out.width)
    for part, cols in enumerate(column_chunks(grid, cells, out.width)):
        out.print(_rich_table(grid, cols, title if part == 0 else None))
    if constant:
        from rich.text import Text

        out.print(Text("every row: " + ", ".join(f"{c} {v}" for c, v in constant)))
    if df.empty:
        console(stderr=True).print("(no rows)")


_KEYS = ("run_id", "layer", "lang", "lang_a", "name", "task", "model")
_TEXT_CAP = 30  # text columns wrap inside this width; numbers never wrap


_DECORATIVE = ("run_id", "mode", "stat", "k", "n_layers", "model", "task", "metric", "against")


def _drop_constant(grid, cells: list[list[str]], width: int):
    """When the table is wider than `width`, move bookkeeping columns that hold one value in
    every row (run_id, mode, ...) out of the table into a line below it."""
    from xling.analysis.formats import Grid

    if len(cells) < 2 or len(column_chunks(grid, cells, width)) == 1:
        return grid, cells, []
    keep, constant = [], []
    for i, c in enumerate(grid.columns):
        values = {row[i] for row in cells}
        if c in _DECORATIVE and len(values) == 1:
            constant.append((c, values.pop()))
        else:
            keep.append(i)
    if not constant:
        return grid, cells, []
    slim = Grid(
        [grid.columns[i] for i in keep],
        [grid.kinds[i] for i in keep],
        [tuple(r[i] for i in keep) for r in grid.rows],
    )
    return slim, [[row[i] for i in keep] for row in cells], constant


def column_chunks(grid, cells: list[list[str]], width: int) -> list[list[tuple[int, list[str]]]]:
    """The columns of `grid` split into tables that each fit `width` terminal columns.

    Each chunk is a list of (column index, its cells); chunks after the first repeat the
    leading key columns so every row still reads on its own.
    """
    cols = [(i, [row[i] for row in cells]) for i in range(len(grid.columns))]

    def need(i: int, texts: list[str]) -> int:
        w = max([len(grid.columns[i]), *(len(t) for t in texts)])
        return (min(w, _TEXT_CAP) if grid.kinds[i] == "text" else w) + 3

    keys = []
    for i, texts in cols:
        if (
            grid.columns[i] not in _KEYS
            or sum(need(*c) for c in keys) + need(i, texts) > width // 2
        ):
            break
        keys.append((i, texts))
    rest = cols[len(keys) :]
    base = 1 + sum(need(*c) for c in keys)
    if base + sum(need(*c) for c in rest) <= width or not rest:
        return [cols]
    chunks: list[list[tuple[int, list[str]]]] = []
    current: list[tuple[int, list[str]]] = []
    used = base
    for col in rest:
        if current and used + need(*col) > width:
            chunks.append(keys + current)
            current, used = [], base
        current.append(col)
        used += need(*col)
    chunks.append(keys + current)
    return chunks


def _rich_table(grid, cols: list[tuple[int, list[str]]], title: str | None):
    from rich.table import Table
    from rich.text import Text

    # Text objects, never markup: a stored "[bold]" is shown as typed
    table = Table(title=Text(title) if title else None, show_lines=False)
    for i, texts in cols:
        numeric = grid.kinds[i] in ("float", "int")
        w = max([len(grid.columns[i]), *(len(t) for t in texts)])
        table.add_column(
            Text(grid.columns[i]),
            justify="right" if numeric else "left",
            no_wrap=numeric,
            min_width=w if numeric else min(w, _TEXT_CAP),
            overflow="fold",
        )
    for r in range(len(grid.rows)):
        table.add_row(*(Text(texts[r]) for _, texts in cols))
    return table


def parse_list(value: str | None) -> list[str] | None:
    """'en,zh , ru' -> ['en', 'zh', 'ru']; None and '' stay None."""
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


MAX_LAYER = 255  # the metric views key a layer in 8 bits (activation_group_scores.sql)


def parse_layers(value: str | None) -> list[int] | None:
    """'0-3,7' -> [0, 1, 2, 3, 7]; a layer above MAX_LAYER is refused before any range is
    expanded (`0-300000000` would otherwise build a list of 300 M numbers)."""
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
            else:
                lo = hi = int(part)
        except ValueError:
            raise XlingError(f"bad layer list {value!r}; use e.g. 0-3,7") from None
        if hi > MAX_LAYER:
            raise XlingError(f"bad layer list {value!r}; layers go up to {MAX_LAYER}")
        out.extend(range(lo, hi + 1))
    if any(layer < 0 for layer in out):
        raise XlingError(f"bad layer list {value!r}; layers are 0-based")
    return sorted(set(out))
