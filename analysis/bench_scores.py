"""The `benchmarks` table: scores as rows, stored replace-or-insert, and read back.

A score replaces the stored one with the same (model_id, task, lang, metric, steer), so
storing the same scores twice keeps one copy. Scores attach only to models already in the
warehouse (`resolve_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa

from xling.warehouse.errors import XlingError
from xling.warehouse.writer import append_arrow

BENCHMARK_SCHEMA = pa.schema(
    [
        ("model_id", pa.int32()),
        ("task", pa.string()),
        ("lang", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("stderr", pa.float64()),
        ("n_samples", pa.int64()),
        ("source", pa.string()),
        ("steer", pa.string()),
        ("num_fewshot", pa.int32()),
    ]
)


@dataclass(frozen=True)
class Score:
    """One benchmark number for one language, before it is attached to a model."""

    task: str
    lang: str
    metric: str
    value: float
    stderr: float | None = None
    n_samples: int | None = None
    num_fewshot: int | None = None


def resolve_model(wh, model: str, adapter: str | None = None) -> int:
    """model_id of an ingested model: a numeric id, or a name (with `adapter`, if any).

    Scores attach only to models already in the warehouse (ingested or registered by `bench
    run`/`bench bpb`): a score of a model without activations cannot be correlated with
    anything, and a name typo would otherwise create a second model silently.
    """
    if model.isdigit():
        if wh.scalar("SELECT count(*) FROM models WHERE model_id = ?", [int(model)]):
            return int(model)
        raise XlingError(f"no model with id {model}; `xling bench models` lists them")
    ids = [
        r[0]
        for r in wh.con.execute(
            "SELECT model_id FROM models WHERE name = ? AND adapter IS NOT DISTINCT FROM ? "
            "ORDER BY model_id",
            [model, adapter],
        ).fetchall()
    ]
    if len(ids) == 1:
        return ids[0]
    # repr: a name read from a file may hold a line break, and the error stays one line.
    what = repr(model) + (f" with adapter {adapter!r}" if adapter else "")
    if not ids:
        raise XlingError(
            f"no model {what} in the warehouse; ingest it first, or pass --model with the name "
            "or id of a model listed by `xling bench models`"
        )
    raise XlingError(f"model {what} matches model ids {', '.join(map(str, ids))}; pass --model ID")


def scores_table(
    model_id: int,
    scores: Sequence[Score],
    *,
    source: str,
    steer: str | None = None,
) -> pa.Table:
    """Rows for `benchmarks` (BENCHMARK_SCHEMA) from one model's scores."""
    cols: dict[str, list] = {name: [] for name in BENCHMARK_SCHEMA.names}
    for s in scores:
        for name, value in (
            ("model_id", model_id),
            ("task", s.task),
            ("lang", s.lang),
            ("metric", s.metric),
            ("value", s.value),
            ("stderr", s.stderr),
            ("n_samples", s.n_samples),
            ("source", source),
            ("steer", steer),
            ("num_fewshot", s.num_fewshot),
        ):
            cols[name].append(value)
    return pa.table(cols, schema=BENCHMARK_SCHEMA)


_KEY = ("model_id", "task", "lang", "metric", "steer")


def store_scores(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> int:
    """Replace-or-insert `rows` (BENCHMARK_SCHEMA) by (model_id, task, lang, metric, steer).

    Returns how many stored rows were replaced. Within `rows`, a later duplicate key wins.
    The caller owns the transaction.
    """
    keys = zip(*(rows.column(k).to_pylist() for k in _KEY), strict=True)
    last = {key: i for i, key in enumerate(keys)}
    if len(last) < rows.num_rows:
        rows = rows.take(sorted(last.values()))
    match = " AND ".join(f"b.{k} IS NOT DISTINCT FROM n.{k}" for k in _KEY)
    # DuckDB 2 refuses register() while an earlier execute() on the connection has rows left
    # unfetched (a fetchone() of the caller's, e.g. register_model's); close it first.
    con.complete()
    con.register("_xling_bench_new", rows)
    try:
        replaced = con.execute(
            f"SELECT count(*) FROM benchmarks b, _xling_bench_new n WHERE {match}"
        ).fetchall()[0][0]
        con.execute(f"DELETE FROM benchmarks b USING _xling_bench_new n WHERE {match}")
    finally:
        con.unregister("_xling_bench_new")
    append_arrow(con, "benchmarks", rows)
    return int(replaced)


def known_languages(wh) -> set[str]:
    return {r[0] for r in wh.con.execute("SELECT lang FROM languages").fetchall()}


def benchmark_scores(
    wh,
    *,
    model: str | None = None,
    task: str | None = None,
    metric: str | None = None,
) -> pd.DataFrame:
    """Stored scores, one row each, with the model's name and adapter; optional filters."""
    return wh.sql(
        "SELECT b.model_id, m.name AS model, m.adapter, b.steer, b.task, b.lang, b.metric, "
        "b.value, b.stderr, b.n_samples, b.num_fewshot, b.source "
        "FROM benchmarks b JOIN models m USING (model_id) "
        "WHERE (CAST(? AS VARCHAR) IS NULL OR m.name = ? OR CAST(b.model_id AS VARCHAR) = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR b.task = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR b.metric = ?) "
        "ORDER BY b.model_id, b.steer NULLS FIRST, b.task, b.metric, b.lang",
        [model, model, model, task, task, metric, metric],
    )


def models_table(wh) -> pd.DataFrame:
    """The warehouse's models with how many runs and benchmark rows each has."""
    return wh.sql(
        "SELECT m.model_id, m.name, m.adapter, m.n_layers, m.d_model, "
        "(SELECT count(*) FROM runs r WHERE r.model_id = m.model_id) AS runs, "
        "(SELECT count(*) FROM benchmarks b WHERE b.model_id = m.model_id) AS benchmarks "
        "FROM models m ORDER BY m.model_id"
    )
