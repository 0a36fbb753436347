"""Summaries of feature_acts kept by the warehouse, so metric queries skip the raw rows.

    update_summaries(con, run_id, phrase_ids)   in each chunk's transaction, after its rows
    finish_summaries(con, run_id)               in the finishing transaction
    rebuild_summaries(con, run_id)              a run from before summaries, from its raw rows
    has_summaries(con, run_id, k)               whether the summary macros can answer

Tables (migration 008), per run:
- `summary_origin`: per origin layer, language and origin feature, the language's phrases'
  activations at their group's origin (absent rows add 0) and their count; per chunk.
- `summary_topk`: each group's English top-k_max features per layer and statistic (ties by
  lower feature id); per chunk, from the chunk's English phrases.
- `summary_topk_hits`: per layer, language, statistic and rank r, the summed activation of the
  language's phrases at their group's rank-r English feature and the number of such pairs;
  per chunk. A pair (a phrase, its group's English phrase) is counted by the chunk that
  commits the later of the two, which reads the earlier one's rows by phrase id.
- `summary_feature_lang`: per layer, language and feature, sums of act_max, act_mean, active
  phrases and tokens; at finish, in one pass over the run's rows (per-chunk partials would be
  nearly as many rows as the chunks: a chunk rarely repeats a (layer, language, feature)).

Per-chunk numbers are sums over phrases, so a chunk appends partial rows that readers sum: a
chunk that rolls back takes its partials with it, and a resumed run adds exactly the missing
phrases'. Partials are folded to one row per key when they outnumber the folded rows, and at
finish, so each is folded O(1) times on average: the upkeep grows with the run's rows.

sql/views/activation_scores_summary.sql and feature_lang_stats_summary.sql read these tables
and give the numbers of activation_scores and feature_lang_stats.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

K_MAX = 16  # top-k summaries answer k <= this (the views' default k)
_ADDITIVE = {
    "summary_origin": (
        "layer, lang, feature",
        "sum(s_max) AS s_max, sum(s_mean) AS s_mean, sum(n_targets) AS n_targets",
    ),
    "summary_topk_hits": (
        "layer, lang, stat, rank",
        "sum(act_sum) AS act_sum, sum(n_units) AS n_units",
    ),
}
_MIN_FOLD = 100_000  # partial rows below this are never worth a fold
_counter = itertools.count()


def has_summaries(con: duckdb.DuckDBPyConnection, run_id: int, k: int = K_MAX) -> bool:
    """True when run `run_id`'s summaries are complete (finished) and hold top-k for `k`."""
    row = con.execute(
        "SELECT k_max, finished FROM summary_runs WHERE run_id = ?", [run_id]
    ).fetchone()
    return row is not None and bool(row[1]) and k <= row[0]


def update_summaries(
    con: duckdb.DuckDBPyConnection, run_id: int, phrase_ids: Sequence[int] | np.ndarray
) -> int:
    """Add the summaries of phrases `phrase_ids`, whose rows and phrase_tokens rows for run
    `run_id` are already written (in the caller's transaction). Returns partial rows added."""
    ids = pa.table({"phrase_id": pa.array(np.asarray(phrase_ids, np.int64))})
    if ids.num_rows == 0:
        return 0
    con.execute("INSERT OR IGNORE INTO summary_runs VALUES (?, ?, 0, 0, false)", [run_id, K_MAX])
    k_max = con.execute("SELECT k_max FROM summary_runs WHERE run_id = ?", [run_id]).fetchone()[0]
    con.complete()
    name = f"_xling_chunk_ids_{next(_counter)}"
    con.register(name, ids)
    # On an error the caller's transaction rolls back, temp tables included.
    ends = (int(ids.column(0).to_numpy().min()), int(ids.column(0).to_numpy().max()))
    added = _update(con, run_id, name, int(k_max), ends)
    con.unregister(name)
    for t in ("_xs_chunk", "_xs_rows", "_xs_group_phrases", "_xs_pairs", "_xs_pair_rows"):
        con.execute(f"DROP TABLE {t}")
    partial, folded = con.execute(
        "UPDATE summary_runs SET partial_rows = partial_rows + ? WHERE run_id = ? "
        "RETURNING partial_rows, folded_rows",
        [added, run_id],
    ).fetchone()
    if partial > max(folded, _MIN_FOLD):
        fold_summaries(con, run_id)
    return added


def _update(
    con: duckdb.DuckDBPyConnection, run_id: int, ids: str, k_max: int, ends: tuple[int, int]
) -> int:
    p = {"run": run_id, "k": k_max, "lo": ends[0], "hi": ends[1]}
    con.execute(
        f"CREATE TEMP TABLE _xs_chunk AS SELECT p.phrase_id, p.group_id, p.lang "
        f"FROM phrases p WHERE p.phrase_id IN (SELECT phrase_id FROM {ids})"
    )
    # The chunk's rows at the run's layers (the views score only those).
    _sql(
        con,
        """
        CREATE TEMP TABLE _xs_rows AS
        SELECT f.phrase_id, f.layer, f.feature, f.act_max, f.act_mean, f.n_active,
               c.lang, c.group_id
        FROM feature_values f JOIN _xs_chunk c USING (phrase_id)
        WHERE f.run_id = $run AND f.phrase_id BETWEEN $lo AND $hi
          AND f.layer IN (SELECT layer FROM activation_layers WHERE run_id = $run)
        """,
        p,
    )
    added = 0
    # Origins: a group's origin is its English phrase's, else its lowest phrase id's, as in
    # activation_scores; every phrase of the chunk at its group's origin, absent rows as 0.
    added += _rows(
        con,
        """
        INSERT INTO summary_origin
        WITH origins AS (
            SELECT group_id, o.layer::SMALLINT AS layer, o.feature::INTEGER AS feature
            FROM (
                SELECT group_id,
                       arg_min({'layer': origin_layer, 'feature': origin_feature},
                               (lang <> 'en', phrase_id)) AS o
                FROM phrases
                WHERE origin_layer IS NOT NULL AND origin_feature IS NOT NULL
                  AND group_id IN (SELECT group_id FROM _xs_chunk)
                GROUP BY group_id
            )
        )
        SELECT $run, o.layer, c.lang, o.feature, coalesce(sum(r.act_max), 0),
               coalesce(sum(r.act_mean), 0), count(*)
        FROM _xs_chunk c
        JOIN origins o USING (group_id)
        JOIN (SELECT layer FROM activation_layers WHERE run_id = $run) l USING (layer)
        LEFT JOIN _xs_rows r
               ON r.phrase_id = c.phrase_id AND r.layer = o.layer AND r.feature = o.feature
        GROUP BY ALL
        """,
        p,
    )
    # The chunk's English phrases' top-k per layer and statistic: max_by keeps the k largest
    # keys in order, the key ranking by act, then by lower feature id.
    _sql(
        con,
        """
        INSERT INTO summary_topk
        SELECT $run, layer, group_id, stat, generate_subscripts(top, 1) AS rank, unnest(top)
        FROM (
            SELECT layer, group_id, 'max' AS stat,
                   max_by(feature, {'act': act_max, 'feature': -feature}, $k) AS top
            FROM _xs_rows WHERE lang = 'en' GROUP BY layer, group_id
            UNION ALL
            SELECT layer, group_id, 'mean',
                   max_by(feature, {'act': act_mean, 'feature': -feature}, $k)
            FROM _xs_rows WHERE lang = 'en' GROUP BY layer, group_id
        )
        """,
        p,
    )
    # Pairs counted now: both phrases committed, and one of them in this chunk.
    _sql(
        con,
        """
        CREATE TEMP TABLE _xs_group_phrases AS
        SELECT t.phrase_id, p.group_id, p.lang
        FROM phrase_tokens t JOIN phrases p USING (phrase_id)
        WHERE t.run_id = $run AND p.group_id IN (SELECT group_id FROM _xs_chunk)
        """,
        p,
    )
    _sql(
        con,
        """
        CREATE TEMP TABLE _xs_pairs AS
        SELECT g.phrase_id, g.group_id, g.lang, g.phrase_id IN (SELECT phrase_id FROM _xs_chunk)
                   AS in_chunk
        FROM _xs_group_phrases g
        JOIN _xs_group_phrases e ON e.group_id = g.group_id AND e.lang = 'en'
        WHERE g.phrase_id IN (SELECT phrase_id FROM _xs_chunk)
           OR e.phrase_id IN (SELECT phrase_id FROM _xs_chunk)
        """,
        p,
    )
    # Rows of the pairs' phrases: this chunk's from _xs_rows, earlier ones' by phrase id
    # (the constant id range lets the zone maps skip the other row groups; no scan at all
    # when every pair's phrases are in this chunk).
    con.execute(
        "CREATE TEMP TABLE _xs_pair_rows AS "
        "SELECT phrase_id, layer, feature, act_max, act_mean FROM _xs_rows"
    )
    lo, hi = con.execute(
        "SELECT min(phrase_id), max(phrase_id) FROM _xs_pairs WHERE NOT in_chunk"
    ).fetchone()
    if lo is not None:
        _sql(
            con,
            """
            INSERT INTO _xs_pair_rows
            SELECT f.phrase_id, f.layer, f.feature, f.act_max, f.act_mean
            FROM feature_values f
            WHERE f.run_id = $run AND f.phrase_id BETWEEN $old_lo AND $old_hi
              AND f.phrase_id IN (SELECT phrase_id FROM _xs_pairs WHERE NOT in_chunk)
            """,
            {**p, "old_lo": lo, "old_hi": hi},
        )
    added += _rows(
        con,
        """
        INSERT INTO summary_topk_hits
        SELECT $run, t.layer, q.lang, t.stat, t.rank,
               coalesce(sum(CASE t.stat WHEN 'max' THEN r.act_max ELSE r.act_mean END), 0),
               count(*)
        FROM _xs_pairs q
        JOIN summary_topk t ON t.run_id = $run AND t.group_id = q.group_id
        LEFT JOIN _xs_pair_rows r
               ON r.phrase_id = q.phrase_id AND r.layer = t.layer AND r.feature = t.feature
        GROUP BY ALL
        """,
        p,
    )
    return added


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> duckdb.DuckDBPyConnection:
    """Execute with the named parameters `sql` uses (DuckDB refuses unused ones)."""
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> int:
    return int(_sql(con, sql, params).fetchone()[0])


def fold_summaries(con: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """Fold run `run_id`'s partial summary rows to one per key; returns the rows kept."""
    kept = 0
    for table, (keys, sums) in _ADDITIVE.items():
        con.execute(
            f"CREATE TEMP TABLE _xs_fold AS SELECT run_id, {keys}, {sums} FROM {table} "
            f"WHERE run_id = ? GROUP BY run_id, {keys}",
            [run_id],
        )
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        kept += _rows(con, f"INSERT INTO {table} BY NAME SELECT * FROM _xs_fold", {})
        con.execute("DROP TABLE _xs_fold")
    con.execute(
        "UPDATE summary_runs SET partial_rows = 0, folded_rows = ? WHERE run_id = ?",
        [kept, run_id],
    )
    return kept


def finish_summaries(con: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """At run finish, in its transaction: fold the partials (rows kept; 0 without any)."""
    if con.execute("SELECT 1 FROM summary_runs WHERE run_id = ?", [run_id]).fetchone() is None:
        return 0
    con.execute("DELETE FROM summary_feature_lang WHERE run_id = ?", [run_id])
    # Per-chunk partials of these sums would be nearly as many rows as the chunk itself (a
    # chunk rarely repeats a (layer, language, feature)); one pass over the run is cheaper.
    _sql(
        con,
        """
        INSERT INTO summary_feature_lang
        SELECT $run, f.layer, p.lang, f.feature, sum(f.act_max), sum(f.act_mean), count(*),
               sum(f.n_active)
        FROM feature_values f JOIN phrases p USING (phrase_id)
        WHERE f.run_id = $run
          AND f.layer IN (SELECT layer FROM activation_layers WHERE run_id = $run)
        GROUP BY ALL
        """,
        {"run": run_id},
    )
    kept = fold_summaries(con, run_id)
    con.execute("UPDATE summary_runs SET finished = true WHERE run_id = ?", [run_id])
    log.info("run %d: summaries folded to %d rows", run_id, kept)
    return kept


def rebuild_summaries(con: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """Drop and recompute run `run_id`'s summaries from its raw rows (caller's transaction)."""
    for table in (*_ADDITIVE, "summary_feature_lang", "summary_topk", "summary_runs"):
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    ids = [
        r[0]
        for r in con.execute(
            "SELECT phrase_id FROM phrase_tokens WHERE run_id = ? ORDER BY phrase_id", [run_id]
        ).fetchall()
    ]
    update_summaries(con, run_id, ids)
    return finish_summaries(con, run_id)
