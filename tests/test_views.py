"""The metric views against hand-checked values and independent numpy/Python recomputations.

The toy warehouse (built in `toy_wh`) has groups missing languages (g2 has no mr, g3 only en
and mr), a group without English (g4), a group without any origin (g5), phrases where the
scored feature is absent (p3, p7), an origin carried by a non-English phrase (g3) or by both
(g2, where English's wins) and languages of the seed table with no phrases at all (ru, es,
...). Float comparisons: activations are float32 on disk and summed in float64, so values
agree with the references to 1e-9 relative; hand-computed values to 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_data import TOY_CONFIGS, Toy, ref_gap, ref_scores, toy_data

from xling.analysis import queries
from xling.warehouse import XlingError

REL = 1e-9
HAND = 1e-6


@pytest.fixture
def toy_wh(wh):
    toy = toy_data()
    toy.write(wh, configs=TOY_CONFIGS)
    return wh, toy


def _by(df, *keys, col="score"):
    return {
        tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r[col]
        for r in df.to_dict("records")
    }


def _close(got: dict, want: dict, rel=REL):
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-12, nan_ok=True), key


# -- hand-checked values -------------------------------------------------------------------


def test_origin_scores_by_hand(toy_wh):
    wh, _ = toy_wh
    df = queries.scores(wh, run=1, mode="origin")
    _close(
        _by(df, "layer", "lang"),
        {
            # L0: f5 over g1+g4, f7 over g2; p3 (hi, f5) and p7 (hi, f7) are absent = 0
            (0, "en"): (4 + 6) / 2,
            (0, "zh"): ((2 + 2) / 2 + 3) / 2,
            (0, "hi"): ((0 + 1) / 2 + 0) / 2,
            (0, "mr"): 1.0,
            # L1: f5 over g3, whose origin sits on its Marathi phrase
            (1, "en"): 2.0,
            (1, "mr"): 1.0,
        },
        rel=HAND,
    )
    assert set(df["mode"]) == {"origin"}
    assert _by(df, "layer", "lang", col="n_units")[(0, "hi")] == 2


def test_english_topk_scores_by_hand(toy_wh):
    wh, _ = toy_wh
    df = queries.scores(wh, run=1, mode="english-topk", k=2)
    _close(
        _by(df, "layer", "lang"),
        {
            # F_g1 = {5, 2}, F_g2 = {7, 1}, F_g5 = {3}; g3's English fires nothing at L0;
            # g4 has no English
            (0, "en"): (7 + 8 + 5) / 5,
            (0, "zh"): (3 + 3) / 4,
            (0, "hi"): (2 + 0 + 1) / 5,
            (0, "mr"): 1 / 2,
            # F_g1 = {5}, F_g3 = {5}
            (1, "en"): 3 / 2,
            (1, "zh"): 0.0,
            (1, "hi"): 0.0,
            (1, "mr"): (0 + 1) / 2,
        },
        rel=HAND,
    )


def test_gap_by_layer_by_hand(toy_wh):
    wh, _ = toy_wh
    # English, the reference, is left out of H by default: H(L0) = A(zh) = 2.5, and layer 1
    # has no other high language
    df = queries.gap(wh, run=1, mode="origin")
    assert _by(df, "layer", col="gap_pct") == pytest.approx(
        {0: 100 * (2.5 - 0.625) / 2.5, 1: math.nan}, rel=HAND, nan_ok=True
    )
    assert _by(df, "layer", col="high_langs") == {0: "zh", 1: ""}
    assert _by(df, "layer", col="low_langs") == {0: "hi,mr", 1: "mr"}
    full = queries.gap(wh, run=1, mode="origin", include_ref=True)
    assert _by(full, "layer", col="gap_pct") == pytest.approx(
        {0: 100 * (3.75 - 0.625) / 3.75, 1: 50.0}, rel=HAND
    )
    assert _by(full, "layer", col="n_high") == {0: 2, 1: 1}
    assert _by(full, "layer", col="high_langs") == {0: "en,zh", 1: "en"}
    topk = queries.gap(wh, run=1, layer=1, mode="english-topk", k=2, include_ref=True)
    assert topk["gap_pct"].tolist() == pytest.approx([100 * (0.75 - 0.25) / 0.75], rel=HAND)


def test_gap_by_lang_and_appendix_d_summary_by_hand(toy_wh):
    wh, _ = toy_wh
    df = queries.gap_by_lang(wh, run=1, mode="origin")
    assert _by(df, "layer", "lang", col="gap_vs_en_pct") == pytest.approx(
        {
            (0, "en"): 0.0,
            (0, "zh"): 50.0,
            (0, "hi"): 95.0,
            (0, "mr"): 80.0,
            (1, "en"): 0.0,
            (1, "mr"): 50.0,
        },
        rel=HAND,
    )
    summary = queries.languages(wh, run=1, mode="origin").set_index("lang")
    assert "en" not in summary.index
    assert summary.loc["mr", "mean_gap_pct"] == pytest.approx(65.0, rel=HAND)
    # sample standard deviation (n - 1): sqrt(((80-65)^2 + (50-65)^2) / 1)
    assert summary.loc["mr", "std_gap_pct"] == pytest.approx(math.sqrt(450), rel=HAND)
    assert math.isnan(summary.loc["zh", "std_gap_pct"])  # a single layer
    assert summary.loc["mr", "n_layers"] == 2
    assert summary.loc["hi", "name"] == "Hindi" and summary.loc["hi", "n_phrases"] == 4
    at0 = queries.languages(wh, run=1, layer=0, mode="origin").set_index("lang")
    assert at0.loc["mr", "mean_gap_pct"] == pytest.approx(80.0, rel=HAND)


def test_default_views_pick_each_runs_mode(toy_wh):
    wh, toy = toy_wh
    # run 3: only g5 (no origins) -> english-topk; run 1 carries origins -> origin
    wh.con.execute(
        "INSERT INTO runs (run_id, model_id, status, config) VALUES (3, 1, 'finished', '{}')"
    )
    wh.con.execute("INSERT INTO phrase_tokens VALUES (3, 12, 4), (3, 13, 4)")
    wh.con.execute(
        "INSERT INTO feature_acts SELECT 3, phrase_id, layer, feature, act_mean, "
        "act_max, n_active FROM feature_acts WHERE run_id = 1 AND phrase_id IN (12, 13)"
    )
    view = wh.sql(
        "SELECT run_id, layer, lang, mode, score FROM activation_scores WHERE run_id IN (1, 3)"
    )
    assert set(view[view.run_id == 1]["mode"]) == {"origin"}
    assert set(view[view.run_id == 3]["mode"]) == {"english-topk"}
    assert queries.resolve_mode(wh, 3, None) == "english-topk"
    assert queries.resolve_mode(wh, 1, None) == "origin"
    for run, mode in ((1, "origin"), (3, "english-topk")):
        got = view[view.run_id == run]
        _close(_by(got, "layer", "lang"), ref_scores_for(wh, toy, run, mode))
    gap = wh.sql("SELECT * FROM gap_by_layer(include_ref := true) WHERE run_id = 1")
    assert _by(gap, "layer", col="gap_pct") == pytest.approx({0: 83.33333333, 1: 50.0})


def ref_scores_for(wh, toy, run, mode):
    tokens = dict(
        wh.sql(
            "SELECT phrase_id, n_tokens FROM phrase_tokens WHERE run_id = ?", [run]
        ).values.tolist()
    )
    toy.tokens.setdefault(run, tokens)
    toy.acts.setdefault(run, {k: v for k, v in toy.acts[1].items() if k[0] in tokens})
    return ref_scores(toy, run, mode)


def test_languages_without_phrases_have_no_rows(toy_wh):
    wh, _ = toy_wh
    df = queries.gap_by_lang(wh, run=1, mode="english-topk")
    assert set(df["lang"]) == {"en", "zh", "hi", "mr"}  # ru, es, it, id, ca, ml: no phrases
    gap = queries.gap(wh, run=1, mode="english-topk")
    assert set(gap["n_high"]) == {1} and set(gap["n_low"]) == {2}  # en is the reference
    gap = queries.gap(wh, run=1, mode="english-topk", include_ref=True)
    assert set(gap["n_high"]) == {2} and set(gap["n_low"]) == {2}


# -- against the reference on the toy and on random warehouses ---------------------------


@pytest.mark.parametrize(
    ("mode", "stat", "k"),
    [
        ("origin", "max", 16),
        ("origin", "mean", 16),
        ("english-topk", "max", 1),
        ("english-topk", "max", 2),
        ("english-topk", "mean", 2),
        ("english-topk", "max", 16),
        ("english-topk", "mean", 16),
    ],
)
def test_scores_and_gaps_match_reference_on_toy(toy_wh, mode, stat, k):
    wh, toy = toy_wh
    want = ref_scores(toy, 1, mode, stat, k)
    _close(_by(queries.scores(wh, run=1, mode=mode, stat=stat, k=k), "layer", "lang"), want)
    gaps = queries.gap(wh, run=1, mode=mode, stat=stat, k=k)
    _close(_by(gaps, "layer", col="gap_pct"), ref_gap(want))


def random_toy(seed: int) -> Toy:
    """Groups with random language coverage, random origins and sparse random activations."""
    rng = np.random.default_rng(seed)
    langs = ["en", "zh", "ru", "hi", "mr", "ml"]
    t = Toy()
    pid = 0
    for g in range(12):
        present = [lang for lang in langs if rng.random() < 0.75]
        origin = (int(rng.integers(0, 3)), int(rng.integers(0, 30))) if rng.random() < 0.7 else None
        for lang in present:
            pid += 1
            carries = origin if (lang == "en" or rng.random() < 0.3) else None
            t.phrase(pid, f"g{g}", lang, carries)
    t.tokens[1] = {p: int(rng.integers(1, 30)) for p in t.phrases}
    t.acts[1] = {}
    for p in t.phrases:
        for layer in range(3):
            feats = rng.choice(30, size=int(rng.integers(0, 12)), replace=False)
            for f in feats:
                # coarse values make ties in the top-k ranking likely
                v = float(rng.integers(1, 6)) / 2
                t.acts[1][(p, layer, int(f))] = (
                    v,
                    float(rng.random()) * v,
                    int(rng.integers(1, 9)),
                )
    return t


@pytest.mark.parametrize("seed", range(3))
def test_scores_match_reference_on_random_warehouses(tmp_path, seed):
    from xling.warehouse import Warehouse

    toy = random_toy(seed)
    with Warehouse(tmp_path / "r.duckdb") as wh:
        toy.write(wh)
        for mode in ("origin", "english-topk"):
            for stat, k in (("max", 3), ("mean", 5)):
                want = ref_scores(toy, 1, mode, stat, k)
                got = queries.scores(wh, run=1, mode=mode, stat=stat, k=k)
                _close(_by(got, "layer", "lang"), want)
                _close(
                    _by(queries.gap(wh, run=1, mode=mode, stat=stat, k=k), "layer", col="gap_pct"),
                    ref_gap(want),
                )
                # the layer filter pushed into the scans gives the same rows
                at1 = {lang: a for (lay, lang), a in want.items() if lay == 1}
                if not at1:  # origin mode, no origin at layer 1: an error that says so
                    with pytest.raises(XlingError, match="origin feature at layer 1"):
                        queries.gap_by_lang(wh, run=1, layer=1, mode=mode, stat=stat, k=k)
                    continue
                one = queries.gap_by_lang(wh, run=1, layer=1, mode=mode, stat=stat, k=k)
                _close(_by(one, "lang"), at1)


# -- similarity -----------------------------------------------------------------------------


def _cos(a, b):
    a, b = (
        np.asarray(a, np.float32).astype(np.float64),
        np.asarray(b, np.float32).astype(np.float64),
    )
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_similarity_matches_numpy(toy_wh):
    wh, toy = toy_wh
    res = toy.residuals[1]
    want: dict[tuple[int, str], list[float]] = {}
    for (pid, layer), vec in res.items():
        p = toy.phrases[pid]
        if p["lang"] == "en":
            continue
        en = [
            q for q in toy.phrases.values() if q["group_id"] == p["group_id"] and q["lang"] == "en"
        ]
        if not en or (en[0]["phrase_id"], layer) not in res:
            continue
        if not vec.any() or not res[(en[0]["phrase_id"], layer)].any():
            continue
        want.setdefault((layer, p["lang"]), []).append(_cos(res[(en[0]["phrase_id"], layer)], vec))
    df = queries.similarity(wh, run=1)
    _close(
        _by(df, "layer", "lang", col="sim"),
        {k: np.mean(v) for k, v in want.items()},
        rel=1e-6,
    )
    assert _by(df, "layer", "lang", col="n_groups") == {k: len(v) for k, v in want.items()}
    assert (1, "hi") in want and len(want[(1, "hi")]) == 2  # p7 has no layer-1 residual


def test_similarity_matrix_is_symmetric_with_unit_diagonal(toy_wh):
    wh, toy = toy_wh
    df = queries.similarity_matrix(wh, run=1, layer=0)
    got = _by(df, "lang_a", "lang_b", col="sim")
    for (a, b), v in got.items():
        assert got[(b, a)] == pytest.approx(v)
        if a == b:
            assert v == pytest.approx(1.0, rel=1e-6)
    res = toy.residuals[1]
    zh_hi = [_cos(res[(z, 0)], res[(h, 0)]) for z, h in ((2, 3), (6, 7), (10, 11))]
    assert got[("hi", "zh")] == pytest.approx(np.mean(zh_hi), rel=1e-6)
    wide = queries.similarity_matrix(wh, run=1, layer=0, wide=True).set_index("lang")
    assert wide.loc["hi", "zh"] == pytest.approx(np.mean(zh_hi), rel=1e-6)


# -- compare ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["origin", "english-topk"])
def test_compare_matches_reference(toy_wh, mode):
    wh, toy = toy_wh
    base = ref_scores(toy, 1, mode, "max", 16)
    tuned = ref_scores(toy, 2, mode, "max", 16, select_run=1)
    df = queries.compare(wh, 1, 2, mode=mode)
    want_imp = {key: 100 * (tuned[key] - base[key]) / base[key] for key in base if base[key]}
    got_imp = {
        key: v
        for key, v in _by(df, "layer", "lang", col="improvement_pct").items()
        if not math.isnan(v)
    }
    _close(got_imp, want_imp)
    for layer in (0, 1):
        rows = df[df.layer == layer]
        assert rows["en_retention_pct"].iloc[0] == pytest.approx(
            100 * tuned[(layer, "en")] / base[(layer, "en")], rel=REL
        )
        # English pooled SAE vectors of both runs, dense over features, absent = 0
        cosines = []
        for p in toy.phrases.values():
            if p["lang"] != "en":
                continue
            va = np.array([toy.act(1, p["phrase_id"], layer, f, "max") for f in range(10)])
            vb = np.array([toy.act(2, p["phrase_id"], layer, f, "max") for f in range(10)])
            if va.any() and vb.any():
                cosines.append(va @ vb / np.sqrt((va @ va) * (vb @ vb)))
        assert rows["en_cosine"].iloc[0] == pytest.approx(np.mean(cosines), rel=1e-6)
        assert rows["n_en_phrases"].iloc[0] == len(cosines)


@pytest.mark.parametrize("mode", ["origin", "english-topk"])
def test_compare_intervals_resample_the_same_groups_in_both_runs(toy_wh, mode, monkeypatch):
    wh, toy = toy_wh
    from xling.analysis import stats

    groups = sorted({p["group_id"] for p in toy.phrases.values()})
    w = np.array([[2.0, 0.0, 1.0][i % 3] for i in range(len(groups))])  # one fixed resample
    monkeypatch.setattr(stats, "group_weights", lambda n, b, s: np.tile(w[:n], (b, 1)))
    df = queries.compare(wh, 1, 2, mode=mode, ci=True, n_boot=10)
    weights = dict(zip(groups, w, strict=True))
    base = ref_scores(toy, 1, mode, "max", 16, weights=weights)
    tuned = ref_scores(toy, 2, mode, "max", 16, select_run=1, weights=weights)
    want = {key: 100 * (tuned[key] - base[key]) / base[key] for key in base if base[key]}
    got = {
        key: v for key, v in _by(df, "layer", "lang", col="improvement_pct_lo").items()
        if not math.isnan(v)
    }  # fmt: skip
    # every resample is this one: lo = hi = the resampled change (float32 activations; a
    # change of -10 % from two sums of them carries ~1e-7 of their rounding)
    _close(got, want, rel=1e-6)
    for layer in (0, 1):
        row = df[df.layer == layer].iloc[0]
        resampled = 100 * tuned[(layer, "en")] / base[(layer, "en")]
        assert row["en_retention_pct_lo"] == pytest.approx(resampled, rel=1e-6)
        assert row["en_retention_pct_hi"] == pytest.approx(resampled, rel=1e-6)
    monkeypatch.undo()
    df = queries.compare(wh, 1, 2, mode=mode, ci=True, n_boot=300)
    shown = df.dropna(subset=["improvement_pct"])
    assert (shown["improvement_pct_lo"] <= shown["improvement_pct"] + 1e-9).all()
    assert (shown["improvement_pct"] <= shown["improvement_pct_hi"] + 1e-9).all()
    assert (shown["improvement_pct_hi"] > shown["improvement_pct_lo"]).any()


def test_compare_on_english_topk_uses_the_base_runs_features(toy_wh):
    wh, _ = toy_wh
    df = queries.compare(wh, 1, 2, layer=0, mode="english-topk", k=2)
    en = df[df.lang == "en"].iloc[0]
    # run 2 adds feature 9 on p1; scored on run 1's F_g it does not enter: English is 0.9 x
    assert en["tuned_score"] == pytest.approx(0.9 * en["base_score"], rel=1e-6)
    assert en["en_retention_pct"] == pytest.approx(90.0, rel=1e-6)
    assert df[df.lang == "zh"]["improvement_pct"].iloc[0] == pytest.approx(50.0, rel=1e-6)


def test_compare_refuses_runs_over_different_phrases(toy_wh):
    wh, _ = toy_wh
    wh.con.execute(
        "INSERT INTO runs (run_id, model_id, status, config) VALUES (3, 1, 'finished', '{}')"
    )
    wh.con.execute("INSERT INTO phrase_tokens VALUES (3, 1, 4)")
    with pytest.raises(XlingError, match="different phrases"):
        queries.compare(wh, 1, 3)
    with pytest.raises(XlingError, match="two different runs"):
        queries.compare(wh, 1, 1)


# -- features of a language -----------------------------------------------------------------


def test_language_features_match_numpy(toy_wh):
    wh, toy = toy_wh
    phrases = toy.run_phrases(1)
    n_lang = {lang: sum(p["lang"] == lang for p in phrases) for lang in ("en", "hi")}
    tokens = {
        lang: sum(toy.tokens[1][p["phrase_id"]] for p in phrases if p["lang"] == lang)
        for lang in {p["lang"] for p in phrases}
    }
    df = queries.features(wh, "hi", 0, run=1, under=True, limit=50)
    got = df.set_index("feature")
    for f in got.index:
        mean = {
            lang: sum(toy.act(1, p["phrase_id"], 0, f, "max") for p in phrases if p["lang"] == lang)
            / n_lang[lang]
            for lang in ("en", "hi")
        }
        assert got.loc[f, "deficit"] == pytest.approx(mean["en"] - mean["hi"], rel=REL)
        rates = {
            lang: sum(
                toy.acts[1].get((p["phrase_id"], 0, f), (0, 0, 0))[2]
                for p in phrases
                if p["lang"] == lang
            )
            / tokens[lang]
            for lang in tokens
        }
        assert got.loc[f, "lang_share"] == pytest.approx(rates["hi"] / sum(rates.values()), rel=REL)
    # p7 (hi) lacks f7: hi's mean is 0 and English's (1 + 6) / 4 -> the largest deficit
    assert df["feature"].iloc[0] == 7
    assert got.loc[7, "deficit"] == pytest.approx(7 / 4, rel=HAND)
    assert (df["deficit"].diff().dropna() <= 0).all()
    specific = queries.features(wh, "hi", 0, run=1)
    assert (specific["lang_mean"] > 0).all()
    assert (specific["lang_share"].diff().dropna() <= 1e-12).all()


# -- errors -----------------------------------------------------------------------------------


def test_bad_arguments_are_one_line_errors(toy_wh):
    wh, _ = toy_wh
    with pytest.raises(XlingError, match=r"layer 5 is not in run 1; its layers are 0-1"):
        queries.gap(wh, run=1, layer=5)
    with pytest.raises(XlingError, match="no run 9"):
        queries.gap(wh, run=9)
    with pytest.raises(XlingError, match="unknown mode"):
        queries.gap(wh, run=1, mode="topk")
    with pytest.raises(XlingError, match="unknown stat"):
        queries.gap(wh, run=1, stat="median")
    with pytest.raises(XlingError, match="k must be"):
        queries.gap(wh, run=1, k=0)
    with pytest.raises(XlingError, match="no phrases in 'ru'"):
        queries.features(wh, "ru", 0, run=1)
    with pytest.raises(XlingError, match="no residuals"):
        queries.similarity(wh, run=2)


def test_origin_layer_without_origins_says_where_they_are(toy_wh):
    wh, _ = toy_wh
    wh.con.execute("INSERT INTO feature_acts VALUES (1, 1, 2, 5, 1.0, 1.0, 1)")
    wh.con.execute("INSERT INTO run_layers VALUES (1, 2, 1002)")  # the run's layers: 0-2
    with pytest.raises(XlingError, match=r"origin feature at layer 2 \(origins are at layers 0-1"):
        queries.gap(wh, run=1, layer=2, mode="origin")
    assert not queries.gap(wh, run=1, layer=2, mode="english-topk").empty


def test_run_layers_from_catalog_or_scan(toy_wh):
    wh, _ = toy_wh
    assert queries.run_layers(wh, 1) == [0, 1]  # run_layers (from config saes)
    assert queries.run_layers(wh, 2) == [0, 1]  # run_layers (from config layers)
    wh.con.execute("DELETE FROM run_layers WHERE run_id = 2")
    assert queries.run_layers(wh, 2) == [0, 1]  # scanned
    assert queries.span([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_a_run_without_english_says_so(toy_wh):
    wh, _ = toy_wh
    # run 3 pools only g4 (zh, hi): no English phrase; its Chinese phrase carries an origin
    wh.con.execute(
        "INSERT INTO runs (run_id, model_id, status, config) VALUES (3, 1, 'finished', '{}')"
    )
    wh.con.execute("INSERT INTO phrase_tokens VALUES (3, 10, 4), (3, 11, 4)")
    wh.con.execute("INSERT INTO feature_acts VALUES (3, 10, 0, 5, 1.0, 2.0, 1)")
    with pytest.raises(XlingError, match="run 3 has no English phrases, and english-topk"):
        queries.gap(wh, run=3, mode="english-topk")
    with pytest.raises(XlingError, match="run 3 has no English phrases, and the gap against"):
        queries.languages(wh, run=3, mode="origin")
    # the high/low gap in origin mode needs no English
    assert queries.gap(wh, run=3)["mode"].tolist() == ["origin"]
