"""order_run_rows: a run's rows rewritten layer-contiguous, nothing else changed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xling.warehouse.layout import layer_spans, order_run_rows
from xling.warehouse.writer import append_arrow

N_PHRASES, N_LAYERS, PER = 1_000, 6, 50  # 300k rows a run: several row groups


def _rows(run_id: int, seed: int) -> pa.Table:
    """Rows as an ingest appends them: phrase by phrase, every layer interleaved."""
    rng = np.random.default_rng(seed)
    n = N_PHRASES * N_LAYERS * PER
    phrase = np.repeat(np.arange(N_PHRASES, dtype=np.int64), N_LAYERS * PER)
    layer = np.tile(np.repeat(np.arange(N_LAYERS, dtype=np.int16), PER), N_PHRASES)
    return pa.table(
        {
            "run_id": pa.array(np.full(n, run_id, np.int32)),
            "phrase_id": pa.array(phrase),
            "layer": pa.array(layer),
            "feature": pa.array(np.tile(np.arange(PER, dtype=np.int32), N_PHRASES * N_LAYERS)),
            "act_mean": pa.array(rng.random(n, np.float32)),
            "act_max": pa.array(rng.random(n, np.float32) + 1),
            "n_active": pa.array(rng.integers(1, 9, n).astype(np.int16)),
        }
    )


def _residuals(run_id: int) -> pa.Table:
    n = 200 * N_LAYERS
    return pa.table(
        {
            "run_id": pa.array(np.full(n, run_id, np.int32)),
            "phrase_id": pa.array(np.repeat(np.arange(200, dtype=np.int64), N_LAYERS)),
            "layer": pa.array(np.tile(np.arange(N_LAYERS, dtype=np.int16), 200)),
            "vec": pa.array([[float(i), 1.0] for i in range(n)], pa.list_(pa.float32())),
        }
    )


@pytest.fixture
def two_runs(wh):
    with wh.transaction() as con:
        for run_id in (1, 2):
            append_arrow(con, "feature_acts", _rows(run_id, seed=run_id))
            append_arrow(con, "residuals", _residuals(run_id))
    wh.con.execute("CHECKPOINT")
    return wh


def _content(wh, table: str, run_id: int):
    order = "phrase_id, layer, feature" if table == "feature_acts" else "phrase_id, layer"
    return wh.sql(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id])


def test_rows_kept_and_layer_contiguous(two_runs):
    wh = two_runs
    before = {(t, r): _content(wh, t, r) for t in ("feature_acts", "residuals") for r in (1, 2)}
    assert layer_spans(wh.con)[1] == N_LAYERS  # every row group holds every layer

    with wh.transaction() as con:
        done = order_run_rows(con, 1)
    wh.con.execute("CHECKPOINT")

    assert done == {"feature_acts": N_PHRASES * N_LAYERS * PER, "residuals": 200 * N_LAYERS}
    for (table, run_id), df in before.items():
        after = _content(wh, table, run_id)
        assert after.equals(df), (table, run_id)
    # run 1's rows now come in (layer, phrase_id, feature) order, after run 2's
    stored = wh.sql(
        "SELECT layer, phrase_id, feature FROM feature_acts WHERE run_id = 1 ORDER BY rowid"
    )
    keys = stored.to_records(index=False).tolist()
    assert keys == sorted(keys)
    first_run1 = wh.scalar("SELECT min(rowid) FROM feature_acts WHERE run_id = 1")
    assert first_run1 >= wh.scalar("SELECT max(rowid) FROM feature_acts WHERE run_id = 2")
    res_layers = wh.sql("SELECT layer FROM residuals WHERE run_id = 1 ORDER BY rowid")["layer"]
    assert res_layers.is_monotonic_increasing
    # run 1's row groups (half the table) now hold one layer each, up to boundary groups
    groups = wh.sql(
        "SELECT row_group_id, any_value(stats) AS s FROM pragma_storage_info('feature_acts') "
        "WHERE column_name = 'layer' AND segment_type <> 'VALIDITY' GROUP BY row_group_id"
    )
    spans = [int(s["max"]) - int(s["min"]) + 1 for s in groups["s"]]
    assert sum(span == 1 for span in spans) >= len(spans) // 2 - N_LAYERS


def test_other_runs_and_empty_run_untouched(two_runs):
    wh = two_runs
    with wh.transaction() as con:
        assert order_run_rows(con, 99) == {"feature_acts": 0, "residuals": 0}
    assert wh.scalar("SELECT count(*) FROM feature_acts") == 2 * N_PHRASES * N_LAYERS * PER


def test_rollback_leaves_old_layout(two_runs):
    wh = two_runs
    before = wh.sql("SELECT rowid, * FROM feature_acts WHERE run_id = 1 ORDER BY rowid")
    with pytest.raises(RuntimeError), wh.transaction() as con:
        order_run_rows(con, 1)
        raise RuntimeError("killed during finish")
    after = wh.sql("SELECT rowid, * FROM feature_acts WHERE run_id = 1 ORDER BY rowid")
    assert after.equals(before)
