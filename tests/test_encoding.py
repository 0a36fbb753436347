"""The encodings: compact within its stated error bounds, lean bit for bit, and feature_values
decoding each as numpy does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xling.warehouse import encoding


def _values(seed: int, n: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    act_max = np.exp(rng.uniform(np.log(1e-6), np.log(1e6), n)).astype(np.float32)
    n_tokens = rng.integers(1, encoding.MAX_COMPACT_TOKENS + 1, n)
    # act_mean lies in [act_max / n_tokens, act_max], both ends included
    frac = rng.uniform(0, 1, n)
    frac[:100] = 0.0
    frac[100:200] = 1.0
    ratio = 1 / n_tokens + frac * (1 - 1 / n_tokens)
    return act_max, (act_max * ratio).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_compact_errors_within_stated_bounds(seed):
    act_max, act_mean = _values(seed)
    q_max, q_mean = encoding.encode_compact(act_max, act_mean)
    got_max, got_mean = encoding.decode_compact(q_max, q_mean)
    err_max = np.abs(got_max.astype(np.float64) / act_max - 1).max()
    err_mean = np.abs(got_mean.astype(np.float64) / act_mean - 1).max()
    # float32 rounding of the decoded value adds at most 2^-24 relative
    assert err_max <= encoding.MAX_REL_ERROR + 2**-23
    assert err_mean <= encoding.MEAN_REL_ERROR + 2**-23
    # the bounds are tight: the quantisation does use most of its step
    assert err_max > 0.5 * encoding.MAX_REL_ERROR
    assert err_mean > 0.5 * encoding.MEAN_REL_ERROR
    assert abs(encoding.MAX_REL_ERROR - 0.001355) < 1e-6
    assert abs(encoding.MEAN_REL_ERROR - 0.01124) < 1e-5


def test_compact_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="300 tokens"):
        encoding.encode_compact(np.array([1.0]), np.array([1 / 400]))
    with pytest.raises(ValueError, match="> 0"):
        encoding.encode_compact(np.array([0.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="unknown encoding"):
        encoding.tables_for("zip")
    with pytest.raises(ValueError, match="max_tokens is 512"):
        encoding.check_encoding("compact", max_tokens=512)
    encoding.check_encoding("lossless", max_tokens=4096)
    assert encoding.encoding_of({}) == "lossless"
    assert encoding.encoding_of({"encoding": "compact"}) == "compact"


def test_feature_values_decodes_both_tables(wh):
    act_max, act_mean = _values(3, 5_000)
    n = len(act_max)
    rows = pa.table(
        {
            "run_id": pa.array(np.full(n, 2), pa.int32()),
            "phrase_id": pa.array(np.arange(n), pa.int64()),
            "layer": pa.array(np.zeros(n), pa.int16()),
            "feature": pa.array(np.arange(n) % 97, pa.int32()),
            "act_max": pa.array(act_max),
            "act_mean": pa.array(act_mean),
            "n_active": pa.array(np.ones(n), pa.int16()),
        }
    )
    con = wh.con
    con.register("lossless_rows", rows.replace_schema_metadata(None))
    con.execute(
        "INSERT INTO feature_acts BY NAME SELECT 1 AS run_id, * EXCLUDE (run_id) FROM lossless_rows"
    )
    con.register("compact_rows", encoding.encode_rows(rows, "compact"))
    con.execute("INSERT INTO feature_acts_compact BY NAME SELECT * FROM compact_rows")
    got = con.execute(
        "SELECT run_id, act_max, act_mean FROM feature_values ORDER BY run_id, phrase_id"
    ).fetchnumpy()
    lossless = got["run_id"] == 1
    np.testing.assert_array_equal(got["act_max"][lossless], act_max)  # bit for bit
    np.testing.assert_array_equal(got["act_mean"][lossless], act_mean)
    want_max, want_mean = encoding.decode_compact(*encoding.encode_compact(act_max, act_mean))
    np.testing.assert_allclose(got["act_max"][~lossless], want_max, rtol=2**-23)
    np.testing.assert_allclose(got["act_mean"][~lossless], want_mean, rtol=2**-23)


def test_lean_rows_read_back_bit_for_bit(wh):
    """Rows shaped like pooled ingest rows (float32 means of 1-9 tokens, some features firing
    on one token): the lean encoding moves exactly the rows whose act_mean is the float32
    quotient act_max / n_tokens, and feature_values returns every row as computed."""
    rng = np.random.default_rng(5)
    n_phrases, per = 400, 12
    n_tokens = rng.integers(1, 10, n_phrases).astype(np.int32)
    pid = np.repeat(np.arange(n_phrases), per)
    n_active = np.minimum(rng.integers(1, 4, pid.size), n_tokens[pid]).astype(np.int16)
    act_max = rng.lognormal(0, 2, pid.size).astype(np.float32)
    # the ingest's statistics: mean over all pooled tokens of n_active nonzero values
    extra = (rng.random(pid.size) * act_max * (n_active - 1)).astype(np.float32)
    act_mean = ((act_max + extra) / n_tokens[pid].astype(np.float32)).astype(np.float32)
    off = rng.random(pid.size) < 0.05  # computed some other way: one ulp away
    act_mean[off] = np.nextafter(act_mean[off], np.float32(np.inf))
    rows = pa.table(
        {
            "phrase_id": pa.array(pid, pa.int64()),
            "layer": pa.array(np.zeros(pid.size), pa.int16()),
            "feature": pa.array(np.tile(np.arange(per), n_phrases), pa.int32()),
            "act_mean": pa.array(act_mean),
            "act_max": pa.array(act_max),
            "n_active": pa.array(n_active),
        }
    )
    tokens = pa.table({"phrase_id": pa.array(np.arange(n_phrases), pa.int64()),
                       "n_tokens": pa.array(n_tokens)})  # fmt: skip
    tables = encoding.encode_tables(rows, "lean", tokens)
    assert set(tables) == set(encoding.tables_for("lean"))
    want_single = (n_active == 1) & ~off
    assert tables["feature_acts_single"].num_rows == want_single.sum() > 0
    assert tables["feature_acts"].num_rows == (~want_single).sum() > 0
    con = wh.con
    for table, t in {**tables, "phrase_tokens": tokens}.items():
        con.register(
            "_rows", t.append_column("run_id", pa.array(np.full(t.num_rows, 4), pa.int32()))
        )
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")
    got = con.execute(
        "SELECT phrase_id, feature, act_max, act_mean, n_active FROM feature_values "
        "WHERE run_id = 4 ORDER BY phrase_id, feature"
    ).fetchnumpy()
    np.testing.assert_array_equal(got["phrase_id"], pid)
    assert got["act_max"].dtype == got["act_mean"].dtype == np.float32
    np.testing.assert_array_equal(got["act_max"].view(np.uint32), act_max.view(np.uint32))
    np.testing.assert_array_equal(got["act_mean"].view(np.uint32), act_mean.view(np.uint32))
    np.testing.assert_array_equal(got["n_active"], n_active)


def test_lean_refuses_rows_without_token_counts():
    rows = pa.table({"phrase_id": pa.array([1, 2], pa.int64()), "act_max": [1.0, 2.0],
                     "act_mean": [1.0, 1.0], "n_active": [1, 1]})  # fmt: skip
    with pytest.raises(ValueError, match="token count"):
        encoding.encode_tables(rows, "lean", pa.table({"phrase_id": [1], "n_tokens": [1]}))
    with pytest.raises(ValueError, match="token counts"):
        encoding.encode_tables(rows, "lean")
    with pytest.raises(ValueError, match="encode_tables"):
        encoding.encode_rows(rows, "lean")
