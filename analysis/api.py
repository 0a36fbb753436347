"""Analysis methods of `Warehouse` (each returns a DataFrame; the CLI renders them).

    wh = Warehouse("xling.duckdb", read_only=True)
    wh.gap(layer=0)                      # high vs low resource gap, latest finished run
    wh.gap_by_lang(run=3, mode="english-topk", k=32)
    wh.language_summary()                # the paper's Appendix D table
    wh.similarity(layer=12); wh.similarity_matrix(layer=12, wide=True)
    wh.lape(kind="neurons", lang="hi")
    wh.compare(base=1, tuned=2, layer=20)
    wh.features("hi", layer=3, under=True)

Definitions: docs/analysis.md and the opening comments of sql/views/*.sql.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xling.analysis.defaults import DEFAULT_FILTER_RATE, DEFAULT_K, DEFAULT_TOP_RATE

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse


class AnalysisMixin:
    """Mixed into `xling.warehouse.Warehouse`; methods call `xling.analysis.queries`."""

    def scores(
        self: Warehouse,
        run: int | None = None,
        layer: int | None = None,
        mode: str | None = None,
        stat: str = "max",
        k: int = DEFAULT_K,
    ) -> pd.DataFrame:
        """A(L, l) per layer and language (see queries.scores)."""
        from xling.analysis import queries

        return queries.scores(self, run, layer, mode, stat, k)

    def gap(
        self: Warehouse,
        run: int | None = None,
        layer: int | None = None,
        mode: str | None = None,
        stat: str = "max",
        k: int = DEFAULT_K,
    ) -> pd.DataFrame:
        """High vs low resource gap per layer (see queries.gap)."""
        from xling.analysis import queries

        return queries.gap(self, run, layer, mode, stat, k)

    def gap_by_lang(
        self: Warehouse,
        run: int | None = None,
        layer: int | None = None,
        mode: str | None = None,
        stat: str = "max",
        k: int = DEFAULT_K,
    ) -> pd.DataFrame:
        """Each language against English per layer (see queries.gap_by_lang)."""
        from xling.analysis import queries

        return queries.gap_by_lang(self, run, layer, mode, stat, k)

    def language_summary(
        self: Warehouse,
        run: int | None = None,
        layer: int | None = None,
        mode: str | None = None,
        stat: str = "max",
        k: int = DEFAULT_K,
    ) -> pd.DataFrame:
        """Per-language gap against English across layers (see queries.languages; named
        apart from `Warehouse.languages`, the language catalog)."""
        from xling.analysis import queries

        return queries.languages(self, run, layer, mode, stat, k)

    def similarity(
        self: Warehouse, run: int | None = None, layer: int | None = None
    ) -> pd.DataFrame:
        """Residual similarity of each language to English per layer."""
        from xling.analysis import queries

        return queries.similarity(self, run, layer)

    def similarity_matrix(
        self: Warehouse, run: int | None = None, layer: int | None = None, *, wide: bool = False
    ) -> pd.DataFrame:
        """Pairwise language residual similarity per layer."""
        from xling.analysis import queries

        return queries.similarity_matrix(self, run, layer, wide=wide)

    def lape(
        self: Warehouse,
        kind: str = "features",
        lang: str | None = None,
        top_rate: float = DEFAULT_TOP_RATE,
        filter_rate: float = DEFAULT_FILTER_RATE,
        run: int | None = None,
        layer: int | None = None,
    ) -> pd.DataFrame:
        """Language-specific SAE features or MLP neurons by LAPE."""
        from xling.analysis import queries

        return queries.lape(self, kind, lang, top_rate, filter_rate, run, layer)

    def compare(
        self: Warehouse,
        base: int,
        tuned: int,
        layer: int | None = None,
        mode: str | None = None,
        stat: str = "max",
        k: int = DEFAULT_K,
    ) -> pd.DataFrame:
        """A tuned run against its base run, per layer and language."""
        from xling.analysis import queries

        return queries.compare(self, base, tuned, layer, mode, stat, k)

    def features(
        self: Warehouse,
        lang: str,
        layer: int,
        run: int | None = None,
        *,
        under: bool = False,
        limit: int = 20,
        stat: str = "max",
    ) -> pd.DataFrame:
        """The most language-specific (or, `under`, most under-activated) features."""
        from xling.analysis import queries

        return queries.features(self, lang, layer, run, under=under, limit=limit, stat=stat)

    def correlate(
        self: Warehouse, task: str, layer: int | None = None, **kwargs: object
    ) -> pd.DataFrame:
        """Pearson r and Spearman ρ across languages between the gap (or A) and a benchmark."""
        from xling.analysis.correlate import correlate

        return correlate(self, task, layer=layer, **kwargs)
