"""Checks of a phrase frame against the warehouse before anything is written.

Every check raises `XlingError` naming the first bad row by its file and line (when the rows
carry `_file`/`_line`) and what to do about it: empty group ids or text, overlong text,
unknown languages, duplicate (group, language) pairs, phrase ids that clash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from xling.ingest.languages import known_languages
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

# A phrase is a snippet (ingest reads at most --max-tokens tokens of it); a longer text is a
# broken file far more often than a real phrase, e.g. a quote left open swallowing lines.
MAX_TEXT_CHARS = 100_000
# Text that shows nothing: whitespace, zero-width characters (U+200B-U+200D, U+2060, U+FEFF),
# bidi marks, embeddings and isolates (U+200E/F, U+061C, U+202A-E, U+2066-9), soft hyphens,
# variation selectors and the combining grapheme joiner. Such a phrase is empty to a reader
# and tokenises to marks alone, so it is refused as empty text is.
BLANK = "[\\s\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufe00-\ufe0f\ufeff]*"


def _loc(df: pd.DataFrame, i: int) -> str | None:
    """'a.csv line 7' for row i, or None when rows carry no location."""
    file = df["_file"].iloc[i]
    return None if pd.isna(file) else f"{file} {int(df['_line'].iloc[i])}"


def where(df: pd.DataFrame, i: int) -> str:
    loc = _loc(df, i)
    return f"{loc}: " if loc else ""


def check_rows(wh: Warehouse, df: pd.DataFrame) -> None:
    group = df["group_id"]
    bad_group = group.isna() | (group.fillna("").astype(str).str.strip() == "")
    if bad_group.any():
        i = int(np.flatnonzero(bad_group.to_numpy())[0])
        raise XlingError(f"{where(df, i)}empty group_id; every phrase needs a group id")
    text = df["text"]
    empty = text.isna() | text.fillna("").astype(str).str.fullmatch(BLANK)
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise XlingError(
            f"{where(df, i)}empty text for group {df.group_id[i]!r} ({df.lang[i]}); "
            "fill it in or drop the row (wide files: --skip-empty treats empty cells as "
            "missing translations)"
        )
    long = text.str.len().to_numpy(dtype=float) > MAX_TEXT_CHARS
    if long.any():
        i = int(np.flatnonzero(long)[0])
        raise XlingError(
            f"{where(df, i)}text of {len(text.iloc[i]):,} characters for group "
            f"{df.group_id[i]!r} ({df.lang[i]}); phrases are at most {MAX_TEXT_CHARS:,} "
            "characters: split it, or look for a quote left open in the file"
        )
    known = set(known_languages(wh))
    unknown = ~df["lang"].isin(known) | df["lang"].isna()
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        code = df.lang[i]
        raise XlingError(
            f"{where(df, i)}unknown language code {code!r}; add it first with "
            f"`xling corpus languages add {code} NAME --group high|low` or "
            f"`xling sql \"INSERT INTO languages VALUES ('{code}', 'NAME', 'low')\" --write`"
        )
    pairs = df.duplicated(["group_id", "lang"], keep=False)
    if pairs.any():
        i, j = (int(k) for k in np.flatnonzero(pairs.to_numpy())[:2])
        first = f" (first at {_loc(df, i)})" if _loc(df, i) else ""
        raise XlingError(
            f"{where(df, j)}duplicate phrase for group {df.group_id[j]!r} ({df.lang[j]})"
            f"{first}; keep one"
        )


def check_ids(wh: Warehouse, df: pd.DataFrame) -> None:
    ids = df["phrase_id"]
    given = ids.notna()
    if not given.any():
        return
    dup = ids.duplicated(keep="first") & given
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise XlingError(
            f"{where(df, i)}duplicate phrase_id {int(ids.iloc[i])}; phrase ids must be unique"
        )
    wanted = pa.table({"phrase_id": pa.array(ids[given].astype("int64").to_numpy())})
    hit = _first_match(
        wh, wanted, "SELECT t.phrase_id FROM {t} t JOIN phrases p USING (phrase_id) LIMIT 1"
    )
    if hit is not None:
        i = int(np.flatnonzero((ids == hit[0]).fillna(False).to_numpy())[0])
        raise XlingError(
            f"{where(df, i)}phrase_id {hit[0]} is already in the warehouse; drop the phrase_id "
            "column to let xling number the phrases"
        )


def existing_pairs(wh: Warehouse, df: pd.DataFrame) -> np.ndarray:
    """Mask of rows whose (group_id, lang) is already in `phrases`."""
    keys = pa.table(
        {
            "i": pa.array(np.arange(len(df))),
            "group_id": pa.array(df["group_id"].astype(str).to_numpy(), pa.string()),
            "lang": pa.array(df["lang"].astype(str).to_numpy(), pa.string()),
        }
    )
    name = "_xling_keys"
    wh.con.register(name, keys)
    try:
        hits = wh.con.execute(
            f"SELECT k.i FROM {name} k JOIN phrases p USING (group_id, lang)"
        ).fetchnumpy()["i"]
    finally:
        wh.con.unregister(name)
    mask = np.zeros(len(df), dtype=bool)
    mask[np.asarray(hits, dtype=np.int64)] = True
    return mask


def _first_match(wh: Warehouse, table: pa.Table, query: str) -> tuple | None:
    name = "_xling_probe"
    wh.con.register(name, table)
    try:
        rows = wh.con.execute(query.format(t=name)).fetchall()
        return rows[0] if rows else None
    finally:
        wh.con.unregister(name)
