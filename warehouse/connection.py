"""Opening the warehouse file: paths, lock errors, migrations and views."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from importlib import resources
from pathlib import Path

import duckdb

from xling.warehouse.errors import WarehouseLocked, XlingError

log = logging.getLogger(__name__)

DEFAULT_DB = "xling.duckdb"
MIGRATIONS_TABLE = "_xling_migrations"
PARQUET_PREFIX = "parquet:"  # --db parquet:DIR reads an `xling export-parquet` directory


def default_db_path() -> Path:
    """`XLING_DB` if set, else `./xling.duckdb`."""
    return Path(os.environ.get("XLING_DB") or DEFAULT_DB)


def _sql_dir(kind: str) -> list[tuple[str, str]]:
    """(name, text) of every .sql file in sql/<kind>/, sorted by name."""
    root = resources.files("xling.sql") / kind
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrations() -> list[tuple[str, str]]:
    return _sql_dir("migrations")


def views() -> list[tuple[str, str]]:
    return _sql_dir("views")


def views_hash() -> str:
    h = hashlib.sha256()
    for name, text in views():
        h.update(name.encode())
        h.update(text.encode())
    return h.hexdigest()[:16]


_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<prog>\S+) \(PID (?P<pid>\d+)\)")


def _lock_message(path: Path, err: Exception) -> str:
    m = _LOCK_RE.search(str(err))
    holder = "another process"
    if m:
        pid = m.group("pid")
        holder = f"PID {pid} ({_process_cmdline(int(pid)) or m.group('prog')})"
    return (
        f"warehouse {path} is locked by {holder}; wait for it to finish, "
        "or query a copy of the file"
    )


def _process_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return " ".join(text.split())[:120]


def connect(
    path: str | os.PathLike | None = None, *, read_only: bool = False, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open (and, when writable, migrate) the warehouse at `path`.

    Read-only opens never create or migrate a file; they refuse a warehouse that needs
    migrating. Lock conflicts become `WarehouseLocked` naming the holder.
    """
    p = Path(path) if path is not None else default_db_path()
    if str(p).startswith(PARQUET_PREFIX):
        return _open_export(str(p)[len(PARQUET_PREFIX) :], read_only)
    if p.is_dir():
        raise XlingError(f"{p} is a directory; pass a warehouse file path with --db")
    if not p.exists() and (read_only or not create):
        raise XlingError(f"no warehouse at {p}; create one with `xling init --db {p}`")
    if not _is_duckdb_file(p):
        # DuckDB 2 opens a CSV, Parquet or JSON file as an in-memory database of views:
        # writes would "succeed" and vanish, so a data file passed as --db is refused.
        raise XlingError(
            f"{p} is not a DuckDB warehouse file; pass the warehouse with --db and data "
            "files as arguments"
        )
    try:
        con = duckdb.connect(str(p), read_only=read_only)
    except duckdb.IOException as err:
        if "lock" in str(err).lower():
            raise WarehouseLocked(_lock_message(p, err)) from None
        raise XlingError(f"cannot open warehouse {p}: {str(err).splitlines()[0]}") from None
    except duckdb.Error as err:
        raise XlingError(f"cannot open warehouse {p}: {str(err).splitlines()[0]}") from None
    try:
        if read_only:
            _check_current(con, p)
        else:
            migrate(con)
            install_views(con)
    except BaseException:
        con.close()
        raise
    return con


def _open_export(root: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not read_only:
        raise XlingError(
            f"parquet:{root} is a read-only export; write to the warehouse it came from"
        )
    from xling.warehouse.parquet import open_parquet

    return open_parquet(root)


_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def _is_duckdb_file(p: Path) -> bool:
    """True for a DuckDB file, and for a path DuckDB may create (absent or empty)."""
    try:
        with open(p, "rb") as f:
            head = f.read(12)
    except FileNotFoundError:
        return True
    except OSError as err:
        raise XlingError(f"cannot open warehouse {p}: {err.strerror}") from None
    return not head or head[8:12] == _DUCKDB_MAGIC


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [MIGRATIONS_TABLE]
    ).fetchall()[0][0]
    if not exists:
        return []
    return [
        r[0] for r in con.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name").fetchall()
    ]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations in order, each with its record in one transaction."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
        "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    done = set(applied_migrations(con))
    applied = []
    for name, text in migrations():
        if name in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(text)
            con.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def install_views(con: duckdb.DuckDBPyConnection) -> bool:
    """(Re)create every view and macro of sql/views/ when the shipped set changed."""
    con.execute("CREATE TABLE IF NOT EXISTS _xling_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    want = views_hash()
    rows = con.execute("SELECT value FROM _xling_meta WHERE key = 'views_hash'").fetchall()
    if rows and rows[0][0] == want:
        return False
    con.execute("BEGIN TRANSACTION")
    try:
        for _name, text in _dependency_order(views()):
            con.execute(text)
        con.execute("INSERT OR REPLACE INTO _xling_meta VALUES ('views_hash', ?)", [want])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True


def _dependency_order(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Views and macros ordered so each comes after the others its SQL names.

    DuckDB binds a macro when it is created, so a macro must follow what it reads.
    """
    text = dict(items)
    code = {n: re.sub(r"--[^\n]*", "", t) for n, t in items}
    deps = {n: {o for o in text if o != n and re.search(rf"\b{o}\b", code[n])} for n in text}
    out: list[str] = []
    done: set[str] = set()

    def visit(n: str, stack: tuple[str, ...] = ()) -> None:
        if n in done:
            return
        if n in stack:
            raise ValueError("views depend on each other: " + " -> ".join((*stack, n)))
        for d in sorted(deps[n]):
            visit(d, (*stack, n))
        done.add(n)
        out.append(n)

    for n in sorted(text):
        visit(n)
    return [(n, text[n]) for n in out]


def _check_current(con: duckdb.DuckDBPyConnection, p: Path) -> None:
    pending = [n for n, _ in migrations() if n not in set(applied_migrations(con))]
    stale_views = False
    if not pending:
        row = (
            con.execute("SELECT value FROM _xling_meta WHERE key = 'views_hash'").fetchall()
            if _has_table(con, "_xling_meta")
            else None
        )
        stale_views = not row or row[0][0] != views_hash()
    if pending or stale_views:
        raise XlingError(
            f"warehouse {p} was made by another xling version; "
            f"upgrade it once with `xling init --db {p}`"
        )


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0][0]
    )
