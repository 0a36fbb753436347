"""The parallel corpus: `load_files` reads corpus files and loads them in one transaction.

The work is split by job, each module with its own concern:
- `corpus_files`: which paths a load reads, and each file's cells (CSV/TSV/JSONL/Parquet);
- `corpus_columns`: what the columns mean (wide or long layout, language columns, origins);
- `corpus_checks`: the checks against the warehouse before anything is written;
- `corpus_load`: `load_phrases`, the one validated loader every corpus source uses
  (files, Neuronpedia, CLDR, translation): ids, inherited origins, one transaction;
- `languages`: the language catalog; `corpus_stats`: counts per language and group.
This module keeps the public names of all of them importable from one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from xling.ingest.corpus_checks import MAX_TEXT_CHARS
from xling.ingest.corpus_columns import (
    ORIGIN_COLUMN_PAIRS,
    CorpusFormat,
    read_corpus,
    read_corpus_file,
)
from xling.ingest.corpus_files import (
    READ_ERRORS,
    SUPPORTED_SUFFIXES,
    expand_paths,
    first_bad_utf8_line,
    open_bytes,
    read_table,
)
from xling.ingest.corpus_load import LOCATION_COLUMNS, PHRASE_SCHEMA, LoadResult, load_phrases
from xling.ingest.corpus_stats import CorpusStats, corpus_stats
from xling.ingest.languages import LANG_CODE, RESOURCE_GROUPS, add_language, known_languages

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

__all__ = [
    "LANG_CODE",
    "LOCATION_COLUMNS",
    "MAX_TEXT_CHARS",
    "ORIGIN_COLUMN_PAIRS",
    "PHRASE_SCHEMA",
    "READ_ERRORS",
    "RESOURCE_GROUPS",
    "SUPPORTED_SUFFIXES",
    "CorpusFormat",
    "CorpusStats",
    "LoadResult",
    "add_language",
    "corpus_stats",
    "expand_paths",
    "first_bad_utf8_line",
    "known_languages",
    "load_files",
    "load_phrases",
    "open_bytes",
    "read_corpus",
    "read_corpus_file",
    "read_table",
]


def load_files(
    wh: Warehouse, paths: Iterable[str | os.PathLike], fmt: CorpusFormat | None = None
) -> LoadResult:
    """Read corpus files and load them (`xling corpus load`)."""
    fmt = fmt or CorpusFormat()
    notes: list[str] = []
    rows = read_corpus(paths, fmt, known_languages(wh), notes)
    result = load_phrases(wh, rows)
    result.notes.extend(notes)
    return result
