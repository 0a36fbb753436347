"""Analysis over the warehouse's SQL views: queries, statistics, exports and figures.

The metrics are functions that take a `Warehouse` and return a DataFrame (the CLI renders
them); each validates its arguments with one-line `XlingError`s and reads one view:

    from xling import analysis
    from xling.warehouse import Warehouse

    wh = Warehouse("xling.duckdb", read_only=True)
    analysis.gap(wh, layer=0)            # high vs low resource gap, latest finished run
    analysis.gap_by_lang(wh, run=3, mode="english-topk", k=32)
    analysis.language_summary(wh)        # the paper's Appendix D table
    analysis.similarity(wh, layer=12); analysis.similarity_matrix(wh, layer=12, wide=True)
    analysis.lape(wh, kind="neurons", lang="hi")
    analysis.compare(wh, base=1, tuned=2, layer=20)
    analysis.features(wh, "hi", layer=3, under=True)
    analysis.correlate(wh, "arc", layer=0)

Definitions: docs/analysis.md and the opening comments of sql/views/*.sql. The modules
(`queries`, `correlation`, `export`, `plots`, `benchmarks`, `bpb`, `lmeval_run`) hold the rest.
"""

from xling.analysis.correlation import correlate
from xling.analysis.queries import (
    compare,
    features,
    gap,
    gap_by_lang,
    lape,
    scores,
    similarity,
    similarity_matrix,
)

# Named apart from `Warehouse.languages()`, the language catalog.
from xling.analysis.queries import languages as language_summary

__all__ = [
    "compare",
    "correlate",
    "features",
    "gap",
    "gap_by_lang",
    "language_summary",
    "lape",
    "scores",
    "similarity",
    "similarity_matrix",
]
