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
