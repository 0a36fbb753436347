"""The one validated loader every corpus source uses: `load_phrases`.

It takes a long frame of phrases (from files, Neuronpedia, CLDR or translation), checks it
(`corpus_checks`), numbers the phrases after the largest id in use, lets phrases without an
origin inherit their group's, and appends everything to `phrases` in one transaction, or
raises `XlingError` having written nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from xling.ingest.corpus_checks import check_ids, check_rows, existing_pairs, where
from xling.ingest.corpus_columns import as_strings
from xling.warehouse.errors import XlingError
from xling.warehouse.writer import append_arrow

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

# Column order and types of `phrases`; loaders build frames with (a subset of) these names.
PHRASE_SCHEMA = pa.schema(
    [
        ("phrase_id", pa.int64()),
        ("group_id", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("origin_layer", pa.int32()),
        ("origin_feature", pa.int32()),
    ]
)
# Where a row came from, for error messages: `_file` ("a.csv line") and `_line` (a number).
LOCATION_COLUMNS = ("_file", "_line")


@dataclass
class LoadResult:
    """What a load added to `phrases`."""

    phrases: int
    groups: int
    new_groups: int
    by_lang: dict[str, int]
    skipped: int = 0
    """Rows whose (group, language) was already in the warehouse (when asked to skip)."""
    notes: list[str] = field(default_factory=list)
    """Things worth telling the user, e.g. columns that were ignored."""


def load_phrases(
    wh: Warehouse,
    rows: pd.DataFrame,
    *,
    on_existing: Literal["error", "skip"] = "error",
) -> LoadResult:
    """Validate `rows` and append them to `phrases` in one transaction.

    `rows` needs group_id, lang, text; phrase_id, source, origin_layer, origin_feature and
    the location columns `_file`/`_line` are optional. Missing phrase ids are assigned after
    the largest id in use. Phrases without an origin inherit their group's (from these rows
    or the warehouse) when the group has exactly one. A (group, language) pair already in
    the warehouse is an error, or is skipped with `on_existing="skip"`. Any problem raises
    `XlingError` before anything is written.
    """
    df = rows.reset_index(drop=True).copy()
    for col in ("phrase_id", "source", "origin_layer", "origin_feature", *LOCATION_COLUMNS):
        if col not in df:
            df[col] = None
    df["phrase_id"] = df["phrase_id"].astype("Int64")
    check_rows(wh, df)
    skipped = 0
    existing = existing_pairs(wh, df)
    if existing.any():
        if on_existing == "skip":
            skipped = int(existing.sum())
            df = df[~existing].reset_index(drop=True)
        else:
            i = int(np.flatnonzero(existing)[0])
            raise XlingError(
                f"{where(df, i)}group {df.group_id[i]!r} already has a phrase in "
                f"{df.lang[i]} in the warehouse; drop it from the input, or delete the old one "
                "first"
            )
    check_ids(wh, df)
    table = _finish(wh, df)
    new_groups = _count_new_groups(wh, table)
    try:
        with wh.transaction() as con:
            append_arrow(con, "phrases", table)
    except (duckdb.IOException, duckdb.TransactionException, OSError) as err:
        # A full disk (or a file-size limit) fails the insert; DuckDB then refuses the rest of
        # the transaction, which the rollback ends: the warehouse holds what it held before.
        raise XlingError(
            f"cannot write to the warehouse ({_io_cause(err)}); nothing was loaded: free disk "
            "space and load again"
        ) from None
    by_lang = df["lang"].value_counts(sort=False).to_dict()
    log.info("loaded %d phrases (%d skipped)", table.num_rows, skipped)
    return LoadResult(
        phrases=table.num_rows,
        groups=int(df["group_id"].nunique()),
        new_groups=new_groups,
        by_lang={str(k): int(v) for k, v in sorted(by_lang.items())},
        skipped=skipped,
    )


def _io_cause(err: BaseException) -> str:
    """The first line of the write error behind `err` (DuckDB's TransactionException after a
    failed write only says the transaction is aborted; its context says why)."""
    seen = err
    while seen is not None and not isinstance(seen, duckdb.IOException | OSError):
        seen = seen.__context__
    text = str(seen or err).strip().splitlines()
    return (text[0] if text else type(err).__name__).removeprefix("IO Error: ")


def _finish(wh: Warehouse, df: pd.DataFrame) -> pa.Table:
    """The rows as a `phrases` Arrow table: ids assigned, origins inherited."""
    ids = df["phrase_id"]
    missing = ids.isna().to_numpy()
    if missing.any():
        in_use = wh.con.execute("SELECT coalesce(max(phrase_id), 0) FROM phrases").fetchall()
        start = max(int(in_use[0][0]), int(ids.max()) if (~missing).any() else 0) + 1
        ids = ids.copy()
        ids[missing] = np.arange(start, start + int(missing.sum()))
    table = pa.table(
        {
            "phrase_id": pa.array(ids.to_numpy(dtype=np.int64), pa.int64()),
            "group_id": pa.array(df["group_id"].astype(str).to_numpy(), pa.string()),
            "lang": pa.array(df["lang"].astype(str).to_numpy(), pa.string()),
            "text": pa.array(df["text"].astype(str).to_numpy(), pa.string()),
            "source": pa.array(as_strings(df["source"]).to_numpy(), pa.string()),
            "origin_layer": _int32(df["origin_layer"]),
            "origin_feature": _int32(df["origin_feature"]),
        },
        schema=PHRASE_SCHEMA,
    )
    return _inherit_origin(wh, table)


def _int32(s: pd.Series) -> pa.Array:
    return pa.array(pd.array(s, dtype="Int64")).cast(pa.int32())


def _inherit_origin(wh: Warehouse, table: pa.Table) -> pa.Table:
    """Fill a phrase's missing origin from its group when the group has exactly one origin
    (translations added later belong to the same SAE feature as their English phrase)."""
    if table.column("origin_layer").null_count == 0:
        return table
    name = "_xling_new"
    wh.con.register(name, table)
    try:
        return wh.con.sql(
            f"""
            WITH known AS (
                SELECT group_id, origin_layer, origin_feature FROM phrases
                WHERE origin_layer IS NOT NULL AND group_id IN (SELECT group_id FROM {name})
                UNION ALL
                SELECT group_id, origin_layer, origin_feature FROM {name}
                WHERE origin_layer IS NOT NULL
            ), single AS (
                SELECT group_id, min(origin_layer) AS l, min(origin_feature) AS f FROM known
                GROUP BY group_id
                HAVING count(DISTINCT (origin_layer, origin_feature)) = 1
            )
            SELECT n.phrase_id, n.group_id, n.lang, n.text, n.source,
                   coalesce(n.origin_layer, s.l)::INTEGER AS origin_layer,
                   CASE WHEN n.origin_layer IS NULL THEN s.f ELSE n.origin_feature END::INTEGER
                       AS origin_feature
            FROM {name} n LEFT JOIN single s USING (group_id)
            ORDER BY n.phrase_id
            """
        ).to_arrow_table()
    finally:
        wh.con.unregister(name)


def _count_new_groups(wh: Warehouse, table: pa.Table) -> int:
    name = "_xling_new"
    wh.con.register(name, table.select(["group_id"]))
    try:
        query = (
            f"SELECT count(DISTINCT group_id) FROM {name} "
            "WHERE group_id NOT IN (SELECT group_id FROM phrases)"
        )
        return int(wh.con.execute(query).fetchall()[0][0])
    finally:
        wh.con.unregister(name)
