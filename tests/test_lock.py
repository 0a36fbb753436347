"""A second process gets one clear line naming the lock holder, quickly, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from xling.warehouse import Warehouse
from xling.warehouse.errors import WarehouseLocked

HOLD = """
import sys, time
from xling.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(db_path):
    Warehouse(db_path).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("read_only", [False, True])
def test_second_process_is_told_who_holds_the_lock(holder, db_path, read_only):
    start = time.monotonic()
    with pytest.raises(WarehouseLocked) as err:
        Warehouse(db_path, read_only=read_only)
    assert time.monotonic() - start < 1.0
    msg = str(err.value)
    assert f"PID {holder.pid}" in msg and "\n" not in msg


def test_cli_reports_the_lock_in_one_line(holder, db_path, cli):
    res = cli("sql", "SELECT 1", "--db", db_path)
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: warehouse") and f"PID {holder.pid}" in res.stderr
    assert res.stderr.count("\n") == 1
