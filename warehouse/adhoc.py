"""Ad-hoc SQL for `xling sql`: read-only by construction unless writing is asked for."""

from __future__ import annotations

import os

import duckdb
import pandas as pd

from xling.warehouse.connection import connect
from xling.warehouse.errors import XlingError

# Statement kinds a read-only query may contain. Everything else (DDL, DML, ATTACH, COPY,
# PRAGMA, SET, CALL, LOAD, ...) needs --write.
_READ_ONLY_KINDS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def run_sql(path: str | os.PathLike | None, query: str, *, write: bool = False) -> pd.DataFrame:
    """Run `query` (one or more statements) and return the last statement's result.

    Without `write`, three independent guards apply: only SELECT/EXPLAIN statements are
    accepted, the file is opened read-only, and external access (files, ATTACH, COPY) is off
    and locked. With `write`, all statements run in one transaction.
    """
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise XlingError(f"SQL does not parse: {_first_line(err)}") from None
    if not statements:
        raise XlingError("no SQL statement given")
    if not write:
        bad = [s.type.name for s in statements if s.type not in _READ_ONLY_KINDS]
        if bad:
            raise XlingError(
                f"{bad[0]} statements change data or reach outside the warehouse; "
                "`xling sql` is read-only unless you pass --write"
            )
    con = connect(path, read_only=not write, create=False)
    try:
        if not write:
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            return _execute_all(con, statements)
        con.execute("BEGIN TRANSACTION")
        try:
            out = _execute_all(con, statements)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return out
    finally:
        con.close()


def _execute_all(con: duckdb.DuckDBPyConnection, statements: list) -> pd.DataFrame:
    result = None
    for stmt in statements:
        try:
            result = con.execute(stmt)
        except duckdb.Error as err:
            raise XlingError(f"SQL error: {_first_line(err)}") from None
    if result is None or result.description is None:
        return pd.DataFrame()
    return result.df()


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
