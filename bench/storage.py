"""Bytes per stored nonzero of feature_acts under each storage alternative (issue 15).

Rows shaped like a pooled SAE ingest (numpy, seeded): per (phrase, layer) a Poisson number of
distinct features out of 16,384, n_active tokens out of the phrase's 2-9, act_max the max and
act_mean the float32 mean (zeros included) of lognormal token activations, computed as
ingest/pooling.py computes them. Each variant writes the rows into a fresh DuckDB file in one
statement and checkpoints; bytes = used blocks x block size over rows. Or `--db FILE`: the
feature_acts rows of a real warehouse.

    .venv/bin/python bench/storage.py                    # ~13 M rows
    .venv/bin/python bench/storage.py --phrases 80000    # ~52 M rows
    .venv/bin/python bench/storage.py --db demo-out/xling.duckdb

Variants (all hold the same rows; `lossless` and `lean` ones return act_max and act_mean bit
for bit). Files have 64 KiB blocks, as xling creates them, unless named -256k:
    lossless-256k       feature_acts in DuckDB's default 256 KiB blocks (older warehouses)
    lossless            feature_acts as in migration 001, ordered (layer, phrase, feature)
    lossless-narrow     the same with INTEGER phrase, UTINYINT layer, USMALLINT feature
    lossless-lfp        ordered (layer, feature, phrase)
    lossless-rg1.2M     ATTACH ... (ROW_GROUP_SIZE 1228800): 10x DuckDB's row groups
    lean                the lean encoding as the warehouse stores it: rows whose act_mean is
                        act_max / n_tokens exactly in a second table with act_max only
    lean-rg1.2M         the same, row groups 1.2M
    compact             feature_acts_compact (warehouse/encoding.py), default row groups
    compact-rg1.2M      the same, row groups 1.2M
    compact-256k        compact in 256 KiB blocks
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from xling.warehouse import encoding
from xling.warehouse.connection import DUCKDB_CONFIG

# The block size xling creates warehouse files with (warehouse/connection.py); DuckDB's own
# default, 256 KiB, is what warehouses made before it have.
_BLOCKS = f"BLOCK_SIZE {DUCKDB_CONFIG['default_block_size']}"
_BIG_RG = f"{_BLOCKS}, ROW_GROUP_SIZE 1228800"
_LOSSLESS = (
    "run_id::INTEGER AS run_id, phrase_id::BIGINT AS phrase_id, layer::SMALLINT AS layer, "
    "feature::INTEGER AS feature, act_mean::FLOAT AS act_mean, act_max::FLOAT AS act_max, "
    "n_active::SMALLINT AS n_active"
)
_NARROW = (
    "run_id::UTINYINT AS run_id, phrase_id::INTEGER AS phrase_id, layer::UTINYINT AS layer, "
    "feature::USMALLINT AS feature, act_mean::FLOAT AS act_mean, act_max::FLOAT AS act_max, "
    "n_active::UTINYINT AS n_active"
)
_LPF = "layer, phrase_id, feature"
# name -> (attach options, [(table, select list, WHERE, ORDER BY)])
VARIANTS: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    "lossless-256k": ("", [("fa", _LOSSLESS, "true", _LPF)]),
    "lossless": (_BLOCKS, [("fa", _LOSSLESS, "true", _LPF)]),
    "lossless-narrow": (_BLOCKS, [("fa", _NARROW, "true", _LPF)]),
    "lossless-lfp": (_BLOCKS, [("fa", _LOSSLESS, "true", "layer, feature, phrase_id")]),
    "lossless-rg1.2M": (_BIG_RG, [("fa", _LOSSLESS, "true", _LPF)]),
    # The shipped lean encoding (warehouse/encoding.py): act_mean and n_active left out where
    # act_mean is act_max / n_tokens exactly; n_tokens is read from phrase_tokens, not stored.
    "lean": (
        _BLOCKS,
        [
            ("fa", _LOSSLESS, "NOT derivable", _LPF),
            (
                "fs",
                "run_id::INTEGER AS run_id, phrase_id::BIGINT AS phrase_id, "
                "layer::SMALLINT AS layer, feature::INTEGER AS feature, "
                "act_max::FLOAT AS act_max",
                "derivable",
                _LPF,
            ),
        ],
    ),
    "compact": (
        _BLOCKS,
        [
            (
                "fa",
                "run_id::INTEGER AS run_id, phrase_id::BIGINT AS phrase_id, "
                "layer::SMALLINT AS layer, feature::INTEGER AS feature, q_max, q_mean, "
                "n_active::SMALLINT AS n_active",
                "true",
                _LPF,
            )
        ],
    ),
}
VARIANTS["lean-rg1.2M"] = (_BIG_RG, VARIANTS["lean"][1])
VARIANTS["compact-rg1.2M"] = (_BIG_RG, VARIANTS["compact"][1])
VARIANTS["compact-256k"] = ("", VARIANTS["compact"][1])


def ingest_like_rows(n_phrases: int, layers: int = 8, d_sae: int = 16384, seed: int = 0):
    """Rows (with n_tokens) shaped like a pooled SAE ingest; see the module docstring."""
    rng = np.random.default_rng(seed)
    ntok = rng.integers(2, 10, n_phrases).astype(np.int16)
    nnz = rng.poisson(np.tile(25 * ntok.astype(np.float64) ** 0.7, layers)).clip(1, d_sae // 4)
    layer = np.repeat(np.repeat(np.arange(layers), n_phrases), nnz).astype(np.int16)
    phrase = np.repeat(np.tile(np.arange(n_phrases), layers), nnz).astype(np.int64)
    # distinct features per (layer, phrase): sorted draws without replacement via offsets
    block = np.repeat(np.arange(len(nnz)), nnz)
    feat = rng.integers(0, d_sae, len(block)).astype(np.int64)
    key = np.unique(block * d_sae + feat)
    block, feat = key // d_sae, (key % d_sae).astype(np.int32)
    layer = (block // n_phrases).astype(np.int16)
    phrase = (block % n_phrases).astype(np.int64)
    t = ntok[phrase]
    nact = (1 + rng.binomial(t - 1, 0.2)).astype(np.int16)
    vals = (rng.lognormal(0.0, 0.8, int(nact.sum())) * 2).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(nact)[:-1]])
    amax = np.maximum.reduceat(vals, starts).astype(np.float32)
    asum = np.add.reduceat(vals, starts, dtype=np.float32).astype(np.float32)
    amean = (asum / t.astype(np.float32)).astype(np.float32)
    return pa.table(
        {
            "run_id": pa.array(np.ones(len(phrase), np.int32)),
            "phrase_id": phrase,
            "layer": layer,
            "feature": feat,
            "act_mean": amean,
            "act_max": amax,
            "n_active": nact,
            "n_tokens": t,
        }
    )


def prepare(rows: pa.Table) -> pa.Table:
    """`rows` with the columns every variant selects from: q_max/q_mean and derivable."""
    amax = rows.column("act_max").to_numpy()
    amean = rows.column("act_mean").to_numpy()
    ntok = rows.column("n_tokens").to_numpy().astype(np.float32)
    q_max, q_mean = encoding.encode_compact(amax, amean)
    # what the lean encoding moves: act_mean is act_max / n_tokens bit for bit
    derivable = encoding.single_token_rows(amax, amean, rows.column("n_active").to_numpy(), ntok)
    return (
        rows.append_column("q_max", pa.array(q_max))
        .append_column("q_mean", pa.array(q_mean))
        .append_column("derivable", pa.array(derivable))
    )


def bytes_per_nonzero(src: pa.Table, variant: str, tmp: Path) -> tuple[float, float]:
    """(bytes per row, seconds to write) of `src` (from `prepare`) stored as `variant`."""
    opts, tables = VARIANTS[variant]
    path = tmp / f"{variant}.duckdb"
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("src", src)
    con.execute(f"ATTACH '{path}' AS w ({opts})" if opts else f"ATTACH '{path}' AS w")
    con.execute("CHECKPOINT w")
    size = "SELECT used_blocks * block_size FROM pragma_database_size() WHERE database_name = 'w'"
    before = con.execute(size).fetchone()[0]
    start = time.perf_counter()
    for table, cols, where, order in tables:
        con.execute(
            f"CREATE TABLE w.{table} AS SELECT {cols} FROM src WHERE {where} ORDER BY {order}"
        )
    con.execute("CHECKPOINT w")
    seconds = time.perf_counter() - start
    used = con.execute(size).fetchone()[0]
    con.execute("DETACH w")
    con.close()
    for p in (path, Path(f"{path}.wal")):
        p.unlink(missing_ok=True)
    return (used - before) / src.num_rows, seconds


def warehouse_rows(db: str) -> pa.Table:
    """The feature rows of a real warehouse (any encoding), with each row's phrase length."""
    con = duckdb.connect(db, read_only=True, config=DUCKDB_CONFIG)
    rows = con.sql(
        "SELECT f.run_id, f.phrase_id, f.layer, f.feature, f.act_mean, f.act_max, f.n_active, "
        "t.n_tokens::SMALLINT AS n_tokens FROM feature_values f "
        "JOIN phrase_tokens t USING (run_id, phrase_id)"
    ).to_arrow_table()
    con.close()
    return rows


def measure(rows: pa.Table, variants: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{variant: {bytes, seconds}} plus the share of rows where act_mean is derivable."""
    src = prepare(rows)
    out: dict[str, dict[str, float]] = {
        "_rows": {"rows": src.num_rows, "derivable": float(np.mean(src.column("derivable")))}
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("XLING_BENCH_TMP")) as tmp:
        for name in variants or list(VARIANTS):
            b, s = bytes_per_nonzero(src, name, Path(tmp))
            out[name] = {"bytes": b, "seconds": s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=20_000, help="synthetic phrases (x8 layers)")
    parser.add_argument("--db", help="measure this warehouse's feature_acts rows instead")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    rows = warehouse_rows(args.db) if args.db else ingest_like_rows(args.phrases)
    result = measure(rows, args.variants.split(",") if args.variants else None)
    info = result.pop("_rows")
    print(
        f"{'real ' + args.db if args.db else 'synthetic'}: {info['rows']:,} rows, act_mean "
        f"derivable (n_active = 1) on {info['derivable']:.1%}"
    )
    for name, r in result.items():
        print(f"  {name:18s} {r['bytes']:6.2f} B per nonzero   ({r['seconds']:.1f} s to write)")


if __name__ == "__main__":
    main()
