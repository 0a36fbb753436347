"""Ad-hoc SQL for `xling sql`: read-only by construction unless writing is asked for.

Without `write`, four independent guards apply: every statement must be a read (SELECT and
its relatives, PIVOT, EXPLAIN of a read, checked by DuckDB's own parser), the file is opened
read-only, external access (files, ATTACH, COPY, extensions) is off with no directory or path
allowed, and the configuration is locked so SQL cannot turn the guards back off. With
`write`, all statements run in one transaction, so transaction statements are refused.

A query runs in a worker thread: Ctrl-C in the caller and `timeout` both cancel it with
DuckDB's `interrupt()`, which stops it between vectors and rolls its transaction back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

import duckdb
import pandas as pd

from xling.warehouse.connection import PARQUET_PREFIX, connect
from xling.warehouse.errors import XlingError

# Statement kinds a read-only query may contain. Everything else (DDL, DML, ATTACH, COPY,
# PRAGMA, SET, CALL, LOAD, ...) needs --write. EXPLAIN and MULTI are checked further below.
_READ_ONLY_KINDS = {duckdb.StatementType.SELECT}
_TOKEN = duckdb.token_type


@dataclass
class SqlResult:
    """The last statement's rows, at most `limit` of them; `truncated`: more rows existed."""

    frame: pd.DataFrame
    truncated: bool = False


def run_sql(
    path: str | os.PathLike | None,
    query: str,
    *,
    write: bool = False,
    limit: int | None = None,
    timeout: float | None = None,
) -> SqlResult:
    """Run `query` (one or more statements) and return the last statement's result.

    `limit`: keep at most this many rows of the result (None: all). `timeout`: cancel the
    query after this many seconds.
    """
    if limit is not None and limit < 0:
        raise XlingError(f"--limit must be 0 or more, not {limit}")
    if timeout is not None and not (0 < timeout < float("inf")):
        raise XlingError(f"--timeout must be a positive number of seconds, not {timeout}")
    statements = _parse(query)
    if write:
        txn = [s for s in statements if s.type == duckdb.StatementType.TRANSACTION]
        if txn:
            raise XlingError(
                f"{_head(txn[0].query)} is a transaction statement; `xling sql --write` runs "
                "all its statements in one transaction already, so leave them out"
            )
    else:
        bad = [s for s in statements if not _is_read(s)]
        if bad:
            raise XlingError(
                f"{_kind(bad[0])} statements change data or reach outside the warehouse; "
                "`xling sql` is read-only unless you pass --write"
            )
    con = connect(path, read_only=not write, create=False)
    spill = None
    try:
        if not write:
            spill = tempfile.mkdtemp(prefix="xling-sql-")
            _lock_down(con, spill, export=str(path or "").startswith(PARQUET_PREFIX))
            return _run_cancellable(con, statements, limit, timeout)
        con.execute("BEGIN TRANSACTION")
        try:
            out = _run_cancellable(con, statements, limit, timeout)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return out
    finally:
        con.close()
        if spill:
            shutil.rmtree(spill, ignore_errors=True)


def _parse(query: str) -> list:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as err:
        raise XlingError(f"SQL does not parse: {_message(err)}") from None
    if not statements:
        raise XlingError("no SQL statement given")
    return statements


def _is_read(stmt) -> bool:
    """True for a statement that only reads: SELECT, PIVOT, or EXPLAIN [ANALYZE] of a read.

    EXPLAIN ANALYZE executes its statement, so `EXPLAIN ANALYZE COPY ... TO 'f'` writes `f`;
    the statement after EXPLAIN's options is parsed again and must itself be a read.
    """
    if stmt.type in _READ_ONLY_KINDS:
        return True
    first = _first_keyword(stmt.query)
    if stmt.type == duckdb.StatementType.MULTI and first == "PIVOT":
        # DuckDB parses PIVOT (without an IN list) into several statements; PIVOT only reads.
        return True
    if stmt.type == duckdb.StatementType.EXPLAIN or (
        stmt.type == duckdb.StatementType.MULTI and first == "EXPLAIN"  # EXPLAIN PIVOT ...
    ):
        inner = _explained(stmt.query)
        if inner is None:
            return False
        try:
            parsed = duckdb.extract_statements(inner)
        except duckdb.Error:
            return False
        return len(parsed) == 1 and _is_read(parsed[0])
    return False


def _code_tokens(text: str) -> list[tuple[int, str]]:
    """(offset, word) of every token that is not a comment."""
    out = []
    tokens = duckdb.tokenize(text)
    for i, (start, kind) in enumerate(tokens):
        if kind == _TOKEN.comment:
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        out.append((start, text[start:end].strip()))
    return out


def _first_keyword(text: str) -> str | None:
    tokens = _code_tokens(text)
    return tokens[0][1].upper() if tokens else None


def _explained(text: str) -> str | None:
    """The statement an EXPLAIN statement explains, or None when it cannot be found."""
    tokens = _code_tokens(text)
    if not tokens or tokens[0][1].upper() != "EXPLAIN":
        return None
    i = 1
    if i < len(tokens) and tokens[i][1] == "(":  # EXPLAIN (ANALYZE, FORMAT json) ...
        depth = 0
        while i < len(tokens):
            depth += tokens[i][1].count("(") - tokens[i][1].count(")")
            i += 1
            if depth <= 0:
                break
    elif i < len(tokens) and tokens[i][1].upper() in {"ANALYZE", "ANALYSE"}:
        i += 1
    return text[tokens[i][0] :] if i < len(tokens) else None


def _kind(stmt) -> str:
    if stmt.type in (duckdb.StatementType.EXPLAIN, duckdb.StatementType.MULTI):
        return f"{_head(stmt.query)} (of a statement that is not a read)"
    return stmt.type.name


def _head(text: str) -> str:
    words = [w for _, w in _code_tokens(text)[:2]]
    return " ".join(words).upper() or "empty"


def _lock_down(con: duckdb.DuckDBPyConnection, spill: str, *, export: bool) -> None:
    """DuckDB's own guards, set before any user SQL runs.

    With external access off DuckDB still allows its temporary directory (by default
    `<warehouse>.tmp/`, a folder users may keep things in): it is moved to `spill`, a
    private folder removed afterwards, so large sorts still spill but nothing outside it
    is reachable. A `parquet:` export keeps the one directory its views read (set by
    `open_parquet`); nothing can write there, since every writing statement is refused.
    """
    con.execute("SET temp_directory = ?", [spill])
    con.execute("SET enable_progress_bar = false")  # it would print into the output
    if not export:
        con.execute("SET allowed_directories = []")
    con.execute("SET allowed_paths = []")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _run_cancellable(
    con: duckdb.DuckDBPyConnection, statements: list, limit: int | None, timeout: float | None
) -> SqlResult:
    box: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["out"] = _execute_all(con, statements, limit)
        except BaseException as err:  # handed to the caller's thread
            box["err"] = err
        finally:
            done.set()

    # An Event, not Thread.join: a join interrupted by Ctrl-C can return early afterwards.
    threading.Thread(target=work, name="xling-sql", daemon=True).start()
    cancelled = None
    try:
        if not done.wait(timeout):
            cancelled = f"the query ran past --timeout {timeout:g} s and was cancelled"
    except KeyboardInterrupt:
        cancelled = "the query was cancelled (Ctrl-C)"
    if cancelled:
        con.interrupt()
        done.wait()
        raise XlingError(cancelled)
    if "err" in box:
        raise box["err"]
    return box["out"]


def _execute_all(con: duckdb.DuckDBPyConnection, statements: list, limit: int | None) -> SqlResult:
    result = None
    for stmt in statements:
        try:
            result = con.execute(stmt)
        except duckdb.Error as err:
            raise XlingError(f"SQL error: {_message(err)}") from None
    if result is None or result.description is None:
        return SqlResult(pd.DataFrame())
    try:
        if limit is None:
            return SqlResult(result.df())
        return _fetch_limited(result, limit)
    except duckdb.Error as err:
        raise XlingError(f"SQL error: {_message(err)}") from None


def _fetch_limited(result: duckdb.DuckDBPyConnection, limit: int) -> SqlResult:
    """At most `limit` rows, reading only as many vectors as they need."""
    names = [d[0] for d in result.description]
    parts: list[pd.DataFrame] = []
    n = 0
    while n <= limit:
        chunk = result.fetch_df_chunk(1)
        if chunk.empty:
            break
        parts.append(chunk)
        n += len(chunk)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    truncated = n > limit
    if truncated:
        frame = frame.iloc[:limit]
    # the rest is dropped with the result: COMMIT and close do not need it drained
    return SqlResult(frame, truncated)


def _message(err: Exception) -> str:
    """DuckDB's error on one line: its first line, plus its hint when it gives one."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    hints = [line for line in lines[1:] if line.startswith(("Did you mean", "Candidate bindings"))]
    return " ".join([lines[0], *hints])
