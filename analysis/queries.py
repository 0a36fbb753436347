"""The paper's metrics as DataFrames, read from the SQL views and macros of sql/views/.

Each function validates its arguments against the warehouse (unknown run, layer the run does
not hold, language without phrases, ...) with one-line `XlingError`s, then runs one query
whose user values are all bound parameters. Definitions are in the views' opening comments
and in docs/analysis.md; the treatment of absent feature_acts rows (activation 0) lives in
the SQL, never here.

The default selection mode of a run is decided here and in SQL alike: `origin` when any of
the run's phrases carries an origin feature, else `english-topk` (see activation_scores.sql).
This module resolves it before querying so the other mode's branch is pruned from the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xling.analysis.defaults import (
    DEFAULT_FILTER_RATE,
    DEFAULT_K,
    DEFAULT_TOP_RATE,
    LAPE_KINDS,
    MODES,
    STATS,
)
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


# -- argument checks --------------------------------------------------------------------


def span(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5': a run's layers in an error message."""
    out: list[str] = []
    vals = sorted(set(values))
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(out) if out else "none"


def run_layers(wh: Warehouse, run: int) -> list[int]:
    """The layers `run` holds SAE features for (the view activation_layers)."""
    rows = wh.con.execute(
        "SELECT layer FROM activation_layers WHERE run_id = ? ORDER BY layer", [run]
    ).fetchall()
    return [int(r[0]) for r in rows]


def run_langs(wh: Warehouse, run: int) -> list[str]:
    """Languages with at least one phrase in `run`."""
    rows = wh.con.execute(
        "SELECT DISTINCT p.lang FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "WHERE t.run_id = ? ORDER BY p.lang",
        [run],
    ).fetchall()
    return [r[0] for r in rows]


def _run(wh: Warehouse, run: int | None) -> int:
    run_id = wh.resolve_run(run)
    status = wh.run(run_id)["status"]
    if status != "finished":
        log.warning("run %d is %s; its numbers cover only the phrases it has done", run_id, status)
    return run_id


def _check_layer(wh: Warehouse, run: int, layer: int | None) -> list[int]:
    layers = run_layers(wh, run)
    if not layers:
        raise XlingError(
            f"run {run} has no SAE features; ingest with an SAE (--sae-release/--sae-dir)"
        )
    if layer is not None and layer not in layers:
        raise XlingError(f"layer {layer} is not in run {run}; its layers are {span(layers)}")
    return layers


def _check_lang(wh: Warehouse, run: int, lang: str) -> None:
    langs = run_langs(wh, run)
    if lang not in langs:
        raise XlingError(
            f"run {run} has no phrases in {lang!r}; its languages are {', '.join(langs) or 'none'}"
        )


def _check_score_args(stat: str, k: int) -> None:
    if stat not in STATS:
        raise XlingError(f"unknown stat {stat!r}; use one of {', '.join(STATS)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise XlingError(f"k must be a whole number >= 1, got {k!r}")


def _check_english(wh: Warehouse, run: int, needs: str) -> None:
    """A one-line error when `run` has no English phrase and `needs` one (SPEC §7)."""
    has_english = wh.scalar(
        "SELECT EXISTS (SELECT 1 FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "WHERE t.run_id = ? AND p.lang = 'en')",
        [run],
    )
    if not has_english:
        raise XlingError(f"run {run} has no English phrases, and {needs}")


def resolve_mode(wh: Warehouse, run: int, mode: str | None) -> str:
    """`mode` checked against what `run` can answer, or the run's default mode."""
    if mode is not None and mode not in MODES:
        raise XlingError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    has_origins = bool(
        wh.scalar(
            "SELECT EXISTS (SELECT 1 FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
            "WHERE t.run_id = ? AND p.origin_layer IS NOT NULL AND p.origin_feature IS NOT NULL)",
            [run],
        )
    )
    stored = wh.run(run)["config"].get("features", "all")
    if mode is None:
        mode = "origin" if has_origins else "english-topk"
    if mode == "origin" and not has_origins:
        raise XlingError(
            f"no phrase of run {run} carries an origin feature; use --mode english-topk"
        )
    if mode == "english-topk":
        _check_english(
            wh,
            run,
            "english-topk ranks each group's features on its English phrase; load English text, "
            "or use --mode origin with phrases that carry origin features",
        )
    if mode == "english-topk" and stored == "origin":
        raise XlingError(
            f"run {run} stored only its phrases' origin features (--features origin); "
            "use --mode origin"
        )
    if stored not in ("all", None):
        log.warning(
            "run %d stored only some feature rows (--features %s); rows it dropped count as 0",
            run,
            stored,
        )
    return mode


def _no_origin_rows(wh: Warehouse, run: int, layer: int) -> XlingError:
    rows = wh.con.execute(
        "SELECT DISTINCT p.origin_layer FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "WHERE t.run_id = ? AND p.origin_layer IS NOT NULL ORDER BY 1",
        [run],
    ).fetchall()
    return XlingError(
        f"no phrase of run {run} has an origin feature at layer {layer} (origins are at layers "
        f"{span([r[0] for r in rows])}); pick one of those or use --mode english-topk"
    )


def _filters(**conds: Any) -> tuple[str, list[Any]]:
    """' WHERE a = ? AND b = ?' for the conditions whose value is not None."""
    names = [name for name, value in conds.items() if value is not None]
    if not names:
        return "", []
    return " WHERE " + " AND ".join(f"{n} = ?" for n in names), [conds[n] for n in names]


def _scored(
    wh: Warehouse,
    macro: str,
    run: int | None,
    layer: int | None,
    mode: str | None,
    stat: str,
    k: int,
    order: str,
) -> pd.DataFrame:
    """Rows of one score macro (`macro`: a constant of this module) for a run, at `layer`.

    The run and layer go in as the macros' at_run/at_layer arguments: constants that reach
    every scan of feature_acts, subqueries included, which a WHERE on the result would not.
    """
    _check_score_args(stat, k)
    run_id = _run(wh, run)
    _check_layer(wh, run_id, layer)
    mode = resolve_mode(wh, run_id, mode)
    df = wh.sql(
        f"SELECT * FROM {macro}(mode := ?, stat := ?, k := ?, at_run := ?, at_layer := ?) "
        f"WHERE run_id = ? ORDER BY {order}",
        [mode, stat, k, run_id, layer, run_id],
    )
    if df.empty and mode == "origin" and layer is not None:
        raise _no_origin_rows(wh, run_id, layer)
    return df


_VS_ENGLISH = "the gap against English needs A(L, en); load English text into the corpus"
_GAP = "gap_by_layer"
_BY_LANG = "gap_by_lang"
_SUMMARY = "gap_by_lang_summary"
_SCORES = "activation_scores"


# -- activation scores and gaps ----------------------------------------------------------


def scores(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """A(L, l) per layer and language: run_id, layer, lang, resource_group, mode, score,
    n_units, n_phrases."""
    return _scored(wh, _SCORES, run, layer, mode, stat, k, "layer, lang")


def gap(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """The high/low resource gap per layer: run_id, layer, mode, high_score, low_score,
    gap_pct = 100·(H − W)/H, n_high, n_low."""
    return _scored(wh, _GAP, run, layer, mode, stat, k, "layer")


def gap_by_lang(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """Each language against English per layer: run_id, layer, lang, resource_group, mode,
    score (A(L, l)), n_phrases, en_score (A(L, en)), gap_vs_en_pct."""
    _check_english(wh, wh.resolve_run(run), _VS_ENGLISH)
    return _scored(wh, _BY_LANG, run, layer, mode, stat, k, "layer, lang")


def languages(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """One row per language but English: its gap against English across the run's layers
    (or at `layer`) — the paper's Appendix D table — with name, resource group, phrases.

    std_gap_pct is the sample standard deviation (n − 1); NaN over a single layer.
    """
    _check_english(wh, wh.resolve_run(run), _VS_ENGLISH)
    df = _scored(wh, _SUMMARY, run, layer, mode, stat, k, "lang")
    names = wh.sql(
        "SELECT p.lang, any_value(l.name) AS name, count(*) AS n_phrases "
        "FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "LEFT JOIN languages l USING (lang) WHERE t.run_id = ? GROUP BY p.lang",
        [int(df["run_id"].iloc[0]) if not df.empty else wh.resolve_run(run)],
    )
    df = df.merge(names, on="lang", how="left")
    cols = [
        "run_id",
        "lang",
        "name",
        "resource_group",
        "n_phrases",
        "mode",
        "n_layers",
        "mean_score",
        "mean_gap_pct",
        "std_gap_pct",
        "min_gap_pct",
        "max_gap_pct",
    ]
    order = {"high": 0, "low": 1}
    df = df.assign(_g=df["resource_group"].map(order).fillna(2)).sort_values(["_g", "lang"])
    return df[cols].reset_index(drop=True)


# -- residual similarity -----------------------------------------------------------------


def _residual_run(wh: Warehouse, run: int | None, layer: int | None) -> int:
    run_id = _run(wh, run)
    layers = [
        int(r[0])
        for r in wh.con.execute(
            "SELECT DISTINCT layer FROM residuals WHERE run_id = ? ORDER BY layer", [run_id]
        ).fetchall()
    ]
    if not layers:
        raise XlingError(f"run {run_id} has no residuals; ingest with --residuals")
    if layer is not None and layer not in layers:
        raise XlingError(
            f"layer {layer} has no residuals in run {run_id}; its residual layers are "
            f"{span(layers)}"
        )
    return run_id


def similarity(wh: Warehouse, run: int | None = None, layer: int | None = None) -> pd.DataFrame:
    """Mean cosine of each language's residuals to English's per layer: run_id, layer, lang,
    resource_group, similarity, n_groups."""
    run_id = _residual_run(wh, run, layer)
    _check_english(wh, run_id, "similarity to English needs them; try --matrix for all pairs")
    where, params = _filters(run_id=run_id, layer=layer)
    return wh.sql(f"SELECT * FROM similarity_by_layer{where} ORDER BY layer, lang", params)


def similarity_matrix(
    wh: Warehouse, run: int | None = None, layer: int | None = None, *, wide: bool = False
) -> pd.DataFrame:
    """Pairwise language similarity per layer: long (run_id, layer, lang_a, lang_b,
    similarity, n_groups), or `wide`: one row per (layer, lang_a), one column per lang_b."""
    run_id = _residual_run(wh, run, layer)
    where, params = _filters(run_id=run_id, layer=layer)
    df = wh.sql(f"SELECT * FROM similarity_matrix{where} ORDER BY layer, lang_a, lang_b", params)
    if not wide:
        return df
    out = df.pivot(index=["layer", "lang_a"], columns="lang_b", values="similarity")
    out.columns.name = None
    return out.reset_index().rename(columns={"lang_a": "lang"})


# -- LAPE ----------------------------------------------------------------------------------


def lape(
    wh: Warehouse,
    kind: str = "features",
    lang: str | None = None,
    top_rate: float = DEFAULT_TOP_RATE,
    filter_rate: float = DEFAULT_FILTER_RATE,
    run: int | None = None,
    layer: int | None = None,
) -> pd.DataFrame:
    """Language-specific SAE features or MLP neurons by LAPE (see lape_selected.sql).

    One row per (unit, language it belongs to): run_id, layer, feature|neuron, lang, p,
    entropy, bar. The selection runs over all the run's layers; `layer` and `lang` only
    filter its result.
    """
    if kind not in LAPE_KINDS:
        raise XlingError(f"unknown LAPE kind {kind!r}; use features or neurons")
    if (
        isinstance(top_rate, bool)
        or not isinstance(top_rate, int | float)
        or not (0 < top_rate <= 1)
    ):
        raise XlingError(f"--top-rate must be in (0, 1], got {top_rate!r}; LAPE uses 0.01-0.05")
    if (
        isinstance(filter_rate, bool)
        or not isinstance(filter_rate, int | float)
        or not (0 < filter_rate < 1)
    ):
        raise XlingError(f"filter_rate must be in (0, 1), got {filter_rate!r}; LAPE uses 0.95")
    run_id = _run(wh, run)
    if kind == "neurons":
        if not wh.scalar("SELECT EXISTS (SELECT 1 FROM neuron_stats WHERE run_id = ?)", [run_id]):
            raise XlingError(f"run {run_id} has no neuron stats; ingest with --neurons")
        layers = [
            int(r[0])
            for r in wh.con.execute(
                "SELECT DISTINCT layer FROM neuron_stats WHERE run_id = ? ORDER BY layer", [run_id]
            ).fetchall()
        ]
        if layer is not None and layer not in layers:
            raise XlingError(
                f"layer {layer} has no neuron stats in run {run_id}; its layers are {span(layers)}"
            )
        langs = [
            r[0]
            for r in wh.con.execute(
                "SELECT DISTINCT lang FROM neuron_stats WHERE run_id = ? ORDER BY lang", [run_id]
            ).fetchall()
        ]
        if lang is not None and lang not in langs:
            raise XlingError(
                f"run {run_id} has no neuron stats for {lang!r}; it has {', '.join(langs)}"
            )
    else:
        _check_layer(wh, run_id, layer)
        if lang is not None:
            _check_lang(wh, run_id, lang)
    where, params = _filters(run_id=run_id, kind=kind, layer=layer, lang=lang)
    df = wh.sql(
        f"SELECT run_id, layer, unit, lang, p, entropy, bar "
        f"FROM lape_selected(top_rate := ?, filter_rate := ?){where} "
        "ORDER BY lang, layer, unit",
        [float(top_rate), float(filter_rate), *params],
    )
    return df.rename(columns={"unit": kind.removesuffix("s")})


# -- fine-tune effect ----------------------------------------------------------------------


def compare(
    wh: Warehouse,
    base: int,
    tuned: int,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """A tuned run against its base over the same phrases, per layer and language:
    base_score, tuned_score, improvement_pct, en_retention_pct, en_cosine, n_en_phrases."""
    _check_score_args(stat, k)
    base, tuned = _run(wh, base), _run(wh, tuned)
    if base == tuned:
        raise XlingError(f"--base and --tuned are both run {base}; compare two different runs")
    differ = wh.scalar(
        "WITH a AS (SELECT phrase_id FROM phrase_tokens WHERE run_id = ?), "
        "b AS (SELECT phrase_id FROM phrase_tokens WHERE run_id = ?) "
        "SELECT count(*) FROM ((FROM a EXCEPT FROM b) UNION ALL (FROM b EXCEPT FROM a))",
        [base, tuned],
    )
    if differ:
        raise XlingError(
            f"runs {base} and {tuned} pooled different phrases ({differ} in one only); "
            "compare needs two runs over the same corpus"
        )
    shared = sorted(set(_check_layer(wh, base, None)) & set(_check_layer(wh, tuned, None)))
    if not shared:
        raise XlingError(f"runs {base} and {tuned} share no layer")
    if layer is not None and layer not in shared:
        raise XlingError(
            f"layer {layer} is not in both runs {base} and {tuned}; their shared layers are "
            f"{span(shared)}"
        )
    mode = resolve_mode(wh, base, mode)
    resolve_mode(wh, tuned, mode)
    df = wh.sql(
        "SELECT * FROM compare_runs(?, ?, mode := ?, stat := ?, k := ?, at_layer := ?) "
        "ORDER BY layer, lang",
        [base, tuned, mode, stat, k, layer],
    )
    return df.drop(columns=["base_run", "tuned_run"])


# -- features of a language ----------------------------------------------------------------


def features(
    wh: Warehouse,
    lang: str,
    layer: int,
    run: int | None = None,
    *,
    under: bool = False,
    limit: int = 20,
    stat: str = "max",
) -> pd.DataFrame:
    """The SAE features of `lang` at `layer` against English (see language_features.sql).

    Default: the most language-specific (highest lang_share, then lang_fire_rate). `under`:
    the most under-activated against English (largest deficit = en_mean − lang_mean).
    """
    _check_score_args(stat, DEFAULT_K)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise XlingError(f"--limit must be a whole number >= 1, got {limit!r}")
    run_id = _run(wh, run)
    _check_layer(wh, run_id, layer)
    _check_lang(wh, run_id, lang)
    order = "deficit DESC, feature" if under else "lang_share DESC, lang_fire_rate DESC, feature"
    return wh.sql(
        "SELECT * FROM language_features(?, stat := ?) WHERE run_id = ? AND layer = ? "
        f"AND {'deficit > 0' if under else 'lang_mean > 0'} ORDER BY {order} LIMIT ?",
        [lang, stat, run_id, layer, limit],
    )


# -- benchmarks ------------------------------------------------------------------------

_VS_BENCHMARK = "gap_vs_benchmark"


def gap_vs_benchmark(
    wh: Warehouse,
    task: str,
    metric: str,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """The view gap_vs_benchmark for one task and metric: run_id, layer, lang,
    resource_group, act_score (A(L, l)), gap_vs_en_pct, task, metric, bench_value, ...; one
    row per (layer, lang) with a score of the run's model under the run's steering."""
    _check_english(wh, wh.resolve_run(run), _VS_ENGLISH)
    df = _scored(wh, _VS_BENCHMARK, run, layer, mode, stat, k, "layer, lang")
    return df[(df["task"] == task) & (df["metric"] == metric)].reset_index(drop=True)
