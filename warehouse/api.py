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
from xling.warehouse.connection import connect, default_db_path, hold_writer
from xling.warehouse.errors import XlingError

# Seconds a writer that released the file waits to open it again for its next commit (a
# reader may hold it for a while: a long `xling sql`).
COMMIT_WAIT = 600.0


class Warehouse:
    """A cross-lingual activation warehouse.

    >>> wh = Warehouse("xling.duckdb")           # creates and migrates if needed
    >>> wh.sql("SELECT lang, count(*) FROM phrases GROUP BY lang")
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        read_only: bool = False,
        create: bool = True,
        wait: float | None = None,
    ) -> None:
        """`wait`: seconds to retry while another process holds the file (default: the
        read wait for readers, none for writers; see connection.connect)."""
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = connect(
            self.path, read_only=read_only, create=create, wait=wait
        )
        self._released = False  # inside between_commits(): the file is open only in sessions

    # -- plumbing ---------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection (inside `between_commits()`, only within a `session()`)."""
        if self._con is None:
            raise XlingError(
                f"warehouse {self.path} is closed"
                + (
                    " between commits; open it with session() or transaction()"
                    if self._released
                    else ""
                )
            )
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextlib.contextmanager
    def between_commits(self) -> Iterator[None]:
        """For a long write (an ingest): hold the writer lock throughout and keep the file
        closed except inside `session()` / `transaction()`, so that other processes' queries
        get in between its commits while other writers are refused naming this process.

        The connection is open again afterwards. Nested use and read-only warehouses leave
        the file as it is.
        """
        if self.read_only or self._released:
            yield
            return
        with hold_writer(self.path):
            self.close()
            self._released = True
            try:
                yield
            finally:
                self._released = False
                if self._con is None:
                    self._con = connect(self.path, wait=COMMIT_WAIT)

    @contextlib.contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for a few statements: between commits the file is opened for
        them (waiting up to COMMIT_WAIT s for readers to let go) and closed after."""
        if self._con is not None:
            yield self._con
            return
        if not self._released:
            raise XlingError(f"warehouse {self.path} is closed")
        self._con = connect(self.path, wait=COMMIT_WAIT)
        try:
            yield self._con
        finally:
            con, self._con = self._con, None
            con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str, params: Sequence[Any] | dict | None = None) -> pd.DataFrame:
        """Run one query with bound parameters; returns a DataFrame."""
        with self.session() as con:
            return con.execute(query, params).df()

    def arrow(self, query: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        with self.session() as con:
            # A relation refuses to run while an execute() result is unfinished (a
            # fetchone() leaves one); finish it first.
            con.complete()
            return con.sql(query, params=params).to_arrow_table()

    def scalar(self, query: str, params: Sequence[Any] | dict | None = None) -> Any:
        # fetchall closes the result; an open one blocks the next `register` on this connection
        with self.session() as con:
            rows = con.execute(query, params).fetchall()
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: commit on success, roll back on any exception."""
        with self.session() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

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
        with self.session() as con:
            return catalog.get_run(con, run_id)

    def resolve_run(self, run_id: int | None, needs: str | None = None) -> int:
        """`run_id` checked to exist, or the newest finished run without adapter or steering;
        `needs` (features | residuals | neurons) also checks the run holds it."""
        with self.session() as con:
            return catalog.resolve_run(con, run_id, needs)

    def delete_run(self, run_id: int) -> None:
        self.run(run_id)
        with self.transaction() as con:
            catalog.delete_run(con, run_id)

    def languages(self) -> pd.DataFrame:
        return self.sql("SELECT lang, name, resource_group FROM languages ORDER BY lang")
