"""Where a run's batch rows go: the warehouse (chunks committed with their ledger) or Parquet
parts (an engine's workers that cannot hold the warehouse's lock).

    sink = WarehouseSink(wh, run_id, langs, chunk_rows=..., first_chunk=0)
    sink.write(batch, rows); ...; sink.close(); sink.finish(neurons=...)
    ParquetSink(parts_dir, run_id).write(batch, rows) -> part name

WarehouseSink buffers batches and commits a chunk once it holds `chunk_rows` rows (or 256 MiB
of Arrow): the rows, `phrase_tokens` (one row per phrase done) and the chunk's ledger entry in
one transaction, with the chunk's summaries (xling.warehouse.summaries), so a killed run holds
whole phrases only and `--resume` redoes exactly the phrases missing from `phrase_tokens`.
Feature rows go to the table of the run's encoding (xling.warehouse.encoding). Neuron statistics are additive: each chunk appends its
per-language partial counts, and `finish` folds them into one row per (lang, layer, neuron).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from xling.ingest.stages import Batch, BatchRows
from xling.warehouse import catalog
from xling.warehouse.encoding import encode_tables, tables_for
from xling.warehouse.parquet import part_name, write_part
from xling.warehouse.summaries import finish_summaries, update_summaries
from xling.warehouse.writer import append_arrow

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

# Residual rows are wide (d_model floats each): a chunk also closes at this many Arrow bytes.
MAX_CHUNK_BYTES = 256 * 2**20


class WarehouseSink:
    """Batch rows into the warehouse, committed in chunks with their ledger."""

    def __init__(
        self,
        wh: Warehouse,
        run_id: int,
        langs: list[str],
        *,
        chunk_rows: int,
        first_chunk: int = 0,
        encoding: str = "lossless",
    ) -> None:
        self.wh, self.run_id, self.langs, self.chunk_rows = wh, run_id, langs, chunk_rows
        self.encoding = encoding
        tables_for(encoding)  # refuses an unknown encoding before any row is computed
        self._backfill: bool | None = None  # summaries must cover earlier sessions' phrases
        self.chunks = first_chunk  # chunks committed so far, earlier sessions included
        self.rows = 0  # feature rows committed by this sink
        self._reset()

    def _reset(self) -> None:
        self.features: list[pa.Table] = []
        self.residuals: list[pa.Table] = []
        self.tokens: list[pa.Table] = []
        self.neurons: dict[int, list] = {}
        self.n_rows = 0
        self.n_bytes = 0

    def write(self, batch: Batch, rows: BatchRows) -> None:
        """Buffer the batch's rows; commit a chunk when the buffer is full."""
        self.tokens.append(rows.tokens)
        for table, dest in ((rows.features, self.features), (rows.residuals, self.residuals)):
            if table is not None:
                dest.append(table)
                self.n_rows += table.num_rows
                self.n_bytes += table.nbytes
        for layer, (n_tok, n_pos, act_sum) in rows.neurons.items():
            acc = self.neurons.get(layer)
            self.neurons[layer] = (
                [n_tok, n_pos, act_sum]
                if acc is None
                else [acc[0] + n_tok, acc[1] + n_pos, acc[2] + act_sum]
            )
        if self.n_rows >= self.chunk_rows or self.n_bytes >= MAX_CHUNK_BYTES:
            self.commit()

    def close(self) -> None:
        """Commit what is buffered."""
        if self.tokens:
            self.commit()

    def commit(self) -> None:
        """Write the buffered rows, their ledger and the chunk record in one transaction."""
        run = pa.scalar(self.run_id, pa.int32())
        tables = {
            "phrase_tokens": self.tokens,
            "feature_acts": self.features,
            "residuals": self.residuals,
        }
        merged = {name: pa.concat_tables(parts) for name, parts in tables.items() if parts}
        prepared = {}
        for name, t in merged.items():
            if name == "residuals":
                # Layer-ordered chunks let DuckDB's zone maps skip other layers' rows.
                t = t.sort_by([("layer", "ascending"), ("phrase_id", "ascending")])
            elif name == "feature_acts":
                # Layer first for the zone maps; then by feature, so that feature ids repeat
                # in runs and phrase ids climb within a run. On a real Gemma 3 270M ingest
                # (lean, 810,062 rows) this took 6.55 B per row against 6.80 B ordered
                # (layer, phrase, feature); written in one statement the other order wins,
                # which is why bench/storage.py's one-statement variants disagree.
                t = t.sort_by(
                    [("layer", "ascending"), ("feature", "ascending"), ("phrase_id", "ascending")]
                )
            encoded = (
                encode_tables(t, self.encoding, merged["phrase_tokens"])
                if name == "feature_acts"
                else {name: t}
            )
            for table, rows in encoded.items():
                prepared[table] = rows.append_column("run_id", pa.repeat(run, rows.num_rows))
        if self.neurons:
            prepared["neuron_stats"] = self._neuron_table(run)
        n_phrases = prepared["phrase_tokens"].num_rows
        n_features = merged["feature_acts"].num_rows if "feature_acts" in merged else 0
        phrase_ids = prepared["phrase_tokens"].column("phrase_id").to_numpy()
        with self.wh.transaction() as con:
            for name, table in prepared.items():
                append_arrow(con, name, table)
            # The chunk's summaries commit (or roll back) with its rows, so a resumed run
            # adds exactly the phrases that are missing.
            update_summaries(con, self.run_id, self._summary_ids(con, phrase_ids))
            catalog.commit_chunk(con, self.run_id, self.chunks, n_phrases, n_features)
        log.debug(
            "run %d chunk %d: %d phrases, %d feature rows",
            self.run_id,
            self.chunks,
            n_phrases,
            n_features,
        )
        self._backfill = False  # set only once the chunk (and its backfill) committed
        self.chunks += 1
        self.rows += n_features
        self._reset()

    def _summary_ids(self, con, phrase_ids: np.ndarray) -> np.ndarray:
        """The phrases whose summaries this chunk adds: its own, or, on the first chunk of a
        run whose earlier phrases have rows but no summaries (imported Ray parts, a warehouse
        from before summaries), every phrase of the run so far."""
        if self._backfill is None:
            self._backfill = con.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM summary_runs WHERE run_id = $run) "
                "AND (SELECT count(*) FROM phrase_tokens WHERE run_id = $run) > $n",
                {"run": self.run_id, "n": len(phrase_ids)},
            ).fetchone()[0]
        if not self._backfill:
            return phrase_ids
        rows = con.execute(
            "SELECT phrase_id FROM phrase_tokens WHERE run_id = ? ORDER BY phrase_id",
            [self.run_id],
        ).fetchnumpy()
        return rows["phrase_id"]

    def finish(self, *, neurons: bool) -> None:
        """Fold the neuron counts and the summaries and mark the run finished."""
        with self.wh.transaction() as con:
            if neurons:
                # Fold the chunks' partial counts into one row per (lang, layer, neuron).
                con.execute(
                    "CREATE TEMP TABLE _xling_neurons AS SELECT run_id, lang, layer, neuron, "
                    "sum(n_tokens)::BIGINT AS n_tokens, sum(n_positive)::BIGINT AS n_positive, "
                    "sum(act_sum) AS act_sum FROM neuron_stats WHERE run_id = ? "
                    "GROUP BY ALL ORDER BY layer, lang, neuron",
                    [self.run_id],
                )
                con.execute("DELETE FROM neuron_stats WHERE run_id = ?", [self.run_id])
                con.execute("INSERT INTO neuron_stats BY NAME SELECT * FROM _xling_neurons")
                con.execute("DROP TABLE _xling_neurons")
            # No layout rewrite: chunks are layer-sorted already, and the metric views read
            # the summaries, so the finish never copies the run's rows (docs/scale.md).
            finish_summaries(con, self.run_id)
            catalog.finish_run(con, self.run_id)

    def _neuron_table(self, run: pa.Scalar) -> pa.Table:
        parts = []
        for layer, (n_tok, n_pos, act_sum) in sorted(self.neurons.items()):
            n_tok, n_pos, act_sum = n_tok.cpu().numpy(), n_pos.cpu().numpy(), act_sum.cpu().numpy()
            n_neurons = n_pos.shape[1]
            for slot in np.flatnonzero(n_tok):
                parts.append(
                    pa.table(
                        {
                            "lang": pa.repeat(pa.scalar(self.langs[slot]), n_neurons),
                            "layer": pa.array(np.full(n_neurons, layer, np.int16)),
                            "neuron": pa.array(np.arange(n_neurons, dtype=np.int32)),
                            "n_tokens": pa.array(np.full(n_neurons, n_tok[slot], np.int64)),
                            "n_positive": pa.array(n_pos[slot]),
                            "act_sum": pa.array(act_sum[slot]),
                        }
                    )
                )
        t = pa.concat_tables(parts) if parts else pa.table({})
        return t.append_column("run_id", pa.repeat(run, t.num_rows))


class ParquetSink:
    """Each batch's rows as one Parquet part under `parts_dir`, named by run and phrase ids
    (a rerun overwrites its parts). Neuron counts are not written: parts carry rows only."""

    def __init__(self, parts_dir: str, run_id: int) -> None:
        self.parts_dir, self.run_id = parts_dir, run_id

    def write(self, batch: Batch, rows: BatchRows) -> str:
        name = part_name(self.run_id, batch.phrase_ids)
        write_part(
            self.parts_dir,
            name,
            {
                "feature_acts": rows.features,
                "residuals": rows.residuals,
                "phrase_tokens": rows.tokens,
            },
        )
        return name
