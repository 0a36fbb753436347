"""Two processes and one warehouse: a writer is refused at once with one line naming the
holder; a reader waits (bounded) for the holder to release the file, then reads; a writer
that holds `hold_writer` between commits still refuses other writers."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from xling.warehouse import Warehouse
from xling.warehouse.connection import hold_writer
from xling.warehouse.errors import WarehouseLocked

HOLD = """
import sys, time
from xling.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
wh.close()
print("released", flush=True)
time.sleep(60)
"""

HOLD_WRITER = """
import sys, time
from xling.warehouse.connection import hold_writer
with hold_writer(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(60)
"""


def _start(script: str, *args) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def holder(db_path):
    Warehouse(db_path).close()
    proc = _start(HOLD, db_path, 60)
    yield proc
    proc.kill()
    proc.wait()


def test_a_writer_is_told_at_once_who_holds_the_lock(holder, db_path):
    start = time.monotonic()
    with pytest.raises(WarehouseLocked) as err:
        Warehouse(db_path)
    assert time.monotonic() - start < 1.0
    msg = str(err.value)
    assert f"PID {holder.pid}" in msg and "\n" not in msg
    assert "copy" not in msg  # a copy of a file being written misses what is in its .wal


def test_a_reader_waits_then_says_how_to_wait_longer(holder, db_path):
    start = time.monotonic()
    with pytest.raises(WarehouseLocked) as err:
        Warehouse(db_path, read_only=True)  # the library waits like the CLI: 5 s by default
    waited = time.monotonic() - start
    assert 5.0 <= waited < 10.0
    msg = str(err.value)
    assert f"PID {holder.pid}" in msg and "within 5 s" in msg and "--wait" in msg


def test_cli_reader_wait_is_bounded_by_the_option(holder, db_path, cli):
    start = time.monotonic()
    res = cli("--wait", "0.5", "sql", "SELECT 1", "--db", db_path)
    assert time.monotonic() - start < 4.0
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: warehouse") and f"PID {holder.pid}" in res.stderr
    assert "within 0.5 s" in res.stderr and res.stderr.count("\n") == 1


def test_a_reader_gets_in_once_the_holder_releases(db_path, cli):
    Warehouse(db_path).close()
    proc = _start(HOLD, db_path, 1.5)
    try:
        start = time.monotonic()
        res = cli("--wait", "30", "sql", "SELECT count(*) AS n FROM languages", "--db", db_path)
        assert res.exit_code == 0, res.stderr
        assert "10" in res.stdout
        assert time.monotonic() - start < 25
        assert proc.stdout.readline().strip() == "released"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("wait", ["-1", "nan", "inf"])
def test_bad_wait_is_one_line(wait, db_path, cli):
    Warehouse(db_path).close()
    res = cli("--wait", wait, "sql", "SELECT 1", "--db", db_path)
    assert res.exit_code == 1 and res.stderr.startswith("Error: --wait")


def test_bad_wait_variable_is_one_line(db_path, cli, monkeypatch):
    Warehouse(db_path).close()
    monkeypatch.setenv("XLING_WAIT", "soon")
    res = cli("sql", "SELECT 1", "--db", db_path)
    assert res.exit_code == 1 and res.stderr.startswith("Error: XLING_WAIT")


def test_a_long_writer_between_commits_refuses_writers_not_readers(db_path, cli):
    """`hold_writer` is what an ingest holds while it computes: readers read, writers are
    told who holds it, at once."""
    Warehouse(db_path).close()
    proc = _start(HOLD_WRITER, db_path)
    try:
        start = time.monotonic()
        with pytest.raises(WarehouseLocked) as err:
            Warehouse(db_path)
        assert time.monotonic() - start < 1.0
        assert f"PID {proc.pid}" in str(err.value) and "\n" not in str(err.value)
        res = cli("runs", "list", "--db", db_path, "-f", "csv")
        assert res.exit_code == 0, res.stderr
        res = cli("sql", "DELETE FROM languages", "--write", "--db", db_path)
        assert res.exit_code == 1 and f"PID {proc.pid}" in res.stderr
        assert res.stderr.count("\n") == 1
    finally:
        proc.kill()
        proc.wait()
    with Warehouse(db_path) as wh:  # the kernel dropped the dead holder's lock
        assert wh.scalar("SELECT count(*) FROM languages") == 10


def test_hold_writer_is_reentrant_and_lets_its_own_process_write(db_path):
    Warehouse(db_path).close()
    with hold_writer(db_path), hold_writer(db_path), Warehouse(db_path) as wh:
        wh.con.execute("DELETE FROM languages WHERE lang = 'hi'")
    with hold_writer(db_path), Warehouse(db_path, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM languages") == 9


def test_hold_writer_in_a_folder_without_write_access_is_one_line(tmp_path):
    from xling.warehouse.errors import XlingError

    missing = tmp_path / "no-such-folder" / "w.duckdb"
    with pytest.raises(XlingError, match="cannot create the writer lock"), hold_writer(missing):
        pass
