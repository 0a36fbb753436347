"""Bulk appends: rows travel as Arrow and enter DuckDB with one INSERT ... SELECT."""

from __future__ import annotations

import itertools

import duckdb
import pyarrow as pa

# Tables that bulk rows may be appended to; names never come from users.
BULK_TABLES = frozenset(
    {
        "phrases",
        "phrase_tokens",
        "feature_acts",
        "feature_acts_single",
        "feature_acts_compact",
        "residuals",
        "neuron_stats",
        "benchmarks",
        "phrase_nll",
    }
)

_counter = itertools.count()
_ROW_GROUP = 122_880


def append_arrow(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
    """Append `rows` to `table` by column name; returns the number of rows.

    Chunks are combined first: DuckDB scans one contiguous Arrow table far faster than many
    small record batches. The caller owns the transaction.
    """
    if table not in BULK_TABLES:
        raise ValueError(f"not a bulk table: {table}")
    if rows.num_rows == 0:
        return 0
    # DuckDB 2 refuses `register` while an earlier result on this connection is unfetched
    con.complete()
    name = f"_xling_in_{next(_counter)}"
    # Many small chunks scan far slower than one table, but combining large chunks only
    # copies: combine when the mean chunk is under one DuckDB row group.
    if rows.num_rows < _ROW_GROUP * max(1, rows.column(0).num_chunks):
        rows = rows.combine_chunks()
    con.register(name, rows)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        con.unregister(name)
    return rows.num_rows
