"""`xling export`: any table or view of the warehouse to Parquet, CSV, JSON, Markdown or LaTeX.

Names are checked against the catalog (information_schema), never formatted into SQL from
user text; the run filter and the file name are bound parameters.

The metric views (gap_by_layer, gap_by_lang, gap_by_lang_summary, activation_scores,
similarity_by_layer) are read through the same functions as `xling query`, so `export` takes
the same options (mode, stat, k, ...) and writes the same table as `query -f FORMAT`; the
options go into the LaTeX caption. Other tables and views are copied as stored: Parquet and
CSV stream through DuckDB's COPY (a 100 M-row table never sits in memory), JSON, Markdown
and LaTeX go through Arrow (NULL stays apart from NaN).

Rows come in one order at every call: run, layer, then language in catalogue order, then
the remaining columns; so two exports of the same warehouse are byte-identical. Writes go
through `analysis.output` (never the warehouse, never over a file without `force`).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.analysis import queries
from xling.analysis.defaults import DEFAULT_K, MODES, STATS
from xling.analysis.formats import Grid, format_grid
from xling.analysis.output import check_out_file, write_atomic
from xling.analysis.style import catalogue, sort_rows
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

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
# metric views read through the query functions: name -> (function, takes score options)
METRICS: dict[str, tuple[Any, bool]] = {
    "gap_by_layer": (queries.gap, True),
    "gap_by_lang": (queries.gap_by_lang, True),
    "gap_by_lang_summary": (queries.languages, True),
    "activation_scores": (queries.scores, True),
    "similarity_by_layer": (queries.similarity, False),
}
# column types that make no sense (or cost too much) as sort keys
_UNSORTABLE = ("[]", "BLOB", "STRUCT", "MAP", "UNION")


@contextlib.contextmanager
def one_thread(wh: Warehouse) -> Iterator[None]:
    """Run the block's queries on one DuckDB thread, then restore the setting.

    A parallel avg() adds its partial sums in whatever order the threads finish, so the last
    bits of a metric can differ between two calls; one thread makes exports reproducible.
    """
    threads = wh.scalar("SELECT current_setting('threads')")
    wh.con.execute("SET threads = 1")
    try:
        yield
    finally:
        wh.con.execute(f"SET threads = {int(threads)}")


def exportable(wh: Warehouse) -> list[str]:
    """Tables and views users may export (xling's own bookkeeping tables start with _)."""
    rows = wh.con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_catalog = current_database() "
        "AND NOT starts_with(table_name, '_') ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def caption_for(wh: Warehouse, name: str, run: int | None, options: dict[str, Any]) -> str:
    """'gap by layer (run 3, google/gemma-2-2b; mode origin, stat max, k 16)'."""
    title = name.replace("_", " ")
    parts = []
    if run is not None:
        rec = wh.run(run)
        model = rec["model"] + (f" + {rec['adapter']}" if rec.get("adapter") else "")
        parts.append(f"run {run}, {model}")
    opts = ", ".join(f"{k} {v}" for k, v in options.items() if v is not None)
    if opts:
        parts.append(opts)
    return f"{title} ({'; '.join(parts)})" if parts else title


_SCORE_OPTIONS = ("mode", "stat", "k")


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (None and False mean "not asked")."""
    return {k: v for k, v in options.items() if v is not None and v is not False}


def _metric_options(
    wh: Warehouse, name: str, run: int | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The options as the query resolved them (mode None -> the run's default mode)."""
    out = _given(options)
    if not METRICS[name][1]:
        return out
    out["stat"] = out.get("stat") or "max"
    out["k"] = out.get("k") or DEFAULT_K
    if out.get("mode") is None and run is not None:
        out["mode"] = queries.resolve_mode(wh, run, None)
    if out.get("mode") == "origin":
        out.pop("k", None)  # k picks features only in the top-k modes
    return {k: out[k] for k in [*_SCORE_OPTIONS, *options] if k in out}


def _metric_frame(
    wh: Warehouse, name: str, run: int | None, all_runs: bool, options: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    import pandas as pd

    fn, scored = METRICS[name]
    kwargs = _given(options)
    if not scored and any(k in kwargs for k in _SCORE_OPTIONS):
        raise XlingError(f"{name} takes no score options; drop --mode/--stat/--k")
    takes = inspect.signature(fn).parameters
    unknown = [k for k in kwargs if k not in takes]
    if unknown:
        raise XlingError(f"{name} takes no {', '.join('--' + k for k in unknown)}; drop it")
    if kwargs.get("mode") is not None and kwargs["mode"] not in MODES:
        raise XlingError(f"unknown mode {kwargs['mode']!r}; use one of {', '.join(MODES)}")
    if kwargs.get("stat") is not None and kwargs["stat"] not in STATS:
        raise XlingError(f"unknown stat {kwargs['stat']!r}; use one of {', '.join(STATS)}")
    if all_runs:
        runs = [
            int(r[0])
            for r in wh.con.execute(
                "SELECT run_id FROM runs WHERE status = 'finished' ORDER BY run_id"
            ).fetchall()
        ]
        frames = []
        for r in runs:
            try:
                frames.append(fn(wh, r, **kwargs))
            except XlingError:
                continue  # a run this metric cannot answer (no residuals, no English, ...)
        df = pd.concat(frames, ignore_index=True) if frames else fn(wh, None, **kwargs)
        return df, kwargs
    run_id = wh.resolve_run(run)
    return fn(wh, run_id, **kwargs), _metric_options(wh, name, run_id, options)


def export(
    wh: Warehouse,
    name: str,
    out: str | os.PathLike,
    fmt: str | None = None,
    *,
    run: int | None = None,
    all_runs: bool = False,
    caption: str | None = None,
    force: bool = False,
    **options: Any,
) -> int:
    """Write table or view `name` to `out`; returns the number of rows written.

    `fmt` defaults to the one `out`'s extension names. A view or table with a run_id column
    is filtered to `run` (default: the latest finished run) unless `all_runs`. `options`
    (mode, stat, k, and whatever else the query functions take) go to the metric views'
    query functions; None or False means "not asked" and is not passed.
    """
    import duckdb

    if options.get("ci"):
        from xling.analysis.queries import WITH_CI

        if name not in WITH_CI:
            raise XlingError(f"--ci works for {', '.join(WITH_CI)}; {name!r} has no interval")
        if all_runs:
            raise XlingError("--ci exports one run; drop --all-runs")
    names = exportable(wh)
    if name not in names:
        raise XlingError(f"no table or view named {name!r}; choose one of {', '.join(names)}")
    out = check_out_file(Path(out), warehouse=wh.path, force=force)
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise XlingError(
                f"cannot tell the format from {out.name!r}; pass --format ({', '.join(FORMATS)})"
            )
    if fmt not in FORMATS:
        raise XlingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if all_runs and run is not None:
        raise XlingError("--run and --all-runs exclude each other; pass one")
    order = catalogue(wh)

    if name in METRICS:
        with one_thread(wh):
            df, used = _metric_frame(wh, name, run, all_runs, options)
        df = sort_rows(df, order)
        run_id = None if all_runs else int(df["run_id"].iloc[0]) if len(df) else wh.resolve_run(run)
        text_caption = caption or caption_for(wh, name, run_id, used)

        def write(tmp: Path) -> None:
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
            else:
                text = format_grid(Grid.from_frame(df), fmt, name=name, caption=text_caption)
                tmp.write_text(text, encoding="utf-8")

        write_atomic(out, write)
        return len(df)

    if _given(options):
        raise XlingError(
            f"{name} is not a metric view; --mode/--stat/--k apply to {', '.join(METRICS)}"
        )
    columns = wh.con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [name],
    ).fetchall()
    column_names = [c for c, _ in columns]
    query = 'SELECT * FROM "' + name.replace('"', '""') + '"'
    params: list[object] = []
    run_id = None
    if "run_id" in column_names and not all_runs:
        run_id = wh.resolve_run(run)
        query += " WHERE run_id = ?"
        params.append(run_id)
    elif run is not None:
        raise XlingError(f"{name} has no run_id column; drop --run")
    query += " ORDER BY " + _order_by(columns, params, order)

    written = 0

    def write_rows(tmp: Path) -> None:
        nonlocal written
        if fmt in ("parquet", "csv"):
            options_sql = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER"
            written = int(
                wh.con.execute(
                    f"COPY ({query}) TO ? ({options_sql})", [*params, str(tmp)]
                ).fetchone()[0]
            )
        else:
            grid = Grid.from_arrow(wh.arrow(query, params))
            written = len(grid.rows)
            text = format_grid(
                grid, fmt, name=name, caption=caption or caption_for(wh, name, run_id, {})
            )
            tmp.write_text(text, encoding="utf-8")

    try:
        write_atomic(out, write_rows)
    except duckdb.IOException as err:
        raise XlingError(f"cannot write {out}: {str(err).splitlines()[0]}") from None
    return written


def _order_by(columns: list[tuple[str, str]], params: list[object], order: list[str]) -> str:
    """ORDER BY for a stored table: run, layer, languages in catalogue order, then the rest."""

    def quoted(c: str) -> str:
        return '"' + c.replace('"', '""') + '"'

    sortable = [c for c, t in columns if not any(u in t.upper() for u in _UNSORTABLE)]
    first = [c for c in ("run_id", "layer") if c in sortable]
    keys = [quoted(c) for c in first]
    for c in ("lang", "lang_a", "lang_b"):
        if c in sortable:
            keys.append(f"coalesce(list_position(?::VARCHAR[], {quoted(c)}), {len(order) + 1})")
            params.append(order)
            first.append(c)
    keys += [quoted(c) for c in sortable if c not in first or c in ("lang", "lang_a", "lang_b")]
    return ", ".join(keys) if keys else "1"
