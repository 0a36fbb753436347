"""The controls a reviewer asks for, each against an independent numpy computation on the same
raw rows: similarity baseline (every ordered pair g ≠ g', by explicit loops), centring,
argmax retrieval (ties miss), group-topk and a reference language for the topk modes, the
bootstrap against the textbook interval of a mean, Fisher-z, token premium and parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_data import HIGH, LOW, paper_like, ref_gap, ref_scores
from test_views import _by, _close, random_toy

from xling.analysis import queries
from xling.analysis.similarity_controls import pair_terms
from xling.analysis.stats import (
    bootstrap,
    fisher_z_interval,
    group_weights,
    percentile_interval,
    weighted_unit_means,
)
from xling.warehouse import Warehouse, XlingError


@pytest.fixture(scope="module")
def paper_db(tmp_path_factory):
    toy = paper_like(seed=3, n_groups=18, n_layers=3, n_features=40, d_model=12)
    path = tmp_path_factory.mktemp("paper") / "p.duckdb"
    with Warehouse(path) as wh:
        toy.write(wh)
    return path, toy


@pytest.fixture
def paper(paper_db):
    path, toy = paper_db
    with Warehouse(path, read_only=True) as wh:
        yield wh, toy


# -- similarity controls ------------------------------------------------------------------


def _f64(v):
    return np.asarray(v, np.float32).astype(np.float64)


def _cos(a, b):
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def ref_controls(toy, run, layer, ref, lang):
    """sim, baseline, centred, retrieval by loops over the raw residual rows."""
    res = toy.residuals[run]
    by = {}
    for (pid, lay), vec in res.items():
        p = toy.phrases[pid]
        if lay == layer and p["lang"] in (ref, lang):
            by.setdefault(p["group_id"], {})[p["lang"]] = _f64(vec)
    groups = sorted(g for g, v in by.items() if ref in v and lang in v)
    e = [by[g][ref] for g in groups]
    x = [by[g][lang] for g in groups]
    n = len(groups)
    sim = np.mean([_cos(e[i], x[i]) for i in range(n)])
    baseline = np.mean([_cos(e[i], x[j]) for i in range(n) for j in range(n) if i != j])
    mu_e, mu_x = np.mean(e, axis=0), np.mean(x, axis=0)
    centred = np.mean([_cos(e[i] - mu_e, x[i] - mu_x) for i in range(n)])
    hits = 0
    for i in range(n):
        cands = [_cos(e[i], x[j]) for j in range(n)]
        best = max(cands)
        # top-1: the own phrase must be the single best; a tie is a miss
        hits += cands[i] == best and cands.count(best) == 1
    return {"sim": sim, "baseline": baseline, "centred": centred, "retrieval": hits / n}, n


def test_similarity_controls_match_loops(paper):
    wh, toy = paper
    df = queries.similarity(wh, run=1)
    assert list(df.columns[:7]) == [
        "run_id",
        "layer",
        "lang",
        "sim",
        "baseline",
        "centred",
        "retrieval",
    ]
    for row in df.itertuples(index=False):
        want, n = ref_controls(toy, 1, row.layer, "en", row.lang)
        assert row.n_groups == n
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-9, abs=1e-12), (row, name)
    # the view's sim is the same number
    view = wh.sql("SELECT layer, lang, similarity FROM similarity_by_layer WHERE run_id = 1")
    _close(_by(df, "layer", "lang", col="sim"), _by(view, "layer", "lang", col="similarity"), 1e-6)
    # designed: translations share a group vector, mismatched groups do not
    assert (df["sim"] > df["baseline"] + 0.2).all() and (df["retrieval"] > 0.5).all()


def test_similarity_with_another_reference_and_the_matrix(paper):
    wh, toy = paper
    df = queries.similarity(wh, run=1, layer=2, ref="hi")
    assert "hi" not in set(df["lang"]) and "en" in set(df["lang"])
    for row in df.itertuples(index=False):
        want, _ = ref_controls(toy, 1, 2, "hi", row.lang)
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-9, abs=1e-12)
    matrix = queries.similarity_matrix(wh, run=1, layer=2).set_index(["lang_a", "lang_b"])
    for row in df.itertuples(index=False):
        for name in ("sim", "baseline", "centred", "retrieval"):
            assert matrix.loc[("hi", row.lang), name] == pytest.approx(getattr(row, name))
    wide = queries.similarity_matrix(wh, run=1, layer=2, wide=True, metric="baseline")
    assert wide.set_index("lang").loc["hi", "ml"] == pytest.approx(
        matrix.loc[("hi", "ml"), "baseline"]
    )


def test_retrieval_counts_ties_as_misses():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # group 0's translation equals group 2's: group 0 ties with group 2 and misses; group 2's
    # own phrase is no closer than group 0's either
    x = np.array([[1.0, 0.2], [0.0, 1.0], [1.0, 0.2]])
    hits = pair_terms(e, x)["retrieval"]
    assert hits.tolist() == [0.0, 1.0, 0.0]


def test_baseline_from_sums_equals_the_pairwise_mean():
    rng = np.random.default_rng(1)
    e, x = rng.normal(size=(40, 7)), rng.normal(size=(40, 7))
    terms = pair_terms(e, x)
    eu = e / np.linalg.norm(e, axis=1, keepdims=True)
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = eu @ xu.T
    off = c[~np.eye(40, dtype=bool)]
    assert terms["baseline"].mean() == pytest.approx(off.mean(), rel=1e-12)


# -- selection modes and the reference ------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_group_topk_and_reference_match_reference(tmp_path, seed):
    toy = random_toy(seed)
    with Warehouse(tmp_path / "r.duckdb") as wh:
        toy.write(wh)
        for mode, ref in (("group-topk", "en"), ("english-topk", "zh"), ("group-topk", "hi")):
            for stat, k in (("max", 3), ("mean", 5)):
                want = ref_scores(toy, 1, mode, stat, k, ref=ref)
                got = queries.scores(wh, run=1, mode=mode, stat=stat, k=k, ref=ref)
                _close(_by(got, "layer", "lang"), want)
                assert set(got["mode"]) == {mode} and set(got["ref"]) == {ref}
                gap = queries.gap(wh, run=1, mode=mode, stat=stat, k=k, ref=ref)
                _close(_by(gap, "layer", col="gap_pct"), ref_gap(want, ref))
                full = queries.gap(wh, run=1, mode=mode, stat=stat, k=k, ref=ref, include_ref=True)
                _close(_by(full, "layer", col="gap_pct"), ref_gap(want, ref, include_ref=True))
                # the result names the languages that made H and W
                for r in gap.itertuples(index=False):
                    langs = {lang for (lay, lang) in want if lay == r.layer and lang != ref}
                    assert r.high_langs == ",".join(sorted(langs & set(HIGH)))
                    assert r.low_langs == ",".join(sorted(langs & set(LOW)))
                vs = queries.gap_by_lang(wh, run=1, mode=mode, stat=stat, k=k, ref=ref)
                for r in vs.itertuples(index=False):
                    a_ref = want[(r.layer, ref)]
                    expect = 100 * (a_ref - want[(r.layer, r.lang)]) / a_ref if a_ref else math.nan
                    assert r.gap_vs_en_pct == pytest.approx(expect, rel=1e-9, nan_ok=True)


def test_reference_must_have_phrases(paper):
    wh, _ = paper
    with pytest.raises(XlingError, match="no phrases in 'xx'"):
        queries.gap(wh, run=1, mode="english-topk", ref="xx")


# -- bootstrap -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [50, 400])
def test_bootstrap_interval_of_a_mean_is_the_textbook_one(n):
    values = np.random.default_rng(n).exponential(size=n)
    lo, hi = bootstrap(lambda w: (w @ values) / w.sum(axis=1), n, n_boot=4000, seed=1)
    half = 1.96 * values.std(ddof=1) / math.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)
    assert lo < values.mean() < hi


def test_bootstrap_is_seeded_and_settable():
    values = np.arange(30.0)

    def stat(w):
        return (w @ values) / w.sum(axis=1)

    assert bootstrap(stat, 30, seed=5) == bootstrap(stat, 30, seed=5)
    assert bootstrap(stat, 30, seed=5) != bootstrap(stat, 30, seed=6)
    assert group_weights(30, 200, 0).shape == (200, 30)
    assert (group_weights(30, 200, 0).sum(axis=1) == 30).all()
    with pytest.raises(XlingError, match="n-boot"):
        bootstrap(stat, 30, n_boot=1)


def test_unit_means_reduce_to_ratio_and_feature_means():
    group = np.array([0, 1, 2, 2])
    unit = np.array([7, 7, 9, 9])
    num, den = np.array([1.0, 3.0, 5.0, 2.0]), np.array([1.0, 1.0, 2.0, 1.0])
    ones = np.ones((1, 3))
    # unit 7: (1 + 3) / 2; unit 9: (5 + 2) / 3
    assert weighted_unit_means(ones, group, unit, num, den)[0] == pytest.approx((2 + 7 / 3) / 2)
    w = np.array([[2.0, 0.0, 1.0]])
    assert weighted_unit_means(w, group, unit, num, den)[0] == pytest.approx((1.0 + 7 / 3) / 2)
    assert np.isnan(percentile_interval(np.full((5, 1), np.nan))[0][0])


@pytest.mark.parametrize("mode", ["origin", "english-topk", "group-topk"])
def test_score_intervals_bracket_the_views_numbers(paper, mode):
    wh, _ = paper
    sel = queries._selection(wh, 1, None, mode, "max", 8, "en")
    keys, _ = queries.score_samples(wh, sel, 10, 0)
    # the bootstrap statistic evaluated on unit weights is the view's number
    from xling.analysis import stats

    original = stats.group_weights
    try:
        stats.group_weights = lambda n, b, s: np.ones((b, n))
        _, point = queries.score_samples(wh, sel, 10, 0)
    finally:
        stats.group_weights = original
    view = _by(queries.scores(wh, run=1, mode=mode, k=8), "layer", "lang")
    _close(dict(zip(keys, point[0], strict=True)), view)
    df = queries.scores(wh, run=1, mode=mode, k=8, ci=True, n_boot=200)
    assert (df["score_lo"] <= df["score"]).all() and (df["score"] <= df["score_hi"]).all()
    assert (df["score_hi"] > df["score_lo"]).all()
    gap = queries.gap(wh, run=1, mode=mode, k=8, ci=True, n_boot=200)
    assert (gap["gap_pct_lo"] <= gap["gap_pct"]).all() and (
        gap["gap_pct"] <= gap["gap_pct_hi"]
    ).all()
    vs = queries.gap_by_lang(wh, run=1, mode=mode, k=8, ci=True, n_boot=200)
    other = vs[vs.lang != "en"]
    assert (other["gap_vs_en_pct_lo"] <= other["gap_vs_en_pct"] + 1e-9).all()
    assert (other["gap_vs_en_pct"] <= other["gap_vs_en_pct_hi"] + 1e-9).all()
    summary = queries.languages(wh, run=1, mode=mode, k=8, ci=True, n_boot=200)
    assert (summary["mean_gap_pct_lo"] <= summary["mean_gap_pct"] + 1e-9).all()
    assert (summary["mean_gap_pct"] <= summary["mean_gap_pct_hi"] + 1e-9).all()
    # the same seed, the same interval
    again = queries.gap(wh, run=1, mode=mode, k=8, ci=True, n_boot=200)
    assert again["gap_pct_lo"].tolist() == gap["gap_pct_lo"].tolist()


def test_gap_interval_matches_a_numpy_bootstrap(paper):
    wh, toy = paper
    # english-topk at layer 0, by hand: per-group sums and counts, resampled with the same
    # weights the library draws (seed 0)
    n_boot = 300
    df = queries.gap(wh, run=1, layer=0, mode="english-topk", k=4, ci=True, n_boot=n_boot)
    groups = sorted({p["group_id"] for p in toy.phrases.values()})
    w = group_weights(len(groups), n_boot, 0)
    a = {}
    for lang in (*HIGH, *LOW):
        s, c = np.zeros(len(groups)), np.zeros(len(groups))
        for gi, g in enumerate(groups):
            ph = {p["lang"]: p["phrase_id"] for p in toy.phrases.values() if p["group_id"] == g}
            fired = sorted(
                (-toy.act(1, ph["en"], 0, f, "max"), f)
                for (pid, lay, f) in toy.acts[1]
                if pid == ph["en"] and lay == 0
            )[:4]
            s[gi] = sum(toy.act(1, ph[lang], 0, f, "max") for _a, f in fired)
            c[gi] = len(fired)
        a[lang] = (w @ s) / (w @ c)
    h = np.mean([a[lang] for lang in HIGH if lang != "en"], axis=0)
    low = np.mean([a[lang] for lang in LOW], axis=0)
    lo, hi = np.percentile(100 * (h - low) / h, [2.5, 97.5])
    assert df["gap_pct_lo"].iloc[0] == pytest.approx(lo, rel=1e-9)
    assert df["gap_pct_hi"].iloc[0] == pytest.approx(hi, rel=1e-9)


# -- correlations ------------------------------------------------------------------------------


def test_fisher_z_interval():
    lo, hi = fisher_z_interval(0.5, 28)
    half = 1.959963984540054 / 5
    assert lo == pytest.approx(math.tanh(math.atanh(0.5) - half))
    assert hi == pytest.approx(math.tanh(math.atanh(0.5) + half))
    assert all(math.isnan(v) for v in fisher_z_interval(0.5, 3))
