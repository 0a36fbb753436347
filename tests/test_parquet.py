"""Parquet export, the views over it (--db parquet:DIR), and ingest parts imported idempotently."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import typer
from analysis_data import toy_data
from typer.testing import CliRunner

from xling.analysis import queries
from xling.cli import _XlingGroup, scale
from xling.warehouse import Warehouse
from xling.warehouse.errors import XlingError
from xling.warehouse.parquet import export_parquet, import_parts, part_name, write_part


@pytest.fixture
def toy_wh(wh):
    toy_data().write(wh)
    return wh


def _scale_cli(*args):
    # the main app's error handling (one `Error:` line, exit 1) around just these commands
    app = typer.Typer(cls=_XlingGroup)
    scale.register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_export_layout_and_views_match_the_warehouse(toy_wh, tmp_path):
    out = tmp_path / "export"
    counts = export_parquet(toy_wh, out)
    assert counts["feature_acts"] == toy_wh.scalar("SELECT count(*) FROM feature_acts")
    manifest = json.loads((out / "xling-export.json").read_text())
    assert manifest["tables"]["feature_acts"]["partitions"] == ["layer", "lang"]
    layer_dirs = {p.name for p in (out / "feature_acts").iterdir()}
    assert layer_dirs == {
        f"layer={r[0]}"
        for r in toy_wh.con.execute("SELECT DISTINCT layer FROM feature_acts").fetchall()
    }
    assert any((out / "feature_acts").glob("layer=*/lang=mr/*.parquet"))

    with Warehouse(f"parquet:{out}", read_only=True) as pq_wh:
        cols = "SELECT * FROM feature_acts ORDER BY run_id, phrase_id, layer, feature"
        assert pq_wh.sql(cols).equals(toy_wh.sql(cols))  # same columns (no lang), same types
        for run in (1, 2):
            assert queries.gap(pq_wh, run=run).equals(queries.gap(toy_wh, run=run))
        assert queries.similarity(pq_wh, run=1).equals(queries.similarity(toy_wh, run=1))
        # the hive partition filter reaches the file list: one layer's files are read
        plan = pq_wh.sql("EXPLAIN ANALYZE SELECT count(*) FROM feature_acts WHERE layer = 0")
        text = "\n".join(plan.iloc[:, 1])
        assert "layer=0" in text and "layer=1" not in text


def test_export_one_run(toy_wh, tmp_path):
    out = tmp_path / "one"
    export_parquet(toy_wh, out, run=2)
    with Warehouse(f"parquet:{out}", read_only=True) as pq_wh:
        assert pq_wh.scalar("SELECT DISTINCT run_id FROM feature_acts") == 2
        assert pq_wh.scalar("SELECT count(*) FROM runs") == 1
        assert pq_wh.scalar("SELECT count(*) FROM phrases") == toy_wh.scalar(
            "SELECT count(*) FROM phrases"
        )


def test_bad_targets_and_writes_refused(toy_wh, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep")
    with pytest.raises(XlingError, match="not an empty directory"):
        export_parquet(toy_wh, busy)
    with pytest.raises(XlingError, match="no run 9"):
        export_parquet(toy_wh, tmp_path / "r9", run=9)
    assert not (tmp_path / "r9").exists()
    with pytest.raises(XlingError, match="not an xling Parquet export"):
        Warehouse(f"parquet:{busy}", read_only=True)
    export_parquet(toy_wh, tmp_path / "ok")
    with pytest.raises(XlingError, match="read-only"):
        Warehouse(f"parquet:{tmp_path / 'ok'}")


def test_cli_export_then_query(toy_wh, db_path, tmp_path, cli):
    toy_wh.close()
    out = tmp_path / "cli-export"
    res = _scale_cli("export-parquet", out, "--db", db_path)
    assert res.exit_code == 0, res.output
    assert "feature rows" in res.output
    res = cli("query", "gap", "--run", "1", "--format", "csv", "--db", f"parquet:{out}")
    assert res.exit_code == 0, res.stderr
    with Warehouse(db_path, read_only=True) as wh:
        want = queries.gap(wh, run=1)
    got = res.stdout.strip().splitlines()
    assert len(got) == len(want) + 1  # header + one line a layer
    res = cli("sql", "SELECT count(*) AS n FROM feature_acts", "--db", f"parquet:{out}")
    assert res.exit_code == 0, res.stderr
    with Warehouse(db_path, read_only=True) as wh:
        assert str(wh.scalar("SELECT count(*) FROM feature_acts")) in res.stdout
    # read-only `xling sql` still reaches no file outside the export
    res = cli("sql", f"SELECT * FROM read_csv('{db_path}')", "--db", f"parquet:{out}")
    assert res.exit_code == 1
    res = _scale_cli("export-parquet", out, "--db", db_path)
    assert res.exit_code == 1 and "not an empty directory" in res.stderr


# -- parts ---------------------------------------------------------------------------------------


def _part(ids: list[int], scale_by: float) -> dict[str, pa.Table]:
    n = len(ids)
    return {
        "feature_acts": pa.table(
            {
                "phrase_id": pa.array(np.repeat(ids, 2).astype(np.int64)),
                "layer": pa.array(np.tile([1, 0], n).astype(np.int16)),
                "feature": pa.array(np.arange(2 * n, dtype=np.int32)),
                "act_mean": pa.array(np.full(2 * n, scale_by / 2, np.float32)),
                "act_max": pa.array(np.full(2 * n, scale_by, np.float32)),
                "n_active": pa.array(np.ones(2 * n, np.int16)),
            }
        ),
        "phrase_tokens": pa.table(
            {"phrase_id": pa.array(ids, pa.int64()), "n_tokens": pa.array([3] * n, pa.int32())}
        ),
    }


@pytest.fixture
def pending_run(wh):
    """A registered run of phrases 1-4 with no rows yet (what the Ray driver leaves)."""
    from xling.warehouse import catalog

    with wh.transaction() as con:
        model_id = catalog.register_model(
            con, catalog.ModelFacts(name="m", revision=None, adapter=None, n_layers=2, d_model=4)
        )
        catalog.create_run(
            con,
            model_id,
            catalog.NewRun(
                config={"layers": [0, 1]}, layers={0: None, 1: None}, engine="ray", n_selected=4
            ),
        )
    return wh


def test_parts_import_idempotent_and_finishes(pending_run, tmp_path):
    wh, parts = pending_run, tmp_path / "parts"
    write_part(parts, part_name(1, np.array([1, 2])), _part([1, 2], 1.0))
    first = import_parts(wh, parts, 1)
    assert (first.phrases, first.rows, first.missing, first.finished) == (2, 4, 2, False)
    assert wh.run(1)["status"] == "running"

    write_part(parts, part_name(1, np.array([3, 4])), _part([3, 4], 1.0))
    # a rerun of batch [1, 2] overwrites its part (same name) with new values
    write_part(parts, part_name(1, np.array([2, 1])), _part([1, 2], 5.0))
    assert len(list((parts / "phrase_tokens").glob("*.parquet"))) == 2
    for _ in range(2):
        result = import_parts(wh, parts, 1)
        assert result.finished and result.missing == 0
        rows = wh.sql("SELECT phrase_id, act_max FROM feature_acts ORDER BY phrase_id, feature")
        assert len(rows) == 8
        assert rows.groupby("phrase_id")["act_max"].first().tolist() == [5.0, 5.0, 1.0, 1.0]
        assert wh.scalar("SELECT count(*) FROM phrase_tokens WHERE run_id = 1") == 4
    run = wh.run(1)
    assert (run["status"], run["n_phrases"], run["n_rows"]) == ("finished", 4, 8)
    layers = wh.sql("SELECT layer FROM feature_acts ORDER BY rowid")["layer"]
    assert layers.is_monotonic_increasing


def test_overlapping_parts_refused(pending_run, tmp_path):
    wh, parts = pending_run, tmp_path / "parts"
    write_part(parts, part_name(1, np.array([1, 2])), _part([1, 2], 1.0))
    write_part(parts, part_name(1, np.array([2, 3])), _part([2, 3], 1.0))
    with pytest.raises(XlingError, match="more than one part"):
        import_parts(wh, parts, 1)
    assert wh.scalar("SELECT count(*) FROM feature_acts") == 0
    with pytest.raises(XlingError, match="no ingest parts"):
        import_parts(wh, tmp_path / "empty", 1)


def test_cli_import_parts(pending_run, db_path, tmp_path):
    parts = tmp_path / "parts"
    write_part(parts, part_name(1, np.array([1, 2, 3, 4])), _part([1, 2, 3, 4], 2.0))
    pending_run.close()
    res = _scale_cli("import-parts", parts, "--run", "1", "--db", db_path)
    assert res.exit_code == 0, res.output
    assert "4 phrases" in res.output and "finished" in res.output
    res = _scale_cli("import-parts", parts, "--run", "7", "--db", db_path)
    assert res.exit_code == 1 and "no run 7" in res.stderr
