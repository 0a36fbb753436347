"""`xling sql` guards beyond the statement list of test_safety: EXPLAIN ANALYZE of a write,
DuckDB's own file guards, one transaction under --write, and the command's input, output
limit and cancellation."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import duckdb
import pytest
from test_bad_input import assert_one_error_line

from xling.warehouse import Warehouse
from xling.warehouse.adhoc import _lock_down, run_sql
from xling.warehouse.errors import XlingError


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory) -> Path:
    from tinymodel import cldr_phrases, insert_phrases

    db = tmp_path_factory.mktemp("guards") / "w.duckdb"
    with Warehouse(db) as wh:
        insert_phrases(wh, cldr_phrases(3))
    return db


@pytest.fixture
def db(corpus_db, tmp_path) -> Path:
    out = tmp_path / "w.duckdb"
    shutil.copy(corpus_db, out)
    return out


@pytest.fixture
def export(db, tmp_path) -> Path:
    from xling.warehouse.parquet import export_parquet

    out = tmp_path / "export"
    with Warehouse(db, read_only=True) as wh:
        export_parquet(wh, out)
    return out


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


EXPLAIN_WRITES = [
    "EXPLAIN ANALYZE COPY (SELECT 'xx' AS lang) TO '{target}' (FORMAT parquet)",
    "explain analyse copy (select 1) to '{target}'",
    "/* c */ EXPLAIN /* d */ ANALYZE -- e\n COPY (SELECT 1) TO '{target}'",
    "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1) TO '{target}'",
    "EXPLAIN (ANALYZE) COPY (SELECT 1) TO '{target}'",
    "EXPLAIN ANALYZE WITH x AS (SELECT 1) INSERT INTO languages SELECT 'xx', 'X', 'low'",
    "EXPLAIN ANALYZE COPY languages FROM '{target}'",
    "EXPLAIN ANALYZE UPDATE languages SET name = 'x'",
    "EXPLAIN ANALYZE INSERT INTO languages VALUES ('xx', 'X', 'low')",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN ANALYZE DELETE FROM languages",
    "SELECT 1; EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}'",
]


@pytest.mark.parametrize("stmt", EXPLAIN_WRITES)
def test_explain_analyze_cannot_overwrite_a_parquet_export(stmt, export, cli):
    before = _tree(export)
    target = export / "languages.parquet"
    res = cli("sql", "--db", f"parquet:{export}", "--", stmt.format(target=target))
    assert_one_error_line(res, "read-only unless you pass --write")
    assert _tree(export) == before


@pytest.mark.parametrize("stmt", EXPLAIN_WRITES)
def test_explain_analyze_cannot_write_into_the_warehouse_temp_folder(stmt, db, cli):
    spill = db.with_name(db.name + ".tmp")
    spill.mkdir()
    before = db.read_bytes()
    res = cli("sql", "--db", db, "--", stmt.format(target=spill / "x.csv"))
    assert_one_error_line(res)
    assert list(spill.iterdir()) == []
    assert db.read_bytes() == before


def test_duckdb_guards_hold_without_the_statement_check(db, tmp_path):
    """The second line of defence alone: a COPY that bypassed the parser check still fails,
    in the default temp folder too, and SQL cannot turn the guards back off."""
    spill = db.with_name(db.name + ".tmp")
    spill.mkdir()
    private = tmp_path / "private-spill"
    private.mkdir()
    con = duckdb.connect(str(db), read_only=True)
    try:
        _lock_down(con, str(private), export=False)
        for target in (spill / "x.csv", tmp_path / "y.csv"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"COPY (SELECT 1) TO '{target}'")
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/hostname')")
        for setting in ("enable_external_access = true", "allowed_directories = ['/']"):
            with pytest.raises(duckdb.Error, match="lock"):
                con.execute(f"SET {setting}")
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('enable_external_access', 'lock_configuration', 'allowed_paths')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings["enable_external_access"] == "false"
    assert settings["lock_configuration"] == "true"
    assert list(spill.iterdir()) == [] and not (tmp_path / "y.csv").exists()


READS = [
    ("EXPLAIN ANALYZE SELECT count(*) FROM phrases", "analyzed_plan"),
    ("EXPLAIN (ANALYZE, FORMAT json) SELECT count(*) FROM phrases", "analyzed_plan"),
    ("/* x */ EXPLAIN ANALYZE FROM phrases", "analyzed_plan"),
    ("EXPLAIN ANALYZE PIVOT phrases ON lang USING count(*)", "analyzed_plan"),
]


@pytest.mark.parametrize(("stmt", "expect"), READS)
def test_explain_analyze_of_a_read_still_answers(stmt, expect, db, cli):
    before = db.read_bytes()
    res = cli("sql", "--db", db, "-f", "csv", "--", stmt)
    assert res.exit_code == 0, res.stderr
    assert expect in res.stdout
    assert db.read_bytes() == before


def test_pivot_is_a_read(db, cli):
    res = cli(
        "sql", "--db", db, "-f", "csv", "PIVOT (SELECT lang FROM phrases) ON lang USING count(*)"
    )
    assert res.exit_code == 0, res.stderr
    header, row = res.stdout.splitlines()
    counts = dict(zip(header.split(","), row.split(","), strict=True))
    with duckdb.connect(str(db), read_only=True) as con:
        want = dict(con.execute("SELECT lang, count(*) FROM phrases GROUP BY lang").fetchall())
    assert {k: int(v) for k, v in counts.items()} == want


TRANSACTIONS = [
    "BEGIN",
    "BEGIN TRANSACTION",
    "START TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "DELETE FROM phrases WHERE lang = 'hi'; COMMIT; DELETE FROM phrases WHERE lang = 'en'",
    "DELETE FROM phrases; ROLLBACK",
    "COMMIT; SELECT nope",
    "/* c */ commit",
]


@pytest.mark.parametrize("stmt", TRANSACTIONS)
def test_write_refuses_transaction_statements(stmt, db, cli):
    before = db.read_bytes()
    res = cli("sql", "--db", db, "--write", "--", stmt)
    assert_one_error_line(res, "transaction statement")
    assert db.read_bytes() == before


def test_write_failure_after_changes_commits_nothing(db, cli):
    res = cli("sql", "--db", db, "--write", "DELETE FROM phrases WHERE lang = 'hi'; SELECT nope")
    assert_one_error_line(res, "SQL error")
    with Warehouse(db, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM phrases WHERE lang = 'hi'") == 3


# -- input: stdin and --file -----------------------------------------------------------------


def test_query_from_stdin(db, cli):
    res = cli("sql", "-", "--db", db, "-f", "csv", input="SELECT count(*) AS n FROM phrases\n")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "n\n30\n"


def test_query_from_file(db, tmp_path, cli):
    q = tmp_path / "q.sql"
    q.write_text("-- how many\nSELECT count(*) AS n\nFROM phrases;\n", encoding="utf-8")
    res = cli("sql", "--file", q, "--db", db, "-f", "csv")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "n\n30\n"


def test_query_file_checks_still_apply(db, tmp_path, cli):
    q = tmp_path / "q.sql"
    q.write_text("SELECT 1; DELETE FROM phrases", encoding="utf-8")
    before = db.read_bytes()
    assert_one_error_line(cli("sql", "--file", q, "--db", db), "read-only")
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((), "give the SQL"),
        (("SELECT 1", "--file", "{q}"), "give the SQL"),
        (("--file", "{missing}"), "cannot read SQL"),
        (("--file", "{binary}"), "not UTF-8"),
        (("-",), "no SQL statement"),
    ],
)
def test_bad_query_source_is_one_line(args, match, db, tmp_path, cli):
    (tmp_path / "q.sql").write_text("SELECT 1")
    (tmp_path / "b.sql").write_bytes(b"\xff\xfe SELECT")
    paths = {
        "q": tmp_path / "q.sql",
        "missing": tmp_path / "nope.sql",
        "binary": tmp_path / "b.sql",
    }
    argv = [a.format(**paths) for a in args]
    assert_one_error_line(cli("sql", *argv, "--db", db, input=""), match)


# -- errors keep DuckDB's hint ---------------------------------------------------------------


def test_error_keeps_the_did_you_mean_hint(db, cli):
    line = assert_one_error_line(cli("sql", "SELECT * FROM phrasez", "--db", db))
    assert 'Did you mean "phrases"' in line


def test_error_keeps_the_candidate_columns(db, cli):
    line = assert_one_error_line(cli("sql", "SELECT langg FROM phrases", "--db", db))
    assert "Candidate bindings" in line and "lang" in line


# -- terminal output is limited --------------------------------------------------------------


def test_table_output_is_limited_by_default(db, cli):
    res = cli("sql", "SELECT range AS i FROM range(250)", "--db", db)
    assert res.exit_code == 0, res.stderr
    shown = [
        int(w) for line in res.stdout.splitlines() for w in line.strip("│ ").split() if w.isdigit()
    ]
    assert shown == list(range(100))
    assert "showing the first 100 rows" in res.stderr and "--limit 0" in res.stderr


def test_limit_option_and_no_limit(db, cli):
    res = cli("sql", "SELECT range AS i FROM range(250)", "--db", db, "--limit", "7", "-f", "csv")
    assert res.stdout.splitlines() == ["i", *map(str, range(7))]
    assert "first 7 rows" in res.stderr
    res = cli("sql", "SELECT range AS i FROM range(250)", "--db", db, "--limit", "0")
    assert "249" in res.stdout and res.stderr == ""
    res = cli("sql", "SELECT range AS i FROM range(250)", "--db", db, "-f", "csv")
    assert len(res.stdout.splitlines()) == 251 and res.stderr == ""  # machines get every row


def test_limit_exactly_the_row_count_is_not_cut(db, cli):
    res = cli("sql", "SELECT range AS i FROM range(5)", "--db", db, "--limit", "5", "-f", "csv")
    assert res.stdout.splitlines() == ["i", "0", "1", "2", "3", "4"] and res.stderr == ""


def test_default_limit_is_shown_in_help(cli):
    res = cli("sql", "--help")
    assert "--limit" in res.stdout and "default: 100" in " ".join(res.stdout.split())


# -- cancellation ----------------------------------------------------------------------------

SLOW = "SELECT count(*) FROM range(3000000000) a WHERE a.range * 7 % 1000003 = -1"


def test_timeout_cancels_a_running_query(db, cli):
    start = time.monotonic()
    res = cli("sql", SLOW, "--db", db, "--timeout", "0.5")
    elapsed = time.monotonic() - start
    assert_one_error_line(res, "ran past --timeout 0.5 s")
    assert elapsed < 20


def test_timeout_in_write_mode_rolls_back(db, cli):
    res = cli("sql", f"DELETE FROM phrases; {SLOW}", "--db", db, "--write", "--timeout", "0.5")
    assert_one_error_line(res, "cancelled")
    with Warehouse(db, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM phrases") == 30


def test_ctrl_c_cancels_a_running_query(db, cli):
    """SIGINT while DuckDB runs: the query stops, one line, and the process carries on."""

    def interrupt_when_running() -> None:
        while not any(t.name == "xling-sql" for t in threading.enumerate()):
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    # A suite started in the background (`make test &`) ignores SIGINT: use Python's own
    # handler, as a terminal's process has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_running, daemon=True).start()
        start = time.monotonic()
        res = cli("sql", SLOW, "--db", db)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_one_error_line(res, r"cancelled \(Ctrl-C\)")
    assert time.monotonic() - start < 20


def test_library_rejects_bad_limits_and_timeouts(db):
    with pytest.raises(XlingError, match="--limit"):
        run_sql(db, "SELECT 1", limit=-1)
    with pytest.raises(XlingError, match="--timeout"):
        run_sql(db, "SELECT 1", timeout=0)
