"""The `Warehouse` Python API: one DuckDB file, DataFrames and Arrow out.

The warehouse is the lowest layer: it knows tables, views and the catalog, nothing of how
they are filled or read. The metrics are functions of `xling.analysis` that take a
`Warehouse` (`analysis.gap(wh, layer=0)`); see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from xling.warehouse import catalog
from xling.warehouse.catalog import RunRecord
from xling.warehouse.connection import connect, default_db_path


class Warehouse:
    """A cross-lingual activation warehouse.

    >>> wh = Warehouse("xling.duckdb")           # creates and migrates if needed
    >>> wh.sql("SELECT lang, count(*) FROM phrases GROUP BY lang")
    """

    def __init__(
        self, path: str | os.PathLike | None = None, *, read_only: bool = False, create: bool = True
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        self.con: duckdb.DuckDBPyConnection = connect(self.path, read_only=read_only, create=create)

    # -- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str, params: Sequence[Any] | dict | None = None) -> pd.DataFrame:
        """Run one query with bound parameters; returns a DataFrame."""
        return self.con.execute(query, params).df()

    def arrow(self, query: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        # A relation refuses to run while an execute() result is unfinished (a fetchone()
        # leaves one); finish it first.
        self.con.complete()
        return self.con.sql(query, params=params).to_arrow_table()

    def scalar(self, query: str, params: Sequence[Any] | dict | None = None) -> Any:
        # fetchall closes the result; an open one blocks the next `register` on this connection
        rows = self.con.execute(query, params).fetchall()
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: commit on success, roll back on any exception."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def engine(self):
        """A SQLAlchemy engine (dialect `duckdb`) over this warehouse, for users' tools.

        Its connections are cursors of this object's connection: DuckDB refuses a second
        connection to the same file in one process with a different configuration, which
        is what `create_engine("duckdb:///path")` would open. From another process, use
        `create_engine(f"duckdb:///{path}")` directly.
        """
        import sqlalchemy
        from duckdb_engine import ConnectionWrapper

        return sqlalchemy.create_engine(
            "duckdb://", creator=lambda: ConnectionWrapper(self.con.cursor())
        )

    # -- catalog (warehouse/catalog.py owns the rows) ---------------------------------
    def runs(self) -> pd.DataFrame:
        return self.sql(
            "SELECT r.run_id, m.name AS model, coalesce(r.adapter, m.adapter) AS adapter, "
            "r.status, r.n_phrases, r.n_rows, r.started_at, r.finished_at "
            "FROM runs r JOIN models m USING (model_id) ORDER BY r.run_id"
        )

    def run(self, run_id: int) -> RunRecord:
        """The run's typed record (`record["status"]` reads a field too)."""
        return catalog.get_run(self.con, run_id)

    def resolve_run(self, run_id: int | None, needs: str | None = None) -> int:
        """`run_id` checked to exist, or the newest finished run without adapter or steering;
        `needs` (features | residuals | neurons) also checks the run holds it."""
        return catalog.resolve_run(self.con, run_id, needs)

    def delete_run(self, run_id: int) -> None:
        self.run(run_id)
        with self.transaction() as con:
            catalog.delete_run(con, run_id)

    def languages(self) -> pd.DataFrame:
        return self.sql("SELECT lang, name, resource_group FROM languages ORDER BY lang")
