"""The migrated schema, migrations bookkeeping, the SQL guard and the run catalog."""

from __future__ import annotations

import json

import duckdb
import pytest

from xling.warehouse import Warehouse, XlingError
from xling.warehouse.connection import migrations

EXPECTED_COLUMNS = {
    "languages": ["lang", "name", "resource_group"],
    "phrases": [
        "phrase_id",
        "group_id",
        "lang",
        "text",
        "source",
        "origin_layer",
        "origin_feature",
    ],
    "models": [
        "model_id",
        "name",
        "revision",
        "adapter",
        "n_layers",
        "d_model",
        "d_mlp",
        "arch",
        "source",
        "created_at",
    ],
    "saes": [
        "sae_id",
        "model_id",
        "layer",
        "release",
        "sae_name",
        "path",
        "d_in",
        "d_sae",
        "architecture",
        "hook_name",
        "explained_variance",
        "l0",
        "created_at",
    ],
    "runs": [
        "run_id",
        "model_id",
        "status",
        "config",
        "started_at",
        "finished_at",
        "n_phrases",
        "n_rows",
        "note",
    ],
    "run_chunks": ["run_id", "chunk", "n_phrases", "n_rows", "committed_at"],
    "phrase_tokens": ["run_id", "phrase_id", "n_tokens"],
    "feature_acts": ["run_id", "phrase_id", "layer", "feature", "act_mean", "act_max", "n_active"],
    "residuals": ["run_id", "phrase_id", "layer", "vec"],
    "neuron_stats": ["run_id", "lang", "layer", "neuron", "n_tokens", "n_positive", "act_sum"],
    "benchmarks": [
        "model_id",
        "task",
        "lang",
        "metric",
        "value",
        "stderr",
        "n_samples",
        "source",
        "imported_at",
    ],
    "interventions": ["name", "kind", "config", "created_at"],
}


def _columns(con, table):
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


def test_schema_has_the_spec_tables_and_columns(wh):
    for table, cols in EXPECTED_COLUMNS.items():
        got = _columns(wh.con, table)
        assert got[: len(cols)] == cols, table


def test_languages_seeded_with_the_papers_groups(wh):
    df = wh.languages().set_index("lang")
    assert set(df.index[df.resource_group == "high"]) == {"en", "zh", "ru", "es", "it"}
    assert set(df.index[df.resource_group == "low"]) == {"id", "ca", "mr", "ml", "hi"}


def test_migrations_recorded_once_and_reopen_is_idempotent(db_path):
    Warehouse(db_path).close()
    Warehouse(db_path).close()
    con = duckdb.connect(str(db_path), read_only=True)
    names = [
        r[0] for r in con.execute("SELECT name FROM _xling_migrations ORDER BY name").fetchall()
    ]
    con.close()
    assert names == [n for n, _ in migrations()]


def test_read_only_open_of_missing_file_says_how_to_create(tmp_path):
    with pytest.raises(XlingError, match="xling init"):
        Warehouse(tmp_path / "nope.duckdb", read_only=True)
    assert not (tmp_path / "nope.duckdb").exists()


def test_directory_as_warehouse_path_is_refused(tmp_path):
    with pytest.raises(XlingError, match="is a directory"):
        Warehouse(tmp_path)


def test_sqlalchemy_engine_reads_the_same_file(db_path):
    import sqlalchemy

    Warehouse(db_path).close()
    with Warehouse(db_path, read_only=True) as wh, wh.engine().connect() as conn:
        n = conn.execute(sqlalchemy.text("SELECT count(*) FROM languages")).scalar()
    assert n == 10


@pytest.mark.parametrize(
    "stmt",
    [
        "DROP TABLE languages",
        "DELETE FROM languages",
        "INSERT INTO languages VALUES ('xx', 'X', 'low')",
        "UPDATE languages SET name = 'x'",
        "CREATE TABLE t (a INT)",
        "ATTACH 'other.duckdb' AS o",
        "COPY languages TO 'out.csv'",
        "PRAGMA enable_profiling",
        "SET enable_external_access = true",
        "SELECT 1; DROP TABLE languages",
        "SELECT * FROM read_csv('/etc/passwd')",
    ],
)
def test_sql_without_write_cannot_change_or_escape(cli, db_path, tmp_path, monkeypatch, stmt):
    monkeypatch.chdir(tmp_path)
    Warehouse(db_path).close()
    before = db_path.read_bytes()
    res = cli("sql", stmt, "--db", db_path)
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("Error: ")
    assert db_path.read_bytes() == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_sql_with_write_changes_data_in_one_transaction(cli, db_path):
    Warehouse(db_path).close()
    res = cli(
        "sql",
        "INSERT INTO languages VALUES ('sw', 'Swahili', 'low'); SELECT 1",
        "--db",
        db_path,
        "--write",
    )
    assert res.exit_code == 0, res.output
    bad = cli(
        "sql",
        "INSERT INTO languages VALUES ('yo', 'Yoruba', 'low'); SELECT nope",
        "--db",
        db_path,
        "--write",
    )
    assert bad.exit_code == 1
    with Warehouse(db_path, read_only=True) as wh:
        langs = set(wh.languages().lang)
    assert "sw" in langs and "yo" not in langs


def test_sql_formats(cli, db_path):
    Warehouse(db_path).close()
    res = cli(
        "sql", "SELECT lang FROM languages WHERE lang = 'en'", "--db", db_path, "--format", "csv"
    )
    assert res.stdout == "lang\nen\n"
    res = cli(
        "sql", "SELECT lang FROM languages WHERE lang = 'en'", "--db", db_path, "--format", "json"
    )
    assert json.loads(res.stdout) == [{"lang": "en"}]


def test_unknown_run_is_one_line_and_exit_1(cli, db_path):
    Warehouse(db_path).close()
    res = cli("runs", "show", "42", "--db", db_path)
    assert res.exit_code == 1
    assert res.stderr.strip() == "Error: no run 42; `xling runs list` shows the runs"


def test_arrow_and_scalar_leave_the_connection_usable(wh):
    import pyarrow as pa

    from xling.warehouse.writer import append_arrow

    assert wh.scalar("SELECT count(*) FROM languages WHERE resource_group = ?", ["low"]) == 5
    table = wh.arrow("SELECT lang FROM languages WHERE lang = ?", ["hi"])
    assert table.column("lang").to_pylist() == ["hi"]
    rows = pa.table({"run_id": [1], "phrase_id": [7], "n_tokens": [3]})
    assert append_arrow(wh.con, "phrase_tokens", rows) == 1
    assert wh.scalar("SELECT n_tokens FROM phrase_tokens WHERE phrase_id = 7") == 3


def test_views_are_created_after_what_they_read():
    from xling.warehouse.connection import _dependency_order

    items = [
        ("a_top", "CREATE MACRO a_top() AS TABLE SELECT * FROM z_base() -- not m_mid"),
        ("m_mid", "CREATE VIEW m_mid AS SELECT 1"),
        ("z_base", "CREATE MACRO z_base() AS TABLE SELECT * FROM m_mid"),
    ]
    assert [n for n, _ in _dependency_order(items)] == ["m_mid", "z_base", "a_top"]
    con = duckdb.connect()
    for _, sql in _dependency_order(items):
        con.execute(sql)
    assert con.execute("SELECT * FROM a_top()").fetchall() == [(1,)]
    cyclic = [("p", "CREATE VIEW p AS SELECT * FROM q"), ("q", "CREATE VIEW q AS SELECT * FROM p")]
    with pytest.raises(ValueError, match="depend on each other"):
        _dependency_order(cyclic)


# -- opening: newer, foreign, out-of-order, edited views, missing tables -----------------------


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(res, match: str) -> str:
    assert res.exit_code == 1, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def newer_db(db_path):
    """A warehouse a later xling migrated: one migration this version does not know."""
    Warehouse(db_path).close()
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO _xling_migrations (name) VALUES ('999_from_the_future')")
        con.execute("CREATE TABLE future_things (x INTEGER)")
    return db_path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_newer_warehouse_is_refused_not_downgraded(newer_db, read_only):
    before = _sha(newer_db)
    with pytest.raises(XlingError, match=r"made by a newer xling.*999_from_the_future") as err:
        Warehouse(newer_db, read_only=read_only)
    assert "xling init" not in str(err.value)  # init would downgrade it
    assert _sha(newer_db) == before


@pytest.mark.parametrize(
    "args",
    [
        ("init",),
        ("sql", "SELECT 1"),
        ("sql", "--write", "DELETE FROM languages"),
        ("runs", "list"),
        ("query", "languages"),
    ],
)
def test_cli_on_a_newer_warehouse_is_one_line(newer_db, cli, args):
    before = _sha(newer_db)
    line = _one_line(cli(*args, "--db", newer_db), "made by a newer xling")
    assert "upgrade xling" in line
    assert _sha(newer_db) == before


@pytest.fixture
def foreign_db(tmp_path):
    """Somebody else's DuckDB file: a table of their own, no xling bookkeeping."""
    path = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE sales AS SELECT range AS id FROM range(5)")
    return path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_duckdb_file_is_refused_and_left_alone(foreign_db, read_only):
    before = _sha(foreign_db)
    with pytest.raises(XlingError, match=r"not an xling warehouse.*--adopt"):
        Warehouse(foreign_db, read_only=read_only)
    assert _sha(foreign_db) == before
    assert not foreign_db.with_name(foreign_db.name + ".wal").exists()


@pytest.mark.parametrize("args", [("init",), ("corpus", "cldr"), ("runs", "list")])
def test_cli_on_a_foreign_file_is_one_line(foreign_db, cli, args):
    before = _sha(foreign_db)
    _one_line(cli(*args, "--db", foreign_db), "not an xling warehouse")
    assert _sha(foreign_db) == before


def test_init_adopt_adds_xlings_tables_beside_the_users(foreign_db, cli):
    res = cli("init", "--adopt", "--db", foreign_db)
    assert res.exit_code == 0, res.stderr
    with Warehouse(foreign_db, read_only=True) as wh:
        assert wh.scalar("SELECT sum(id) FROM sales") == 10
        assert wh.scalar("SELECT count(*) FROM languages") == 10
    assert cli("init", "--db", foreign_db).exit_code == 0  # now it is a warehouse


def test_a_failed_migration_leaves_the_file_exactly_as_it_was(tmp_path, cli):
    """Adopting a file whose own `phrases` table collides: the second statement of the first
    migration fails, and nothing of it (nor the bookkeeping table) stays."""
    path = tmp_path / "clash.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE phrases (mine VARCHAR)")
        con.execute("INSERT INTO phrases VALUES ('keep me')")
    before = _sha(path)
    _one_line(cli("init", "--adopt", "--db", path), "migration 001_initial failed")
    assert _sha(path) == before
    assert not path.with_name(path.name + ".wal").exists()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == [("phrases",)]


def test_an_empty_duckdb_file_is_a_new_warehouse(tmp_path, cli):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    _one_line(cli("runs", "list", "--db", path), "empty DuckDB file")
    assert cli("init", "--db", path).exit_code == 0
    assert cli("runs", "list", "--db", path).exit_code == 0


def test_shipped_migrations_are_numbered_once_each():
    import re

    names = [n for n, _ in migrations()]
    numbers = [n[:3] for n in names]
    assert all(re.fullmatch(r"\d{3}_\w+", n) for n in names)
    assert len(set(numbers)) == len(numbers) and numbers == sorted(numbers)


def test_the_tables_read_from_the_migrations_are_the_tables_they_make(monkeypatch):
    """`migrated_tables` reads the SQL instead of running it; both must agree, for the
    shipped migrations and for creates, drops and renames written in several ways."""
    from xling.warehouse import connection

    assert set(connection.migrated_tables()) == set(connection._fresh_schema()["tables"])
    more = [
        ("905_a", "CREATE TABLE IF NOT EXISTS a (x INTEGER);\ncreate table B (x INTEGER);"),
        ("906_b", "-- CREATE TABLE not_made (x INTEGER)\nDROP TABLE IF EXISTS a;"),
        ("907_c", "ALTER TABLE b RENAME TO c; CREATE OR REPLACE TABLE d AS SELECT 1 AS x;"),
    ]
    monkeypatch.setattr(
        connection, "migrations", lambda: [*connection._sql_dir("migrations"), *more]
    )
    connection.migrated_tables.cache_clear()
    try:
        con = duckdb.connect(":memory:")
        connection.migrate(con)
        ran = connection._tables(con)
        con.close()
        assert sorted(connection.migrated_tables()) == sorted(ran)
        assert {"c", "d"} <= set(ran) and not {"a", "b", "not_made"} & set(ran)
    finally:
        connection.migrated_tables.cache_clear()


def test_two_migrations_with_one_number_are_refused(monkeypatch):
    from xling.warehouse import connection

    shipped = connection._sql_dir("migrations")
    monkeypatch.setattr(
        connection,
        "_sql_dir",
        lambda kind: (
            [*shipped, ("905_a", "SELECT 1"), ("905_b", "SELECT 1")] if kind == "migrations" else []
        ),
    )
    with pytest.raises(XlingError, match="905_a and 905_b share the number 905"):
        connection.migrations()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_late_lower_numbered_migration_is_refused(db_path, monkeypatch, read_only):
    """A 002 added after warehouses got 003: it would run after 003 on them, before it on new
    ones. Refused, and the file is untouched."""
    from xling.warehouse import connection

    Warehouse(db_path).close()
    before = _sha(db_path)
    shipped = connection.migrations()
    late = [*shipped[:1], ("002_late", "CREATE TABLE late (x INTEGER)"), *shipped[1:]]
    monkeypatch.setattr(connection, "migrations", lambda: late)
    with pytest.raises(XlingError, match=r"has migration .* but not 002_late.*out of order"):
        Warehouse(db_path, read_only=read_only)
    assert _sha(db_path) == before
    fresh = connection.connect(db_path.with_name("fresh.duckdb"))  # a new file: in order
    try:
        assert connection.applied_migrations(fresh) == [n for n, _ in late]
    finally:
        fresh.close()


def _tamper_views(path) -> None:
    """What an older or newer xling leaves: other view bodies, another views hash."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE OR REPLACE VIEW activation_layers AS SELECT 'stale' AS stale")
        con.execute(
            "CREATE OR REPLACE MACRO gap_by_layer(mode := NULL, stat := 'max', k := 16, "
            "at_run := NULL, high := NULL, low := NULL, ref := 'en') AS TABLE "
            "SELECT 1 AS run_id, 0 AS layer, -1.0 AS gap_pct"
        )
        con.execute("UPDATE _xling_meta SET value = 'other' WHERE key = 'views_hash'")


def test_read_only_open_uses_this_versions_views_as_temporary_objects(db_path, cli):
    from analysis_data import TOY_CONFIGS, toy_data

    with Warehouse(db_path) as wh:
        toy_data().write(wh, configs=TOY_CONFIGS)
        want = [d[0] for d in wh.con.execute("SELECT * FROM activation_layers").description]
    gap = cli("query", "gap", "--db", db_path, "--run", "1", "-f", "csv")
    assert gap.exit_code == 0, gap.stderr
    _tamper_views(db_path)
    before = _sha(db_path)
    with Warehouse(db_path, read_only=True) as wh:
        got = [d[0] for d in wh.con.execute("SELECT * FROM activation_layers").description]
    assert got == want and "stale" not in got
    again = cli("query", "gap", "--db", db_path, "--run", "1", "-f", "csv")
    assert again.exit_code == 0, again.stderr
    assert again.stdout == gap.stdout and "-1.0" not in again.stdout
    assert _sha(db_path) == before  # nothing written: the file keeps the other views
    with Warehouse(db_path) as wh:  # a write open installs them for good
        assert "stale" not in [d[0] for d in wh.con.execute("FROM activation_layers").description]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_missing_table_is_one_line(db_path, cli, read_only):
    Warehouse(db_path).close()
    with duckdb.connect(str(db_path)) as con:
        con.execute("DROP TABLE neuron_stats")
    before = _sha(db_path)
    with pytest.raises(XlingError, match="lacks the table neuron_stats"):
        Warehouse(db_path, read_only=read_only)
    args = ("query", "gap") if read_only else ("corpus", "cldr")
    _one_line(cli(*args, "--db", db_path), "lacks the table neuron_stats")
    assert _sha(db_path) == before


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        ("{not json", "not a valid xling export manifest"),
        ("[1, 2]", "no 'tables' object"),
        ('{"tables": []}', "no 'tables' object"),
        ('{"tables": {"phrases": 3}}', "entry of phrases"),
        ('{"tables": {"phrases": {"rows": "many", "partitions": []}}}', "rows of phrases"),
        ('{"tables": {"phrases": {"rows": -1, "partitions": []}}}', "rows of phrases"),
        ('{"tables": {"phrases": {"rows": 3, "partitions": ["evil"]}}}', "partitions of"),
        ('{"tables": {"phrases": {"rows": 3, "partitions": "layer"}}}', "partitions of"),
        ('{"tables": {"x; DROP TABLE y": {"rows": 3, "partitions": []}}}', "table name"),
        ('{"tables": {"phrases": {"rows": 3, "partitions": []}}}', "cannot read the export"),
        ('{"tables": {"feature_acts": {"rows": 3, "partitions": ["layer"]}}}', "cannot read"),
    ],
)
def test_a_malformed_parquet_manifest_is_one_line(tmp_path, cli, manifest, match):
    root = tmp_path / "export"
    root.mkdir()
    (root / "xling-export.json").write_text(manifest, encoding="utf-8")
    (root / "xling-export.bin").write_bytes(b"\xff")
    for args in (("sql", "SELECT 1"), ("query", "languages")):
        _one_line(cli(*args, "--db", f"parquet:{root}"), match)


def test_a_refused_write_command_leaves_no_new_warehouse(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XLING_DB", raising=False)
    (tmp_path / "bad.csv").write_text("group_id,lang,text\ng1,xx-nope,hello\n")
    _one_line(cli("corpus", "load", "bad.csv"), "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_refused_command_keeps_a_warehouse_that_existed(db_path, tmp_path, cli):
    Warehouse(db_path).close()
    (tmp_path / "bad.csv").write_text("group_id,lang,text\ng1,xx-nope,hello\n")
    _one_line(cli("corpus", "load", tmp_path / "bad.csv", "--db", db_path), "")
    assert db_path.exists()
    assert cli("init", "--db", db_path).exit_code == 0


def test_new_warehouses_use_64k_blocks_and_old_ones_still_open(tmp_path):
    from xling.warehouse.connection import DUCKDB_CONFIG

    with Warehouse(tmp_path / "new.duckdb") as wh:
        size = "SELECT block_size FROM pragma_database_size()"
        assert wh.scalar(size) == int(DUCKDB_CONFIG["default_block_size"]) == 65536
    old = tmp_path / "old.duckdb"
    duckdb.connect(str(old)).close()  # made by DuckDB's default: 256 KiB blocks
    with Warehouse(old) as wh:
        assert wh.scalar(size) == 262144
        assert wh.scalar("SELECT count(*) FROM languages") == 10
    with Warehouse(old, read_only=True) as wh:
        assert wh.scalar(size) == 262144
