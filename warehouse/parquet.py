"""The warehouse as Parquet files, for engines and machines beyond one DuckDB file.

    export_parquet(wh, out_dir, run=None) -> {table: rows}   Hive-partitioned copy of the tables
    open_parquet(out_dir) -> DuckDB connection                 views over it, named like the tables
    write_part(parts_dir, tables) -> part name                 one ingest batch's rows (Ray engine)
    import_parts(wh, parts_dir, run_id) -> ImportResult        parts into a run, idempotently

An export holds one directory per table. feature_acts is partitioned by `layer=` and `lang=`
(the phrase's language, joined in), residuals and neuron_stats by `layer=`; every other table
is one file. `xling-export.json` lists the tables, their layout and row counts.
`open_parquet` gives an in-memory DuckDB whose tables are views over those files (same names,
same columns) with the standard metric views installed on top, so `xling query gap --db
parquet:DIR` reads the export in place, skipping other layers' partitions.

Ingest parts are written by engines that cannot hold the warehouse's lock (Ray actors on other
machines): one file per table per batch, `<table>/<name>.parquet`, the name a hash of the
batch's phrase ids, so a rerun overwrites its parts instead of adding copies. Importing deletes
the run's rows for the parts' phrases and inserts the parts, in one transaction: importing the
same parts twice, or parts that overlap, leaves each phrase's rows once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xling.warehouse import catalog
from xling.warehouse.connection import install_views, migrate
from xling.warehouse.errors import XlingError
from xling.warehouse.layout import order_run_rows

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

MANIFEST = "xling-export.json"
# table -> Hive partition columns; tables not listed are written as one file.
PARTITIONS = {
    "feature_acts": ("layer", "lang"),
    "residuals": ("layer",),
    "neuron_stats": ("layer",),
}
HIVE_TYPES = {"layer": "SMALLINT", "lang": "VARCHAR"}
# Tables an ingest part holds, in import order (the ledger last).
PART_TABLES = ("feature_acts", "residuals", "phrase_tokens")


# -- export ------------------------------------------------------------------------------------


def export_parquet(wh: Warehouse, out_dir: str | os.PathLike, run: int | None = None) -> dict:
    """Write every table of the warehouse (rows of run `run` only, if given) under `out_dir`.

    The directory must be new or empty; it is filled beside its final name and moved into
    place, so a failed export leaves nothing behind. Returns {table: rows}.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XlingError(f"{out} exists and is not an empty directory; pass a new directory")
    if run is not None:
        wh.run(run)  # unknown run -> one line
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise XlingError(f"cannot create --out {out}: {err.strerror or err}") from None
    try:
        tables = _tables(wh.con)
        manifest: dict = {"format": 1, "run": run, "tables": {}}
        for table in tables:
            columns = _columns(wh.con, table)
            where, params = "", []
            if run is not None and "run_id" in columns:
                where, params = "WHERE t.run_id = ?", [run]
            parts = PARTITIONS.get(table)
            if parts:
                select = "t.*, p.lang" if "lang" in parts and "lang" not in columns else "t.*"
                join = "JOIN phrases p USING (phrase_id)" if select != "t.*" else ""
                order = ", ".join([*parts, *(c for c in ("phrase_id", "feature") if c in columns)])
                query = f"SELECT {select} FROM {table} t {join} {where} ORDER BY {order}"
                target = tmp / table
                cols = ", ".join(parts)
                n = wh.con.execute(
                    f"COPY ({query}) TO ? (FORMAT parquet, PARTITION_BY ({cols}))",
                    [*params, str(target)],
                ).fetchone()[0]
            else:
                target = tmp / f"{table}.parquet"
                n = wh.con.execute(
                    f"COPY (SELECT * FROM {table} t {where}) TO ? (FORMAT parquet)",
                    [*params, str(target)],
                ).fetchone()[0]
            manifest["tables"][table] = {"partitions": list(parts or []), "rows": int(n)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %d tables to %s", len(manifest["tables"]), out)
    return {t: m["rows"] for t, m in manifest["tables"].items()}


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_xling%' ESCAPE '\\' "
        "ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


# -- reading an export in place ----------------------------------------------------------------


def open_parquet(root: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB over an export: views named like the tables, then the metric views.

    The schema comes from the migrations (so a table the export lacks is there, empty); each
    exported table is replaced by a view of its files with the warehouse's columns. Changes
    made on the connection stay in memory.
    """
    path = Path(root)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise XlingError(
            f"{path} is not an xling Parquet export (no {MANIFEST}); "
            "make one with `xling export-parquet DIR`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    con = duckdb.connect(":memory:")
    try:
        # `xling sql` turns external access off; the export's own files stay readable.
        con.execute("SET allowed_directories = ?", [[f"{path.resolve()}/"]])
        migrate(con)
        for table, meta in manifest["tables"].items():
            if not meta["rows"]:
                continue  # the migrated empty table stands in
            columns = _columns(con, table)
            if not columns:
                continue  # a table of a newer xling: not part of this schema
            select = ", ".join(f'"{c}"' for c in columns)
            if meta["partitions"]:
                types = ", ".join(f"'{c}': {HIVE_TYPES[c]}" for c in meta["partitions"])
                source = f"read_parquet($files, hive_partitioning = true, hive_types = {{{types}}})"
                files = str(path / table / "**" / "*.parquet")
            else:
                source, files = "read_parquet($files)", str(path / f"{table}.parquet")
            # A relation with the path bound as a parameter; filters on the partition
            # columns reach the file list (other layers' directories are never opened).
            rel = con.sql(f"SELECT {select} FROM {source}", params={"files": files})
            con.execute(f"DROP TABLE {table}")
            rel.create_view(table)
        install_views(con)
    except BaseException:
        con.close()
        raise
    return con


# -- ingest parts ------------------------------------------------------------------------------


def part_name(run_id: int, phrase_ids: np.ndarray) -> str:
    """A batch's part name: the same phrases of the same run always give the same name."""
    h = hashlib.sha256(np.int64(run_id).tobytes())
    h.update(np.sort(np.asarray(phrase_ids, dtype=np.int64)).tobytes())
    return h.hexdigest()[:24]


def write_part(parts_dir: str | os.PathLike, name: str, tables: dict[str, pa.Table]) -> None:
    """Write one batch's rows, `<table>/<name>.parquet` each, every file moved into place whole.

    phrase_tokens is written last: an importer that finds a batch's ledger finds its rows too.
    """
    root = Path(parts_dir)
    for table in PART_TABLES:
        rows = tables.get(table)
        if rows is None:
            continue
        (root / table).mkdir(parents=True, exist_ok=True)
        final = root / table / f"{name}.parquet"
        tmp = final.with_name(f".{name}.{os.getpid()}.tmp")
        pq.write_table(rows, tmp)
        os.replace(tmp, final)


@dataclass
class ImportResult:
    run_id: int
    parts: int  # parts (batches) found
    phrases: int  # phrases imported (their earlier rows in the run replaced)
    rows: int  # feature_acts rows imported
    missing: int  # phrases of the run still without rows
    finished: bool  # the run is now complete and marked finished


def import_parts(wh: Warehouse, parts_dir: str | os.PathLike, run_id: int) -> ImportResult:
    """Load the parts under `parts_dir` into run `run_id`, in one transaction.

    Rows the run already had for the parts' phrases are replaced; a phrase found in two parts
    is refused. When every phrase the run selected has rows
    afterwards, the run is laid out by layer and marked finished.
    """
    root = Path(parts_dir)
    run = wh.run(run_id)
    ledger = sorted((root / "phrase_tokens").glob("*.parquet"))
    if not ledger:
        raise XlingError(f"no ingest parts under {root} (expected {root}/phrase_tokens/*.parquet)")
    names = [p.stem for p in ledger]
    con = wh.con
    with wh.transaction():
        con.execute(
            "CREATE TEMP TABLE _xling_part_ids AS SELECT DISTINCT phrase_id FROM read_parquet(?)",
            [[str(p) for p in ledger]],
        )
        n_ledger = wh.scalar("SELECT count(*) FROM read_parquet(?)", [[str(p) for p in ledger]])
        n_phrases = wh.scalar("SELECT count(*) FROM _xling_part_ids")
        if n_ledger != n_phrases:
            raise XlingError(
                f"{n_ledger - n_phrases} phrases appear in more than one part under {root} "
                "(parts of runs with different batch sizes?); keep one run's parts"
            )
        had_rows = wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = ?", [run_id])
        replaced = 0
        for table in PART_TABLES:
            deleted = con.execute(
                f"DELETE FROM {table} WHERE run_id = ? AND phrase_id IN "
                "(SELECT phrase_id FROM _xling_part_ids)",
                [run_id],
            ).fetchone()[0]
            if table == "feature_acts":
                replaced = deleted
            files = [str(root / table / f"{n}.parquet") for n in names]
            files = [f for f in files if Path(f).is_file()]
            if not files:
                continue
            order = "layer, phrase_id, feature" if table == "feature_acts" else "phrase_id"
            if table == "residuals":
                order = "layer, phrase_id"
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT ?::INTEGER AS run_id, * "
                f"FROM read_parquet(?) ORDER BY {order}",
                [run_id, files],
            )
        con.execute("DROP TABLE _xling_part_ids")
        n_rows = wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = ?", [run_id])
        done = wh.scalar("SELECT count(*) FROM phrase_tokens WHERE run_id = ?", [run_id])
        if had_rows > replaced:
            order_run_rows(con, run_id)  # earlier imports' rows and these: one layer order
        total = run.n_selected if run.n_selected is not None else int(done)
        finished = done >= total
        catalog.set_counts(con, run_id, int(done), int(n_rows))
        if finished:
            catalog.finish_run(con, run_id)
    rows = int(
        sum(
            pq.read_metadata(root / "feature_acts" / f"{n}.parquet").num_rows
            for n in names
            if (root / "feature_acts" / f"{n}.parquet").is_file()
        )
    )
    return ImportResult(
        run_id=run_id,
        parts=len(names),
        phrases=int(n_phrases),
        rows=rows,
        missing=max(0, total - int(done)),
        finished=finished,
    )
