"""Physical layout without a rewrite at finish: what each way of landing the rows costs.

Each variant appends the same ingest-shaped rows (bench/storage.py) the way an ingest would,
one transaction per chunk of phrases (all their layers), and then times a one-layer
aggregate and an all-layer GROUP BY layer over the finished file, reads the mean number of
layers per row group and compares the file with the same rows written once in one statement:

    chunk-500k      the runner today: chunks of >= 500,000 rows sorted (layer, phrase) inside
    chunk-2rg/layer chunks of >= 2 x 122,880 rows per layer, sorted the same way, so every
                    layer's slice of a chunk fills whole row groups
    table-per-layer each chunk's layer slices appended to one table per layer
    rewrite         chunk-500k plus today's finish: the run re-inserted ordered (layer,
                    phrase, feature) and the old rows deleted (order_run_rows)

    .venv/bin/python bench/layout.py                  # ~13 M rows, 8 layers
    .venv/bin/python bench/layout.py --phrases 60000  # ~39 M rows
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from storage import ingest_like_rows

ROW_GROUP = 122_880
SCHEMA = (
    "run_id INTEGER, phrase_id BIGINT, layer SMALLINT, feature INTEGER, act_mean FLOAT, "
    "act_max FLOAT, n_active SMALLINT"
)
COLS = ["run_id", "phrase_id", "layer", "feature", "act_mean", "act_max", "n_active"]


def chunks(rows: pa.Table, chunk_rows: int):
    """Slices of whole phrases (all layers) of >= chunk_rows rows, sorted (layer, phrase)."""
    phrase = rows.column("phrase_id").to_numpy()
    order = np.argsort(phrase, kind="stable")
    by_phrase = rows.take(order)
    counts = np.bincount(phrase)
    ends = np.cumsum(counts)
    start, first = 0, 0
    for p in range(len(counts)):
        if ends[p] - start >= chunk_rows or p == len(counts) - 1:
            part = by_phrase.slice(start, ends[p] - start)
            yield part.sort_by([("layer", "ascending"), ("phrase_id", "ascending")])
            start, first = ends[p], p + 1
    del first


def build(path: Path, rows: pa.Table, variant: str, layers: int) -> float:
    """Write `rows` as `variant`; returns seconds of the writes (and the finish rewrite)."""
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    names = (
        [f"feature_acts_{i}" for i in range(layers)]
        if variant == "table-per-layer"
        else ["feature_acts"]
    )
    for name in names:
        con.execute(f"CREATE TABLE {name} ({SCHEMA})")
    size = 2 * ROW_GROUP * layers if variant == "chunk-2rg/layer" else 500_000
    start = time.perf_counter()
    for part in chunks(rows.select(COLS), size):
        con.execute("BEGIN")
        if variant == "table-per-layer":
            for i in range(layers):
                piece = part.filter(pc.equal(part.column("layer"), i))
                con.register("piece", piece)
                con.execute(f"INSERT INTO feature_acts_{i} SELECT * FROM piece")
                con.unregister("piece")
        else:
            con.register("piece", part)
            con.execute("INSERT INTO feature_acts SELECT * FROM piece")
            con.unregister("piece")
        con.execute("COMMIT")
    if variant == "rewrite":
        con.execute("BEGIN")
        first = con.execute("SELECT max(rowid) + 1 FROM feature_acts").fetchone()[0]
        con.execute(
            "INSERT INTO feature_acts SELECT * FROM feature_acts ORDER BY layer, phrase_id, feature"
        )
        con.execute("DELETE FROM feature_acts WHERE rowid < ?", [first])
        con.execute("COMMIT")
    con.execute("CHECKPOINT")
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def timed(con, sql: str, repeat: int = 3) -> float:
    con.execute(sql).fetchall()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(rows: pa.Table, layers: int, tmp: Path, variants: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    # the data itself: the same rows in one statement, layer-ordered, in a fresh file
    ref = tmp / "ref.duckdb"
    con = duckdb.connect(str(ref))
    con.register("src", rows.select(COLS))
    con.execute("CREATE TABLE feature_acts AS SELECT * FROM src ORDER BY layer, phrase_id, feature")
    con.execute("CHECKPOINT")
    con.close()
    data = ref.stat().st_size
    ref.unlink()
    layer = layers // 2
    for variant in variants:
        path = tmp / f"{variant.replace('/', '_')}.duckdb"
        write_s = build(path, rows, variant, layers)
        con = duckdb.connect(str(path), read_only=True)
        con.execute("SET threads = 2")
        if variant == "table-per-layer":
            one = f"SELECT count(*), sum(act_max) FROM feature_acts_{layer}"
            every = " UNION ALL ".join(
                f"SELECT {i} AS layer, count(*), sum(act_max) FROM feature_acts_{i}"
                for i in range(layers)
            )
            span = 1.0
        else:
            one = f"SELECT count(*), sum(act_max) FROM feature_acts WHERE layer = {layer}"
            every = "SELECT layer, count(*), sum(act_max) FROM feature_acts GROUP BY layer"
            span = con.execute(
                "SELECT avg(stats.max::INTEGER - stats.min::INTEGER + 1) FROM ("
                "  SELECT row_group_id, any_value(stats) AS stats FROM "
                "  pragma_storage_info('feature_acts') WHERE column_name = 'layer' "
                "  AND segment_type <> 'VALIDITY' GROUP BY row_group_id)"
            ).fetchone()[0]
        out[variant] = {
            "write_s": write_s,
            "one_layer_s": timed(con, one),
            "all_layers_s": timed(con, every),
            "layers_per_rg": float(span),
            "file_ratio": path.stat().st_size / data,
        }
        con.close()
        path.unlink()
    out["_data"] = {"bytes": data, "rows": rows.num_rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrases", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--variants", default="chunk-500k,chunk-2rg/layer,table-per-layer,rewrite")
    args = parser.parse_args()
    rows = ingest_like_rows(args.phrases, layers=args.layers)
    with tempfile.TemporaryDirectory(dir=os.environ.get("XLING_BENCH_TMP")) as tmp:
        result = measure(rows, args.layers, Path(tmp), args.variants.split(","))
    data = result.pop("_data")
    print(f"{data['rows']:,} rows, {args.layers} layers; data alone {data['bytes'] / 1e6:.0f} MB")
    for name, r in result.items():
        print(
            f"  {name:16s} write {r['write_s']:6.1f} s  one layer {r['one_layer_s']:.3f} s  "
            f"all layers {r['all_layers_s']:.3f} s  layers/row group {r['layers_per_rg']:.2f}  "
            f"file {r['file_ratio']:.2f}x data"
        )


if __name__ == "__main__":
    main()
