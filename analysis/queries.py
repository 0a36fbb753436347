"""The paper's metrics as DataFrames, read from the SQL views and macros of sql/views/.

Each function validates its arguments against the warehouse (unknown run, layer the run does
not hold, language without phrases, ...) with one-line `XlingError`s, then runs one query
whose user values are all bound parameters. Definitions are in the views' opening comments
and in docs/analysis.md; the treatment of absent feature_acts rows (activation 0) lives in
the SQL, never here.

The default selection mode of a run is the view run_modes' (`origin` when any of the run's
phrases carries an origin feature, else `english-topk`), which activation_group_scores reads
too; this module reads it before querying so the other mode's branch is pruned from the plan.

With `ci=True` the group-averaged metrics gain `*_lo`/`*_hi` columns: a 95 % percentile
bootstrap over aligned groups (xling.analysis.stats), computed from the per-group terms of
activation_group_scores (residual similarity: xling.analysis.similarity).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xling.analysis.defaults import (
    DEFAULT_FILTER_RATE,
    DEFAULT_K,
    DEFAULT_TOP_RATE,
    LAPE_KINDS,
    MODES,
    STATS,
)
from xling.analysis.stats import DEFAULT_N_BOOT, DEFAULT_SEED
from xling.warehouse.errors import XlingError
from xling.warehouse.summaries import has_summaries

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


def resolve_mode(wh: Warehouse, run: int, mode: str | None, ref: str = "en") -> str:
    """`mode` checked against what `run` can answer, or the run's default mode (the view
    run_modes, which activation_group_scores reads too)."""
    if mode is not None and mode not in MODES:
        raise XlingError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    rows = wh.con.execute(
        "SELECT has_origin, default_mode FROM run_modes WHERE run_id = ?", [run]
    ).fetchall()
    has_origins, default = (bool(rows[0][0]), rows[0][1]) if rows else (False, "english-topk")
    stored = wh.run(run)["config"].get("features", "all")
    if mode is None:
        mode = default
    if mode == "origin" and not has_origins:
        raise XlingError(
            f"no phrase of run {run} carries an origin feature; use --mode english-topk "
            "or group-topk"
        )
    if mode == "english-topk":
        if ref == "en":
            _check_english(
                wh,
                run,
                "english-topk ranks each group's features on its English phrase; load English "
                "text, pick another --ref, or use --mode group-topk",
            )
        else:
            _check_lang(wh, run, ref)
    if mode != "origin" and stored == "origin":
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


@dataclass(frozen=True)
class Selection:
    """How A(L, l) is computed and compared: the arguments every score macro takes."""

    run: int
    layer: int | None
    mode: str
    stat: str
    k: int
    ref: str
    from_summaries: bool = False  # the run's summaries can answer (see _selection)

    def args(self) -> tuple[str, list[Any]]:
        """The macro arguments as SQL text and bound parameters."""
        return (
            "mode := ?, stat := ?, k := ?, ref := ?, at_run := ?, at_layer := ?",
            [self.mode, self.stat, self.k, self.ref, self.run, self.layer],
        )


_SUMMARY_MODES = ("origin", "english-topk")  # what activation_scores_summary computes


def _selection(
    wh: Warehouse,
    run: int | None,
    layer: int | None,
    mode: str | None,
    stat: str,
    k: int,
    ref: str,
    *,
    vs_ref: bool = False,
) -> Selection:
    """Arguments checked against the warehouse, the run resolved and its mode decided.

    `vs_ref`: a table against the reference, which needs the run to hold English when English
    is the reference (any other reference is checked to be in the run either way)."""
    if vs_ref and ref == "en":
        _check_english(wh, wh.resolve_run(run), _VS_ENGLISH)
    _check_score_args(stat, k)
    run_id = _run(wh, run)
    _check_layer(wh, run_id, layer)
    if not isinstance(ref, str) or not ref:
        raise XlingError(f"--ref must be a language code, got {ref!r}")
    if ref != "en":  # English is checked where a metric needs it (SPEC §7's message)
        _check_lang(wh, run_id, ref)
    sel_mode = resolve_mode(wh, run_id, mode, ref)
    # The summaries hold origin and English top-k (k <= their k_max) of finished runs.
    from_summaries = ref == "en" and sel_mode in _SUMMARY_MODES and has_summaries(wh.con, run_id, k)
    return Selection(run_id, layer, sel_mode, stat, k, ref, from_summaries)


def _scored(
    wh: Warehouse, macro: str, sel: Selection, order: str, extra: str = "", extra_params=()
) -> pd.DataFrame:
    """Rows of one score macro (`macro`: a constant of this module) for a selection.

    The run and layer go in as the macros' at_run/at_layer arguments: constants that reach
    every scan of feature_acts, subqueries included, which a WHERE on the result would not.
    """
    args, params = sel.args()
    if macro in _FROM_SUMMARIES:
        # SQL text, not a parameter: a constant lets DuckDB drop the branch not read.
        args += f", from_summaries := {'true' if sel.from_summaries else 'false'}"
    df = wh.sql(
        f"SELECT * FROM {macro}({args}{extra}) WHERE run_id = ? ORDER BY {order}",
        [*params, *extra_params, sel.run],
    )
    if df.empty and sel.mode == "origin" and sel.layer is not None:
        raise _no_origin_rows(wh, sel.run, sel.layer)
    return df


def _summaries_flag(wh: Warehouse, run_id: int) -> str:
    """The from_summaries argument of the feature_lang_stats readers (LAPE over features,
    language_features) for a run: SQL text, as in _scored, so DuckDB reads one branch. Their
    per-(layer, feature, language) sums need finished summaries, not any top-k."""
    return "true" if has_summaries(wh.con, run_id, 0) else "false"


_VS_ENGLISH = "the gap against English needs A(L, en); load English text into the corpus"
_GAP = "gap_by_layer"
_BY_LANG = "gap_by_lang"
_SUMMARY = "gap_by_lang_summary"
_SCORES = "activation_scores"
# The macros that read the summaries when the selection allows (from_summaries).
_FROM_SUMMARIES = frozenset({_GAP, _BY_LANG, _SUMMARY, _SCORES})


# -- bootstrap over aligned groups ------------------------------------------------------


def score_samples(
    wh: Warehouse, sel: Selection, n_boot: int, seed: int
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Bootstrap resamples of A(L, l): the (layer, lang) keys and [n_boot, n_keys] values.

    Reads the per-group terms (activation_group_scores) once and resamples the run's aligned
    groups with one weight matrix for every layer and language, so the gaps derived from
    these samples resample the same groups in every language.
    """
    from xling.analysis.stats import check_boot_args, group_weights

    check_boot_args(n_boot, seed)
    args, params = sel.args()
    terms = wh.sql(
        f"SELECT layer, lang, group_id, coalesce(feature, -1) AS unit, act_sum, n_targets "
        f"FROM activation_group_scores({args})",
        params,
    )
    groups = np.unique(terms["group_id"].to_numpy())
    means = _resampled_scores(terms, groups, group_weights(len(groups), n_boot, seed))
    keys = list(means)
    return keys, (np.stack(list(means.values()), axis=1) if keys else np.zeros((n_boot, 0)))


def _resampled_scores(
    terms: pd.DataFrame, groups: np.ndarray, weights: np.ndarray
) -> dict[tuple[int, str], np.ndarray]:
    """{(layer, lang): [n_boot] A(L, l)} from activation_group_scores rows (layer, lang,
    group_id, unit, act_sum, n_targets), group g weighted by weights[:, index of g in the
    sorted `groups`]."""
    from xling.analysis.stats import weighted_unit_means

    terms = terms.assign(gidx=np.searchsorted(groups, terms["group_id"].to_numpy()))
    return {
        (int(layer), str(lang)): weighted_unit_means(
            weights,
            t["gidx"].to_numpy(),
            t["unit"].to_numpy(),
            t["act_sum"].to_numpy(np.float64),
            t["n_targets"].to_numpy(np.float64),
        )
        for (layer, lang), t in terms.groupby(["layer", "lang"], sort=True)
    }


def _with_interval(
    df: pd.DataFrame, on: list[str], samples: dict, col: str, level: float = 0.95
) -> pd.DataFrame:
    """`df` with {col}_lo / {col}_hi from `samples` {key tuple: [n_boot] values}."""
    from xling.analysis.stats import percentile_interval

    lo, hi = [], []
    for key in df[on].itertuples(index=False, name=None):
        s = samples.get(tuple(_plain(v) for v in key))
        if s is None:
            lo.append(np.nan)
            hi.append(np.nan)
            continue
        with np.errstate(invalid="ignore"):
            a, b = percentile_interval(s[:, None], level)
        lo.append(float(a[0]))
        hi.append(float(b[0]))
    at = df.columns.get_loc(col) + 1
    df.insert(at, f"{col}_lo", lo)
    df.insert(at + 1, f"{col}_hi", hi)
    return df


def _plain(v: Any) -> Any:
    return int(v) if isinstance(v, np.integer) else v


def _ratio_gap(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ref != 0, 100 * (ref - x) / np.where(ref != 0, ref, 1), np.nan)


def _group_gap_samples(
    wh: Warehouse, sel: Selection, include_ref: bool, keys, samples
) -> dict[tuple[int], np.ndarray]:
    """{(layer,): [n_boot] gap_pct} from the A(L, l) resamples, H and W as in gap_by_layer."""
    groups = dict(wh.con.execute("SELECT lang, resource_group FROM languages").fetchall())
    out = {}
    for layer in sorted({lay for lay, _ in keys}):
        cols = {
            lang: samples[:, i]
            for i, (lay, lang) in enumerate(keys)
            if lay == layer and (include_ref or lang != sel.ref)
        }
        high = [v for lang, v in cols.items() if groups.get(lang) == "high"]
        low = [v for lang, v in cols.items() if groups.get(lang) == "low"]
        if high and low:
            h, w = np.mean(high, axis=0), np.mean(low, axis=0)
            out[(layer,)] = _ratio_gap(h, w)
    return out


def _vs_ref_samples(sel: Selection, keys, samples) -> dict[tuple[int, str], np.ndarray]:
    """{(layer, lang): [n_boot] gap_vs_en_pct} against the reference of the same resample."""
    at = {key: samples[:, i] for i, key in enumerate(keys)}
    return {
        (layer, lang): _ratio_gap(at[(layer, sel.ref)], v)
        for (layer, lang), v in at.items()
        if (layer, sel.ref) in at
    }


# -- activation scores and gaps ----------------------------------------------------------


def scores(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    *,
    ref: str = "en",
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """A(L, l) per layer and language: run_id, layer, lang, resource_group, mode, ref, score
    (with `ci`: score_lo, score_hi, a 95 % bootstrap interval over groups), n_units,
    n_phrases."""
    sel = _selection(wh, run, layer, mode, stat, k, ref)
    df = _scored(wh, _SCORES, sel, "layer, lang")
    if ci:
        keys, samples = score_samples(wh, sel, n_boot, seed)
        df = _with_interval(df, ["layer", "lang"], dict(zip(keys, samples.T, strict=True)), "score")
    return df


def gap(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    *,
    ref: str = "en",
    include_ref: bool = False,
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """The high/low resource gap per layer: run_id, layer, mode, ref, high_score, low_score,
    gap_pct = 100·(H − W)/H (with `ci`: gap_pct_lo, gap_pct_hi), n_high, n_low, high_langs,
    low_langs. The reference language is left out of its group's mean unless `include_ref`."""
    sel = _selection(wh, run, layer, mode, stat, k, ref)
    df = _scored(wh, _GAP, sel, "layer", ", include_ref := ?", [bool(include_ref)])
    if ci:
        keys, samples = score_samples(wh, sel, n_boot, seed)
        df = _with_interval(
            df, ["layer"], _group_gap_samples(wh, sel, include_ref, keys, samples), "gap_pct"
        )
    return df


def gap_by_lang(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    *,
    ref: str = "en",
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Each language against the reference (English by default) per layer: run_id, layer,
    lang, resource_group, mode, ref, score (A(L, l)), n_phrases, en_score (A(L, ref)),
    gap_vs_en_pct (with `ci`: gap_vs_en_pct_lo, gap_vs_en_pct_hi)."""
    sel = _selection(wh, run, layer, mode, stat, k, ref, vs_ref=True)
    df = _scored(wh, _BY_LANG, sel, "layer, lang")
    if ci:
        keys, samples = score_samples(wh, sel, n_boot, seed)
        df = _with_interval(
            df, ["layer", "lang"], _vs_ref_samples(sel, keys, samples), "gap_vs_en_pct"
        )
    return df


def languages(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    *,
    ref: str = "en",
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """One row per language but the reference (English by default): its gap against the
    reference across the run's layers (or at `layer`) — the paper's Appendix D table — with
    name, resource group, phrases; with `ci`, mean_gap_pct_lo / _hi (the mean over layers of
    the same resampled groups).

    std_gap_pct is the sample standard deviation (n − 1); NaN over a single layer.
    """
    sel = _selection(wh, run, layer, mode, stat, k, ref, vs_ref=True)
    df = _scored(wh, _SUMMARY, sel, "lang")
    names = wh.sql(
        "SELECT p.lang, any_value(l.name) AS name, count(*) AS n_phrases "
        "FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "LEFT JOIN languages l USING (lang) WHERE t.run_id = ? GROUP BY p.lang",
        [sel.run],
    )
    df = df.merge(names, on="lang", how="left")
    cols = [
        "run_id",
        "lang",
        "name",
        "resource_group",
        "n_phrases",
        "mode",
        "ref",
        "n_layers",
        "mean_score",
        "mean_gap_pct",
        "std_gap_pct",
        "min_gap_pct",
        "max_gap_pct",
    ]
    order = {"high": 0, "low": 1}
    df = df.assign(_g=df["resource_group"].map(order).fillna(2)).sort_values(["_g", "lang"])
    df = df[cols].reset_index(drop=True)
    if ci:
        keys, samples = score_samples(wh, sel, n_boot, seed)
        per_layer = _vs_ref_samples(sel, keys, samples)
        by_lang: dict[str, list[np.ndarray]] = {}
        for (_layer, lang), v in per_layer.items():
            by_lang.setdefault(lang, []).append(v)
        df = _with_interval(
            df,
            ["lang"],
            {(lang,): np.mean(vs, axis=0) for lang, vs in by_lang.items()},
            "mean_gap_pct",
        )
    return df


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


def _residual_layers(wh: Warehouse, run: int, layer: int | None) -> list[int]:
    if layer is not None:
        return [layer]
    rows = wh.con.execute(
        "SELECT DISTINCT layer FROM residuals WHERE run_id = ? ORDER BY layer", [run]
    ).fetchall()
    return [int(r[0]) for r in rows]


def similarity(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    *,
    ref: str = "en",
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Residual similarity of each language to the reference (English by default) per layer,
    with its controls: run_id, layer, lang, sim, baseline, centred, retrieval (with `ci`: each
    one's _lo and _hi), n_groups, resource_group. Definitions: xling.analysis.similarity."""
    from xling.analysis.similarity_controls import similarity_table

    run_id = _residual_run(wh, run, layer)
    if ref == "en":
        _check_english(
            wh, run_id, "similarity to English needs them; try --matrix or another --ref"
        )
    else:
        _check_lang(wh, run_id, ref)
    df = similarity_table(
        wh,
        run_id,
        _residual_layers(wh, run_id, layer),
        lambda langs: [(ref, lang) for lang in langs if lang != ref and ref in langs],
        ci=ci,
        n_boot=n_boot,
        seed=seed,
    )
    groups = dict(wh.con.execute("SELECT lang, resource_group FROM languages").fetchall())
    df = df.drop(columns="lang_a").rename(columns={"lang_b": "lang"})
    df.insert(0, "run_id", run_id)
    df["resource_group"] = df["lang"].map(groups)
    return df


def similarity_matrix(
    wh: Warehouse,
    run: int | None = None,
    layer: int | None = None,
    *,
    wide: bool = False,
    metric: str = "sim",
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Pairwise language similarity per layer with the same controls, lang_a the reference:
    long (run_id, layer, lang_a, lang_b, sim, baseline, centred, retrieval, n_groups; the
    diagonal included, where retrieval asks whether a phrase is its own nearest neighbour), or
    `wide`: one row per (layer, lang_a), one column per lang_b holding `metric`."""
    from xling.analysis.similarity_controls import METRICS, similarity_table

    if metric not in METRICS:
        raise XlingError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    run_id = _residual_run(wh, run, layer)
    df = similarity_table(
        wh,
        run_id,
        _residual_layers(wh, run_id, layer),
        lambda langs: [(a, b) for a in langs for b in langs],
        ci=ci and not wide,
        n_boot=n_boot,
        seed=seed,
    )
    df.insert(0, "run_id", run_id)
    if not wide:
        return df
    out = df.pivot(index=["layer", "lang_a"], columns="lang_b", values=metric)
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
    entropy, bar, langs (every language the unit belongs to, comma-separated). The selection
    runs over all the run's layers; `layer` and `lang` only filter its result.
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
    where, params = _filters(run_id=run_id, kind=kind, layer=layer)
    summaries = _summaries_flag(wh, run_id) if kind == "features" else "false"
    df = wh.sql(
        f"SELECT run_id, layer, unit, lang, p, entropy, bar "
        f"FROM lape_selected(top_rate := ?, filter_rate := ?, from_summaries := {summaries}, "
        f"at_run := {int(run_id)}, at_kind := '{kind}'){where} "
        "ORDER BY lang, layer, unit",
        [float(top_rate), float(filter_rate), *params],
    )
    # every language a unit belongs to, also when only one language's rows are shown
    langs = df.groupby(["layer", "unit"])["lang"].agg(lambda s: ",".join(sorted(s)))
    df = df.join(langs.rename("langs"), on=["layer", "unit"])
    if lang is not None:
        df = df[df["lang"] == lang].reset_index(drop=True)
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
    *,
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """A tuned run against its base over the same phrases, per layer and language:
    base_score, tuned_score, improvement_pct, en_retention_pct, en_cosine, n_en_phrases,
    split_id (the held-apart split scored, see compare_runs.sql).

    With `ci`: improvement_pct_lo/_hi and en_retention_pct_lo/_hi, 95 % percentile-bootstrap
    intervals over the scored groups, resampled together in both runs (the same groups'
    before and after) and in every language, so the interval is that of the paired change.
    """
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
    # The summaries hold every group's numbers: usable when no round's split is scored.
    every_group = (
        wh.scalar(
            "SELECT max(split_id) FROM rounds WHERE base_run = ? AND tuned_run = ?", [base, tuned]
        )
        is None
    )
    base_summaries = every_group and mode in _SUMMARY_MODES and has_summaries(wh.con, base, k)
    tuned_summaries = every_group and mode == "origin" and has_summaries(wh.con, tuned, k)
    df = wh.sql(
        "SELECT * FROM compare_runs(?, ?, mode := ?, stat := ?, k := ?, at_layer := ?, "
        f"base_summaries := {str(base_summaries).lower()}, "
        f"tuned_summaries := {str(tuned_summaries).lower()}) ORDER BY layer, lang",
        [base, tuned, mode, stat, k, layer],
    )
    df = df.drop(columns=["base_run", "tuned_run"])
    if ci and not df.empty:
        split = df["split_id"].iloc[0]
        import pandas as pd

        split = None if pd.isna(split) else int(split)  # NA: a pair not made by a round
        improvement, retention = _compare_samples(
            wh, base, tuned, mode, stat, k, layer, split, n_boot, seed
        )
        df = _with_interval(df, ["layer", "lang"], improvement, "improvement_pct")
        df = _with_interval(df, ["layer"], retention, "en_retention_pct")
    return df


def _compare_samples(
    wh: Warehouse,
    base: int,
    tuned: int,
    mode: str,
    stat: str,
    k: int,
    layer: int | None,
    split: int | None,
    n_boot: int,
    seed: int,
) -> tuple[dict, dict]:
    """Bootstrap resamples of compare's improvement_pct {(layer, lang): [n_boot]} and
    en_retention_pct {(layer,): [n_boot]}: one weight matrix over the scored groups applied
    to both runs' per-group terms (activation_group_scores, the base run's top-k features)."""
    from xling.analysis.stats import check_boot_args, group_weights

    check_boot_args(n_boot, seed)
    query = (
        "SELECT layer, lang, group_id, coalesce(feature, -1) AS unit, act_sum, n_targets "
        "FROM activation_group_scores(mode := ?, stat := ?, k := ?, select_run := ?, "
        "at_run := ?, at_layer := ?, at_split := ?) WHERE run_id = ?"
    )
    terms = {
        run: wh.sql(query, [mode, stat, k, base, run, layer, split, run]) for run in (base, tuned)
    }
    groups = np.unique(np.concatenate([t["group_id"].to_numpy() for t in terms.values()]))
    weights = group_weights(len(groups), n_boot, seed)
    before, after = (_resampled_scores(terms[run], groups, weights) for run in (base, tuned))
    # 100·(after − before)/before is minus the gap of `after` below `before`
    improvement = {key: -_ratio_gap(before[key], after[key]) for key in before if key in after}
    retention = {
        (lay,): 100 + improvement[(lay, lang)] for lay, lang in improvement if lang == "en"
    }
    return improvement, retention


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
    min_support: int = 2,
) -> pd.DataFrame:
    """The SAE features of `lang` at `layer` against English (see language_features.sql).

    Default: the most language-specific (highest lang_share, then lang_fire_rate). `under`:
    the most under-activated against English (largest deficit = en_mean − lang_mean). Only
    features that fired on at least `min_support` phrases count (of `lang`, or of English with
    `under`): the default 2 drops features seen once, which rank first on share alone.
    """
    _check_score_args(stat, DEFAULT_K)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise XlingError(f"--limit must be a whole number >= 1, got {limit!r}")
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
        raise XlingError(f"--min-support must be a whole number >= 1, got {min_support!r}")
    run_id = _run(wh, run)
    _check_layer(wh, run_id, layer)
    _check_lang(wh, run_id, lang)
    order = "deficit DESC, feature" if under else "lang_share DESC, lang_fire_rate DESC, feature"
    support = "en_active_phrases" if under else "lang_active_phrases"
    summaries = _summaries_flag(wh, run_id)
    return wh.sql(
        f"SELECT * FROM language_features(?, stat := ?, from_summaries := {summaries}) "
        "WHERE run_id = ? AND layer = ? "
        f"AND {'deficit > 0' if under else 'lang_mean > 0'} AND {support} >= ? "
        f"ORDER BY {order} LIMIT ?",
        [lang, stat, run_id, layer, min_support, limit],
    )


def feature_phrases(
    wh: Warehouse,
    layer: int,
    feature: int,
    run: int | None = None,
    *,
    top: int = 5,
    stat: str = "max",
) -> pd.DataFrame:
    """One SAE feature's strongest phrases per language: lang, rank, act, n_active (tokens
    where it fired), n_lang_active (the language's phrases where it fired at all), phrase_id,
    group_id, text. Languages where it never fires have no rows."""
    _check_score_args(stat, DEFAULT_K)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise XlingError(f"--top must be a whole number >= 1, got {top!r}")
    if isinstance(feature, bool) or not isinstance(feature, int) or feature < 0:
        raise XlingError(f"--feature must be a whole number >= 0, got {feature!r}")
    run_id = _run(wh, run)
    _check_layer(wh, run_id, layer)
    col = "act_max" if stat == "max" else "act_mean"
    df = wh.sql(
        f"SELECT p.lang, row_number() OVER w AS rank, f.{col} AS act, f.n_active, "
        "count(*) OVER (PARTITION BY p.lang) AS n_lang_active, f.phrase_id, p.group_id, p.text "
        "FROM feature_values f JOIN phrases p USING (phrase_id) "
        "WHERE f.run_id = ? AND f.layer = ? AND f.feature = ? "
        f"WINDOW w AS (PARTITION BY p.lang ORDER BY f.{col} DESC, f.phrase_id) "
        "QUALIFY rank <= ? ORDER BY p.lang, rank",
        [run_id, layer, feature, top],
    )
    if df.empty:
        raise XlingError(f"feature {feature} never fires at layer {layer} in run {run_id}")
    return df


# the metrics `xling export NAME --ci` writes through their query function
WITH_CI = {
    "activation_scores": scores,
    "gap_by_layer": gap,
    "gap_by_lang": gap_by_lang,
    "gap_by_lang_summary": languages,
    "similarity_by_layer": similarity,
}


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
    sel = _selection(wh, run, layer, mode, stat, k, "en", vs_ref=True)
    df = _scored(wh, _VS_BENCHMARK, sel, "layer, lang")
    return df[(df["task"] == task) & (df["metric"] == metric)].reset_index(drop=True)
