"""Opening the warehouse file: paths, locks, migrations and views.

    connect(path, read_only=..., wait=...)   a checked, migrated connection (or one line why not)
    hold_writer(path)                        the writer lock of a long write that opens the
                                             file only to commit (an ingest's chunk sink)
    init_warehouse(path, adopt=...)          `xling init`
    remove_unused_new_warehouses()           after a refused write command: drop the empty file
                                             it created

One process at a time may open a DuckDB file for writing, and while it has it open no other
process can open it at all. Readers therefore retry for a bounded time (`wait`), so a query
gets in while a writer that releases the file between commits is computing its next chunk.
A writer that releases the file keeps `<db>.lock` locked for its whole run, so other writers
are still refused with one line naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb

from xling.warehouse.errors import WarehouseLocked, XlingError

log = logging.getLogger(__name__)

DEFAULT_DB = "xling.duckdb"
MIGRATIONS_TABLE = "_xling_migrations"
PARQUET_PREFIX = "parquet:"  # --db parquet:DIR reads an `xling export-parquet` directory
# Every open of a warehouse file passes the same DuckDB configuration (DuckDB refuses a second
# connection in one process with another). default_block_size applies to files it creates:
# 64 KiB blocks instead of 256 KiB store feature rows in fewer bytes (a column segment of a
# row group fills whole blocks) and scan faster (bench/storage.py; docs/scale.md). A file
# keeps the block size it was created with.
DUCKDB_CONFIG = {"default_block_size": "65536"}
# Seconds a read-only open waits for a writer to release the file (`xling --wait`, $XLING_WAIT).
DEFAULT_READ_WAIT = 5.0
_RETRY_SECONDS = 0.05
_MIGRATION_NAME = re.compile(r"^(?P<num>\d{3})_\w+$")

_read_wait: float | None = None  # set by `xling --wait`; None: $XLING_WAIT or the default
_created: list[set[Path]] = []  # per active new_warehouses_removed_on_error(): files created
_writer_locks: dict[Path, tuple[int, int]] = {}  # path -> (fd of <db>.lock, nesting depth)


def default_db_path() -> Path:
    """`XLING_DB` if set, else `./xling.duckdb`."""
    return Path(os.environ.get("XLING_DB") or DEFAULT_DB)


def set_read_wait(seconds: float | None) -> None:
    """How long read-only opens in this process wait for a writer (None: the default)."""
    if seconds is not None and not (seconds >= 0 and seconds != float("inf")):
        raise XlingError(f"--wait must be a number of seconds >= 0, not {seconds}")
    global _read_wait
    _read_wait = seconds


def read_wait() -> float:
    """Seconds a read-only open waits: `set_read_wait`, else $XLING_WAIT, else 5."""
    if _read_wait is not None:
        return _read_wait
    raw = os.environ.get("XLING_WAIT", "").strip()
    if not raw:
        return DEFAULT_READ_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise XlingError(f"XLING_WAIT must be a number of seconds >= 0, not {raw!r}")
    return value


def _sql_dir(kind: str) -> list[tuple[str, str]]:
    """(name, text) of every .sql file in sql/<kind>/, sorted by name."""
    root = resources.files("xling.sql") / kind
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrations() -> list[tuple[str, str]]:
    """The shipped migrations in the order they apply, checked to be numbered `NNN_name`
    with no number used twice (two `005_*` files would apply in an order set by their names)."""
    items = _sql_dir("migrations")
    seen: dict[str, str] = {}
    for name, _ in items:
        m = _MIGRATION_NAME.match(name)
        if not m:
            raise XlingError(f"migration file {name}.sql is not named NNN_name.sql")
        if m["num"] in seen:
            raise XlingError(f"migrations {seen[m['num']]} and {name} share the number {m['num']}")
        seen[m["num"]] = name
    return items


def views() -> list[tuple[str, str]]:
    return _sql_dir("views")


def views_hash() -> str:
    h = hashlib.sha256()
    for name, text in views():
        h.update(name.encode())
        h.update(text.encode())
    return h.hexdigest()[:16]


# -- locks -----------------------------------------------------------------------------------

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<prog>\S+) \(PID (?P<pid>\d+)\)")


def _holder(pid: int | None, prog: str | None = None) -> str:
    if pid is None:
        return "another process"
    return f"PID {pid} ({_process_cmdline(pid) or prog or 'unknown program'})"


def _lock_message(path: Path, err: Exception, read_only: bool, waited: float) -> str:
    m = _LOCK_RE.search(str(err))
    holder = _holder(int(m["pid"]), m["prog"]) if m else _holder(None)
    if read_only:
        return (
            f"warehouse {path} is locked by {holder}, which did not release it within "
            f"{waited:g} s; wait longer with `xling --wait 60 ...`, or wait for it to finish"
        )
    return (
        f"warehouse {path} is locked by {holder}; wait for it to finish (an ingest stopped "
        "with Ctrl-C keeps its committed chunks: `xling ingest --resume RUN`)"
    )


def _process_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return " ".join(text.split())[:120]


def _lock_file(p: Path) -> Path:
    return p.with_name(p.name + ".lock")


@contextlib.contextmanager
def hold_writer(path: str | os.PathLike) -> Iterator[None]:
    """Hold the warehouse's writer lock (`<db>.lock`) for the whole of a long write.

    For a writer that opens the file only around each commit, so that readers get in
    between: while it holds this lock, `connect(..., read_only=False)` from any other
    process is refused naming it. The lock is an flock, released by the kernel when the
    process dies, so a SIGKILLed ingest leaves nothing to clean up. Reentrant per process.
    """
    p = Path(path).resolve()
    if p in _writer_locks:
        fd, depth = _writer_locks[p]
        _writer_locks[p] = (fd, depth + 1)
    else:
        try:
            fd = os.open(_lock_file(p), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise XlingError(
                f"cannot create the writer lock {_lock_file(p)}: {err.strerror}; the "
                "warehouse's folder must be writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_pid(fd)
            os.close(fd)
            raise WarehouseLocked(_writer_message(p, pid)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _writer_locks[p] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _writer_locks[p]
        if depth > 1:
            _writer_locks[p] = (fd, depth - 1)
        else:
            del _writer_locks[p]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _lock_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _writer_message(p: Path, pid: int | None) -> str:
    return (
        f"warehouse {p} is being written by {_holder(pid)}; wait for it to finish (queries "
        "can read it meanwhile; an ingest stopped with Ctrl-C keeps its committed chunks: "
        "`xling ingest --resume RUN`)"
    )


def _check_no_other_writer(p: Path) -> None:
    """Refuse a write open while another process holds `hold_writer` on the file."""
    resolved = p.resolve()
    if resolved in _writer_locks:
        return
    try:
        fd = os.open(_lock_file(resolved), os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as err:
        raise XlingError(f"cannot open {_lock_file(resolved)}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WarehouseLocked(_writer_message(resolved, _lock_pid(fd))) from None
    finally:
        os.close(fd)  # closing the descriptor drops the shared lock taken to test


def _open_file(p: Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another process holds the file, for up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(p), read_only=read_only, config=DUCKDB_CONFIG)
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise XlingError(f"cannot open warehouse {p}: {_first_line(err)}") from None
            if time.monotonic() >= deadline:
                raise WarehouseLocked(_lock_message(p, err, read_only, wait)) from None
            time.sleep(_RETRY_SECONDS)
        except duckdb.Error as err:
            raise XlingError(f"cannot open warehouse {p}: {_first_line(err)}") from None


# -- opening -----------------------------------------------------------------------------------


def connect(
    path: str | os.PathLike | None = None,
    *,
    read_only: bool = False,
    create: bool = True,
    adopt: bool = False,
    wait: float | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open (and, when writable, migrate) the warehouse at `path`.

    Read-only opens never create or migrate a file; they refuse a warehouse that needs
    migrating and install this version's views as temporary objects when the stored ones
    differ. Write opens refuse a DuckDB file that is not a warehouse unless `adopt`.
    Both refuse a warehouse made by a newer xling. `wait`: seconds to retry while another
    process holds the file (default: `read_wait()` for readers, 0 for writers). Lock
    conflicts become `WarehouseLocked` naming the holder.
    """
    p = Path(path) if path is not None else default_db_path()
    if str(p).startswith(PARQUET_PREFIX):
        return _open_export(str(p)[len(PARQUET_PREFIX) :], read_only)
    if p.is_dir():
        raise XlingError(f"{p} is a directory; pass a warehouse file path with --db")
    existed = p.exists()
    if not existed and (read_only or not create):
        raise XlingError(f"no warehouse at {p}; create one with `xling init --db {p}`")
    if not _is_duckdb_file(p):
        # DuckDB 2 opens a CSV, Parquet or JSON file as an in-memory database of views:
        # writes would "succeed" and vanish, so a data file passed as --db is refused.
        raise XlingError(
            f"{p} is not a DuckDB warehouse file; pass the warehouse with --db and data "
            "files as arguments"
        )
    if not read_only:
        _check_no_other_writer(p)
    if wait is None:
        wait = read_wait() if read_only else 0.0
    con = _open_file(p, read_only, wait)
    try:
        if read_only:
            _check_current(con, p)
        else:
            migrate(con, adopt=adopt, where=p)
            _check_tables(con, p)
            install_views(con)
    except BaseException:
        con.close()
        if not existed:
            _remove_warehouse_file(p)
        raise
    if not existed and _created:
        _created[-1].add(p.resolve())
    return con


def init_warehouse(
    path: str | os.PathLike | None = None, *, adopt: bool = False
) -> tuple[Path, int]:
    """Create or upgrade a warehouse (`xling init`); returns (path, migrations applied in all)."""
    p = Path(path) if path is not None else default_db_path()
    con = connect(p, adopt=adopt)
    try:
        n = len(applied_migrations(con))
    finally:
        con.close()
    for created in _created:
        created.discard(p.resolve())  # asked for: kept even if a later step fails
    return p, n


def _remove_warehouse_file(p: Path) -> None:
    for f in (p, p.with_name(p.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


@contextlib.contextmanager
def new_warehouses_removed_on_error() -> Iterator[None]:
    """Delete, when an `XlingError` leaves the block, the warehouse files created inside it
    that hold nothing but a fresh schema.

    Wraps a CLI command: `xling corpus load bad.csv` in an empty folder must not leave an
    empty `xling.duckdb` behind. A file still open, or holding any row a fresh warehouse
    does not have, is kept.
    """
    created: set[Path] = set()
    _created.append(created)
    try:
        yield
    except XlingError:
        for p in sorted(created):
            _remove_if_fresh(p)
        raise
    finally:
        _created.remove(created)


def _remove_if_fresh(p: Path) -> None:
    try:
        con = duckdb.connect(str(p), read_only=True, config=DUCKDB_CONFIG)
    except duckdb.Error:
        return  # still open (here or elsewhere), or gone
    try:
        fresh = _is_fresh(con)
    finally:
        con.close()
    if fresh:
        _remove_warehouse_file(p)
        log.info("removed %s: the refused command created it and it holds nothing", p)


def _is_fresh(con: duckdb.DuckDBPyConnection) -> bool:
    fresh = _fresh_schema()
    tables = [t for t in _tables(con) if t != "_xling_meta"]  # the views' hash only
    if set(tables) != set(fresh["tables"]):
        return False
    for table in tables:
        if table.startswith("_xling"):
            continue
        rows = sorted(con.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
        if rows != fresh["rows"].get(table, []):
            return False
    return True


def _open_export(root: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not read_only:
        raise XlingError(
            f"parquet:{root} is a read-only export; write to the warehouse it came from"
        )
    from xling.warehouse.parquet import HIVE_TYPES, MANIFEST, open_parquet

    path = Path(root) / MANIFEST
    if path.is_file():
        _check_manifest(path, set(HIVE_TYPES))
    try:
        return open_parquet(root)
    except duckdb.Error as err:
        raise XlingError(
            f"cannot read the export {root}: {_first_line(err)}; re-export it with "
            "`xling export-parquet`"
        ) from None


def _check_manifest(path: Path, partition_columns: set[str]) -> None:
    """Refuse a manifest that is not what `export_parquet` writes, in one line."""

    def bad(why: str) -> XlingError:
        return XlingError(
            f"{path} is not a valid xling export manifest ({why}); re-export the warehouse "
            "with `xling export-parquet DIR`"
        )

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise bad(_first_line(err)) from None
    tables = data.get("tables") if isinstance(data, dict) else None
    if not isinstance(tables, dict):
        raise bad("no 'tables' object")
    for name, meta in tables.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise bad(f"table name {name!r}")
        if not isinstance(meta, dict):
            raise bad(f"entry of {name} is not an object")
        rows, parts = meta.get("rows"), meta.get("partitions", [])
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise bad(f"rows of {name} is {rows!r}")
        if not isinstance(parts, list) or not set(map(str, parts)) <= partition_columns:
            raise bad(f"partitions of {name} are {parts!r}")
        if any(not isinstance(c, str) for c in parts):
            raise bad(f"partitions of {name} are {parts!r}")


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


# -- migrations --------------------------------------------------------------------------------


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    if not _has_table(con, MIGRATIONS_TABLE):
        return []
    return [
        r[0] for r in con.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name").fetchall()
    ]


def _pending(done: list[str], shipped: list[str], where: object) -> list[str]:
    """The shipped migrations `done` lacks, after refusing a newer or out-of-order schema."""
    known = set(shipped)
    newer = [n for n in done if n not in known]
    if newer:
        raise XlingError(
            f"warehouse {where} was made by a newer xling (it has migration {newer[-1]}, "
            f"this version knows up to {shipped[-1]}); upgrade xling to open it"
        )
    pending = [n for n in shipped if n not in set(done)]
    if pending and done and pending[0] < done[-1]:
        # A migration numbered below one already applied: on this file it would run after
        # the later one, on a new file before it. Its SQL was written for the second order.
        raise XlingError(
            f"warehouse {where} has migration {done[-1]} but not {pending[0]}, which comes "
            "before it; applying it now would run the migrations out of order (a bug in this "
            "xling version: report it, and open the file with the version that made it)"
        )
    return pending


def migrate(
    con: duckdb.DuckDBPyConnection, *, adopt: bool = False, where: object = "in memory"
) -> list[str]:
    """Apply pending migrations in order, all of them and their records in one transaction.

    A DuckDB file holding other objects but no migration record is refused unless `adopt`
    (the migrations would add xling's tables beside the user's). A failure rolls everything
    back, so the file is left exactly as it was.
    """
    shipped = [n for n, _ in migrations()]
    has_record = _has_table(con, MIGRATIONS_TABLE)
    if not has_record and not adopt and _has_user_objects(con):
        raise XlingError(_foreign_message(where))
    pending = _pending(applied_migrations(con), shipped, where)
    if has_record and not pending:
        return []
    text = dict(migrations())
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
            "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        for name in pending:
            try:
                con.execute(text[name])
            except duckdb.Error as err:
                raise XlingError(
                    f"migration {name} failed on warehouse {where}: {_first_line(err)}; "
                    "the file is unchanged"
                ) from None
            con.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (?)", [name])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    for name in pending:
        log.info("applied migration %s", name)
    return pending


def _foreign_message(where: object) -> str:
    return (
        f"{where} is a DuckDB file but not an xling warehouse (no {MIGRATIONS_TABLE}); pass "
        f"the warehouse with --db, or add xling's tables to it with `xling init --adopt --db "
        f"{where}`"
    )


def _has_user_objects(con: duckdb.DuckDBPyConnection) -> bool:
    """Anything a user made in the database: tables, views, sequences, macros, types."""
    n = con.execute(
        "SELECT (SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND NOT internal) "
        "+ (SELECT count(*) FROM duckdb_views() WHERE NOT temporary AND NOT internal) "
        "+ (SELECT count(*) FROM duckdb_sequences() WHERE NOT temporary) "
        "+ (SELECT count(*) FROM duckdb_functions() WHERE NOT internal "
        "   AND database_name = current_database())"
    ).fetchone()[0]
    return bool(n)


# -- views -------------------------------------------------------------------------------------


def install_views(con: duckdb.DuckDBPyConnection, *, temporary: bool = False) -> bool:
    """(Re)create every view and macro of sql/views/ when the shipped set changed.

    `temporary`: create them as TEMP objects of this connection instead (read-only opens of
    a warehouse whose stored views differ): they shadow the stored ones and vanish on close.
    """
    if temporary:
        for _name, text in _dependency_order(views()):
            con.execute(_as_temporary(text))
        return True
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


_CREATE_RE = re.compile(r"\bCREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\b", re.IGNORECASE)


def _as_temporary(text: str) -> str:
    return _CREATE_RE.sub(lambda m: f"CREATE OR REPLACE TEMPORARY {m[1].upper()}", text)


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


# -- checks on open ----------------------------------------------------------------------------


def _check_current(con: duckdb.DuckDBPyConnection, p: Path) -> None:
    """A read-only open: the schema must be this version's; views may differ (made TEMP)."""
    if not _has_table(con, MIGRATIONS_TABLE):
        if _has_user_objects(con):
            raise XlingError(_foreign_message(p))
        raise XlingError(
            f"{p} is an empty DuckDB file; create the warehouse with `xling init --db {p}`"
        )
    pending = _pending(applied_migrations(con), [n for n, _ in migrations()], p)
    if pending:
        raise XlingError(
            f"warehouse {p} was made by an older xling (it lacks migration {pending[0]}); "
            f"upgrade it once with `xling init --db {p}`"
        )
    _check_tables(con, p)
    row = (
        con.execute("SELECT value FROM _xling_meta WHERE key = 'views_hash'").fetchall()
        if _has_table(con, "_xling_meta")
        else None
    )
    if not row or row[0][0] != views_hash():
        # The stored views are another version's (or an edited comment changed the hash):
        # this connection uses its own, without writing to the file.
        install_views(con, temporary=True)


def _check_tables(con: duckdb.DuckDBPyConnection, p: Path) -> None:
    missing = sorted(set(migrated_tables()) - {t.lower() for t in _tables(con)})
    if missing:
        raise XlingError(
            f"warehouse {p} lacks the table{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (dropped outside xling?); restore the file from a copy"
        )


_TABLE_DDL = re.compile(
    r"\b(?:CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<create>\w+)"
    r"|DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<drop>\w+)"
    r"|ALTER\s+TABLE\s+(?P<old>\w+)\s+RENAME\s+TO\s+(?P<new>\w+))",
    re.IGNORECASE,
)


@functools.cache
def migrated_tables() -> tuple[str, ...]:
    """The tables the shipped migrations leave, read from their SQL (opening an in-memory
    database to run them would cost every command a third of a second; a test checks that
    this reading equals running them)."""
    tables: set[str] = {MIGRATIONS_TABLE}
    for _name, text in migrations():
        for m in _TABLE_DDL.finditer(re.sub(r"--[^\n]*", "", text)):
            if m["create"]:
                tables.add(m["create"].lower())
            elif m["drop"]:
                tables.discard(m["drop"].lower())
            else:
                tables.discard(m["old"].lower())
                tables.add(m["new"].lower())
    return tuple(sorted(tables))


@functools.cache
def _fresh_schema() -> dict:
    """The tables, and the rows they are seeded with, of a freshly migrated warehouse
    (without _xling_meta, which only records the views' hash)."""
    con = duckdb.connect(":memory:")
    try:
        migrate(con)
        tables = _tables(con)
        rows = {
            t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in tables
            if not t.startswith("_xling")
        }
    finally:
        con.close()
    return {"tables": tables, "rows": {t: r for t, r in rows.items() if r}}


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
            "AND database_name = current_database() AND schema_name = 'main' ORDER BY 1"
        ).fetchall()
    ]


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0][0]
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
