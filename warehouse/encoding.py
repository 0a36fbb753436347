"""How feature_acts values are stored: `lossless` (float32 as computed), `lean` (lossless, with
act_mean left out where it follows from act_max) or `compact` (quantised).

    encoding_of(config) -> 'lossless' | 'lean' | 'compact'   what a run's config JSON records
    tables_for(encoding) -> ('feature_acts', ...)            the tables its rows go to
    encode_tables(rows, encoding, tokens) -> {table: pa.Table}   the Arrow rows each table takes
    decode_compact(q_max, q_mean) -> (act_max, act_mean)     numpy, as the SQL view decodes

`lossless` rows are feature_acts as it always was: act_max and act_mean are the float32 values
the ingest computed, bit for bit.

`lean` is lossless too. A feature that fired on one pooled token of a phrase (n_active = 1)
has act_mean = act_max / n_tokens: the sum over the phrase's tokens is that one value, and
the ingest divides it by the phrase's pooled-token count in float32. Those rows (63.5 % of a
Gemma 3 270M ingest of the demo corpus) go to feature_acts_single (migration 009) with
act_max only; the view computes act_mean = (act_max / phrase_tokens.n_tokens)::FLOAT, which
is correctly rounded float32 division, the same operation. `encode_tables` moves a row only
where numpy's float32 division reproduces the stored act_mean exactly, so whatever computed
the row (a GPU, another dtype), every value reads back bit for bit; other rows stay whole in
feature_acts. Measured: 6.31 B per stored nonzero against 8.74 B (bench/storage.py --db on
the demo warehouse).

`compact` rows go to feature_acts_compact (migration 008):

    q_max  = round(256 · log2(act_max))                         INTEGER
    q_mean = clamp(round(-31 · log2(act_mean / act_max')), 0, 255)  UTINYINT
             where act_max' = 2^(q_max / 256) is the decoded act_max

decoded as act_max' = 2^(q_max/256) and act_mean' = 2^(q_max/256 - q_mean/31). A log scale
keeps the error relative, whatever the magnitude: |act_max' / act_max - 1| <= 2^(1/512) - 1
(0.136 %) and |act_mean' / act_mean - 1| <= 2^(1/62) - 1 (1.124 %; act_mean is quantised against
the decoded act_max, so the two errors do not add). The act_mean bound needs act_mean / act_max
>= 2^(-255/31); act_mean >= act_max / n_tokens, so phrases of up to MAX_COMPACT_TOKENS tokens
always meet it, and `encode_rows` refuses rows that do not. Measured: 4.9 B per stored nonzero
against 9.1 B lossless (bench/storage.py).

Every reader goes through the `feature_values` view (sql/views/feature_values.sql), which
returns the same columns from all three tables, so a metric reads a run the same way whatever
its encoding. Ad-hoc SQL over `feature_acts` alone sees a lean run's multi-token rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ENCODINGS = ("lossless", "lean", "compact")
MAX_SCALE = 256  # q_max steps per octave
MEAN_SCALE = 31  # q_mean steps per octave; 255 steps reach 2^-8.2, below 1/300
MAX_COMPACT_TOKENS = 300
MAX_REL_ERROR = 2 ** (1 / (2 * MAX_SCALE)) - 1  # act_max
MEAN_REL_ERROR = 2 ** (1 / (2 * MEAN_SCALE)) - 1  # act_mean

_TABLES = {
    "lossless": ("feature_acts",),
    "lean": ("feature_acts", "feature_acts_single"),
    "compact": ("feature_acts_compact",),
}


def check_encoding(encoding: str, max_tokens: int | None = None) -> None:
    """Raise ValueError for an unknown encoding, or compact with phrases past its bound."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if encoding == "compact" and max_tokens is not None and max_tokens > MAX_COMPACT_TOKENS:
        raise ValueError(
            f"the compact encoding holds phrases of up to {MAX_COMPACT_TOKENS} tokens; "
            f"max_tokens is {max_tokens}"
        )


def encoding_of(config: Mapping[str, Any]) -> str:
    """The encoding a run's config records; runs from before encodings are lossless."""
    encoding = config.get("encoding") or "lossless"
    check_encoding(encoding)
    return encoding


def tables_for(encoding: str) -> tuple[str, ...]:
    """The tables a run of `encoding` writes its feature rows to."""
    check_encoding(encoding)
    return _TABLES[encoding]


def encode_compact(act_max: np.ndarray, act_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_max int32, q_mean uint8) of positive float activations; see the module docstring."""
    act_max = np.asarray(act_max, np.float64)
    act_mean = np.asarray(act_mean, np.float64)
    if act_max.size and not (np.all(act_max > 0) and np.all(act_mean > 0)):
        raise ValueError("compact encoding needs act_max > 0 and act_mean > 0 (stored rows fired)")
    q_max = np.rint(np.log2(act_max) * MAX_SCALE)
    max_hat = np.exp2(q_max / MAX_SCALE)
    steps = np.rint(-MEAN_SCALE * np.log2(act_mean / max_hat))
    if steps.size and steps.max() > 255:
        raise ValueError(
            "act_mean below 2^-8.2 of act_max: the compact encoding holds phrases of up to "
            f"{MAX_COMPACT_TOKENS} tokens"
        )
    return q_max.astype(np.int32), np.clip(steps, 0, 255).astype(np.uint8)


def decode_compact(q_max: np.ndarray, q_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(act_max, act_mean) float32, computed as feature_values computes them."""
    q_max = np.asarray(q_max, np.float64)
    q_mean = np.asarray(q_mean, np.float64)
    act_max = np.exp2(q_max / MAX_SCALE).astype(np.float32)
    act_mean = np.exp2(q_max / MAX_SCALE - q_mean / MEAN_SCALE).astype(np.float32)
    return act_max, act_mean


def single_token_rows(
    act_max: np.ndarray, act_mean: np.ndarray, n_active: np.ndarray, n_tokens: np.ndarray
) -> np.ndarray:
    """Which rows the lean encoding stores without act_mean: n_active = 1 and act_mean equal
    to the float32 quotient act_max / n_tokens (what feature_values computes back)."""
    act_max = np.asarray(act_max, np.float32)
    derived = act_max / np.asarray(n_tokens, np.float32)
    return (np.asarray(n_active) == 1) & (derived == np.asarray(act_mean, np.float32))


def encode_tables(
    rows: pa.Table, encoding: str, tokens: pa.Table | None = None
) -> dict[str, pa.Table]:
    """{table: Arrow rows} for ingest rows with act_max/act_mean/n_active.

    `tokens` (phrase_id, n_tokens; every phrase of `rows`) is needed by `lean` only.
    """
    check_encoding(encoding)
    if encoding != "lean":
        return {_TABLES[encoding][0]: encode_rows(rows, encoding)}
    if tokens is None:
        raise ValueError("the lean encoding needs the phrases' token counts")
    order = np.argsort(tokens.column("phrase_id").to_numpy())
    known = tokens.column("phrase_id").to_numpy()[order]
    pids = rows.column("phrase_id").to_numpy()
    at = np.searchsorted(known, pids)
    if pids.size and (at.max() >= known.size or not np.array_equal(known[at], pids)):
        raise ValueError("feature rows of a phrase without a token count")
    n_tokens = tokens.column("n_tokens").to_numpy()[order][at]
    single = single_token_rows(
        rows.column("act_max").to_numpy(),
        rows.column("act_mean").to_numpy(),
        rows.column("n_active").to_numpy(),
        n_tokens,
    )
    mask = pa.array(single)
    whole = rows.filter(pc.invert(mask))
    lean = rows.filter(mask).drop_columns(["act_mean", "n_active"])
    return {"feature_acts": whole, "feature_acts_single": lean}


def encode_rows(rows: pa.Table, encoding: str) -> pa.Table:
    """The Arrow rows a one-table encoding (lossless, compact) takes."""
    check_encoding(encoding)
    if encoding == "lean":
        raise ValueError("the lean encoding writes two tables: use encode_tables")
    if encoding == "lossless":
        return rows
    q_max, q_mean = encode_compact(
        rows.column("act_max").to_numpy(), rows.column("act_mean").to_numpy()
    )
    keep = [n for n in rows.column_names if n not in ("act_max", "act_mean")]
    out = rows.select(keep)
    return out.append_column("q_max", pa.array(q_max)).append_column("q_mean", pa.array(q_mean))
