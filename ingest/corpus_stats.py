"""Corpus statistics: phrases per language and how complete the aligned groups are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse


@dataclass
class CorpusStats:
    """Per-language counts and group completeness of the corpus."""

    by_lang: pd.DataFrame
    """One row per language of the languages table: lang, name, resource_group, phrases,
    groups_pct (share of all groups holding the language)."""
    phrases: int
    groups: int
    complete: int
    """Groups holding every language that occurs in the corpus."""
    with_english: int
    corpus_langs: int


def corpus_stats(wh: Warehouse) -> CorpusStats:
    """Counts per language (every language of the catalog) and over the groups."""
    by_lang = wh.sql(
        """
        SELECT l.lang, l.name, l.resource_group, count(p.phrase_id) AS phrases,
               100.0 * count(p.phrase_id)
                   / nullif((SELECT count(DISTINCT group_id) FROM phrases), 0) AS groups_pct
        FROM languages l LEFT JOIN phrases p USING (lang)
        GROUP BY ALL ORDER BY l.resource_group, phrases DESC, l.lang
        """
    )
    (row,) = wh.con.execute(
        """
        WITH g AS (
            SELECT group_id, count(*) AS n, bool_or(lang = 'en') AS has_en
            FROM phrases GROUP BY group_id
        )
        SELECT (SELECT count(*) FROM phrases),
               count(*),
               count(*) FILTER (WHERE n = (SELECT count(DISTINCT lang) FROM phrases)),
               count(*) FILTER (WHERE has_en),
               (SELECT count(DISTINCT lang) FROM phrases)
        FROM g
        """
    ).fetchall()
    phrases, groups, complete, with_en, n_langs = (int(v or 0) for v in row)
    return CorpusStats(by_lang, phrases, groups, complete, with_en, n_langs)
