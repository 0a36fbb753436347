"""Physical layout of a run's rows: layer-contiguous row groups, so `layer = L` skips the rest.

An ingest appends chunks of phrases with all their layers, so every row group holds every
layer and a one-layer query scans the whole run. When a run finishes, `order_run_rows`
rewrites its feature_acts (and residuals) rows ordered by (layer, phrase_id, feature): each
row group then holds one layer (DuckDB's min/max statistics per row group let a layer filter
skip the others) and phrase ids ascend inside it.

    order_run_rows(con, run_id)     # inside the caller's transaction, e.g. at run finish

The rewrite appends the ordered copy and deletes the old rows by row id in the same
transaction, so a crash leaves either layout, never a mix. The old rows' blocks are freed at
the next checkpoint and reused by later writes: the file keeps room for one run's rows until
the next ingest fills it (bench/RESULTS.md has the measured cost).
"""

from __future__ import annotations

import logging
import time

import duckdb

log = logging.getLogger(__name__)

# table -> ORDER BY of its rewrite; names never come from users.
_ORDER = {
    "feature_acts": "layer, phrase_id, feature",
    "residuals": "layer, phrase_id",
}


def order_run_rows(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, int]:
    """Rewrite run `run_id`'s feature_acts and residuals rows in layer order.

    The caller owns the transaction. Returns rows rewritten per table.
    """
    done: dict[str, int] = {}
    for table, order in _ORDER.items():
        start = time.perf_counter()
        # Rows appended below get row ids past every existing one: the old rows are < first.
        first, n = con.execute(
            f"SELECT coalesce(max(rowid) + 1, 0), count(*) FILTER (WHERE run_id = ?) FROM {table}",
            [run_id],
        ).fetchone()
        if not n:
            done[table] = 0
            continue
        con.execute(
            f"INSERT INTO {table} SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}",
            [run_id],
        )
        deleted = con.execute(
            f"DELETE FROM {table} WHERE run_id = ? AND rowid < ?", [run_id, first]
        ).fetchone()[0]
        if deleted != n:
            # Never keep a duplicated or partial run; the caller's transaction rolls back.
            raise RuntimeError(f"layout rewrite of {table} deleted {deleted} of {n} rows")
        done[table] = int(n)
        log.info(
            "run %d: %s ordered by (%s), %d rows in %.1f s",
            run_id,
            table,
            order,
            n,
            time.perf_counter() - start,
        )
    return done


def layer_spans(con: duckdb.DuckDBPyConnection, table: str = "feature_acts") -> tuple[int, float]:
    """(row groups, mean layers per row group) of `table`: 1.0 means layer-contiguous."""
    if table not in _ORDER:
        raise ValueError(f"not a layered table: {table}")
    n, span = con.execute(
        "SELECT count(*), avg(stats.max::INTEGER - stats.min::INTEGER + 1) FROM ("
        "  SELECT row_group_id, any_value(stats) AS stats FROM pragma_storage_info(?) "
        "  WHERE column_name = 'layer' AND segment_type <> 'VALIDITY' GROUP BY row_group_id)",
        [table],
    ).fetchone()
    return int(n), float(span or 0.0)
