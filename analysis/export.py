"""`xling export`: any table or view of the warehouse to Parquet, CSV, JSON, Markdown or LaTeX.

Names are checked against the catalog (information_schema), never formatted into SQL from
user text; the run filter and the file name are bound parameters. Parquet and CSV stream
through DuckDB's COPY (a 100 M-row table never sits in memory); JSON, Markdown and LaTeX go
through a DataFrame.
The file is written beside its destination and moved into place, so a failed export
leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from xling.analysis.formats import format_frame
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

FORMATS = ("parquet", "csv", "json", "markdown", "latex")
SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".md": "markdown",
    ".markdown": "markdown",
    ".tex": "latex",
}


def exportable(wh: Warehouse) -> list[str]:
    """Tables and views users may export (xling's own bookkeeping tables start with _)."""
    rows = wh.con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_catalog = current_database() "
        "AND NOT starts_with(table_name, '_') ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def check_out_path(out: Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """`out` usable as a file to write: not a directory, in an existing writable folder."""
    out = Path(out)
    if out.is_dir():
        raise XlingError(f"{out} is a directory; pass a file path with --out")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise XlingError(f"folder {parent} does not exist; create it or pick another --out")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise XlingError(f"cannot write {out}: permission denied; pick another --out")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise XlingError(f"{out} has no known extension; use one of {', '.join(suffixes)}")
    return out


def export(
    wh: Warehouse,
    name: str,
    out: str | os.PathLike,
    fmt: str | None = None,
    *,
    run: int | None = None,
    all_runs: bool = False,
    caption: str | None = None,
    ci: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> int:
    """Write table or view `name` to `out`; returns the number of rows written.

    `fmt` defaults to the one `out`'s extension names. A view or table with a run_id column
    is filtered to `run` (default: the latest finished run) unless `all_runs`. With `ci`, a
    metric of `queries.WITH_CI` is written as its query function returns it for `run`, with
    the bootstrap's _lo/_hi columns.
    """
    import duckdb

    if ci:
        from xling.analysis.queries import WITH_CI

        if name not in WITH_CI:
            raise XlingError(f"--ci works for {', '.join(WITH_CI)}; {name!r} has no interval")
        if all_runs:
            raise XlingError("--ci exports one run; drop --all-runs")
    names = exportable(wh)
    if name not in names:
        raise XlingError(f"no table or view named {name!r}; choose one of {', '.join(names)}")
    out = check_out_path(Path(out))
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise XlingError(
                f"cannot tell the format from {out.name!r}; pass --format ({', '.join(FORMATS)})"
            )
    if fmt not in FORMATS:
        raise XlingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    columns = {
        r[0]
        for r in wh.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ?",
            [name],
        ).fetchall()
    }
    query = 'SELECT * FROM "' + name.replace('"', '""') + '"'
    params: list[object] = []
    if "run_id" in columns and not all_runs:
        query += " WHERE run_id = ?"
        params.append(wh.resolve_run(run))
    elif run is not None:
        raise XlingError(f"{name} has no run_id column; drop --run")
    if "run_id" in columns and all_runs and run is not None:
        raise XlingError("--run and --all-runs exclude each other; pass one")

    tmp = out.with_name(f".{out.name}.xling-tmp")
    frame = WITH_CI[name](wh, run, ci=True, n_boot=n_boot, seed=seed) if ci else None
    try:
        if frame is not None:
            n = len(frame)
            if fmt == "parquet":
                frame.to_parquet(tmp, index=False)
            elif fmt == "csv":
                frame.to_csv(tmp, index=False)
            else:
                cap = caption or _caption(wh, name, params)
                tmp.write_text(format_frame(frame, fmt, name=name, caption=cap), encoding="utf-8")
        elif fmt in ("parquet", "csv"):
            options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER"
            n = int(
                wh.con.execute(f"COPY ({query}) TO ? ({options})", [*params, str(tmp)]).fetchone()[
                    0
                ]
            )
        else:
            df = wh.sql(query, params)
            n = len(df)
            text = format_frame(df, fmt, name=name, caption=caption or _caption(wh, name, params))
            tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except (OSError, duckdb.IOException) as err:
        raise XlingError(f"cannot write {out}: {str(err).splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _caption(wh: Warehouse, name: str, params: list[object]) -> str:
    """'gap by layer (run 3, google/gemma-2-2b)' for a run-filtered export."""
    title = name.replace("_", " ")
    if not params:
        return title
    run = wh.run(int(params[0]))
    model = run["model"] + (f" + {run['adapter']}" if run.get("adapter") else "")
    return f"{title} (run {run['run_id']}, {model})"
