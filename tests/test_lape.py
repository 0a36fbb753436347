"""LAPE over MLP neurons and SAE features: a constructed case whose language-specific units are
known by design, and Tang et al.'s selection transcribed in torch as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from analysis_data import LANGS, Toy, neuron_probs, write_neurons

from xling.analysis import queries
from xling.warehouse import XlingError


def reference_lape(
    p: np.ndarray, top_rate: float, filter_rate: float = 0.95
) -> set[tuple[int, int, str]]:
    """Tang et al.'s identify.py selection (float64), as {(layer, unit, lang)}."""
    probs = torch.tensor(p, dtype=torch.float64)
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flat = probs.flatten()
    top_prob_value = flat.kthvalue(round(len(flat) * filter_rate)).values.item()
    top_position = (probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flat_entropy = entropy.flatten()
    _, index = flat_entropy.topk(round(len(flat_entropy) * top_rate), largest=False)
    rows, cols = index // entropy.size(1), index % entropy.size(1)
    selected = probs[rows, cols]
    lang_idx, unit_idx = torch.where(selected.transpose(0, 1) > top_prob_value)
    return {
        (int(rows[u]), int(cols[u]), LANGS[int(j)]) for j, u in zip(lang_idx, unit_idx, strict=True)
    }


def _set(df, unit="neuron"):
    return {(int(r.layer), int(getattr(r, unit)), r.lang) for r in df.itertuples()}


def test_constructed_neurons_are_selected_exactly(wh):
    write_neurons(wh, neuron_probs())
    # 100 neurons x 0.04 = 4 selected: the four designed ones, each with its languages
    df = queries.lape(wh, kind="neurons", top_rate=0.04, run=1)
    assert _set(df) == {(0, 3, "hi"), (0, 7, "hi"), (1, 5, "mr"), (1, 9, "hi"), (1, 9, "mr")}
    assert list(df.columns[:4]) == ["run_id", "layer", "neuron", "lang"]
    by_unit = df.groupby(["layer", "neuron"])["entropy"].first()
    assert by_unit[(0, 3)] == 0.0 and by_unit[(1, 9)] == pytest.approx(np.log(2))
    hi = queries.lape(wh, kind="neurons", lang="hi", top_rate=0.04, run=1)
    assert _set(hi) == {(0, 3, "hi"), (0, 7, "hi"), (1, 9, "hi")}
    assert _set(queries.lape(wh, kind="neurons", top_rate=0.04, run=1, layer=1)) == {
        (1, 5, "mr"),
        (1, 9, "hi"),
        (1, 9, "mr"),
    }


@pytest.mark.parametrize("top_rate", [0.02, 0.04, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_neurons_match_the_reference_selection(wh, top_rate, seed):
    stored = write_neurons(wh, neuron_probs(seed))
    got = _set(queries.lape(wh, kind="neurons", top_rate=top_rate, run=1))
    assert got == reference_lape(stored, top_rate)
    if top_rate == 1.0:  # every kept neuron: those firing everywhere belong to every language
        assert {(0, 20, lang) for lang in LANGS} <= got


def test_missing_neuron_rows_count_as_zero(tmp_path):
    from xling.warehouse import Warehouse

    p = neuron_probs()
    with (
        Warehouse(tmp_path / "dense.duckdb") as dense,
        Warehouse(tmp_path / "sparse.duckdb") as sparse,
    ):
        write_neurons(dense, p)
        write_neurons(sparse, p, drop_zeros=True)
        assert sparse.scalar("SELECT count(*) FROM neuron_stats") < dense.scalar(
            "SELECT count(*) FROM neuron_stats"
        )
        for top_rate in (0.04, 0.2):
            a = queries.lape(dense, kind="neurons", top_rate=top_rate, run=1)
            b = queries.lape(sparse, kind="neurons", top_rate=top_rate, run=1)
            assert _set(a) == _set(b)
            assert a["p"].tolist() == pytest.approx(b["p"].tolist())


def test_feature_lape_uses_n_active_over_phrase_tokens(wh):
    """SAE features: p = Σ n_active / Σ n_tokens over a language's phrases, absent rows 0."""
    rng = np.random.default_rng(3)
    t = Toy()
    pid = 0
    for g in range(6):
        for lang in LANGS:
            pid += 1
            t.phrase(pid, f"g{g}", lang)
    t.tokens[1] = {p: int(rng.integers(5, 15)) for p in t.phrases}
    t.acts[1] = {}
    for p, ph in t.phrases.items():
        n = t.tokens[1][p]
        for f in range(40):  # broad features: every language, a few tokens each
            if rng.random() < 0.5:
                t.acts[1][(p, 0, f)] = (1.0, 0.5, int(rng.integers(1, 3)))
        if ph["lang"] == "hi":  # feature 99 fires on most Hindi tokens and nowhere else
            t.acts[1][(p, 0, 99)] = (3.0, 2.0, n - 1)
    t.write(wh)
    df = queries.lape(wh, kind="features", top_rate=0.05, run=1)
    assert list(df.columns[:4]) == ["run_id", "layer", "feature", "lang"]
    # 41 features x 0.05 -> 2 selected; feature 99 (entropy 0) first, assigned to hi alone
    assert (0, 99, "hi") in _set(df, "feature")
    assert df[df.feature == 99]["entropy"].iloc[0] == 0.0
    # p against numpy over the raw rows, and the whole selection against the reference
    feats = sorted({f for (_p, _l, f) in t.acts[1]})
    tok = {
        lang: sum(t.tokens[1][p] for p, ph in t.phrases.items() if ph["lang"] == lang)
        for lang in LANGS
    }
    p = np.zeros((1, len(feats), len(LANGS)))
    for (pid_, _layer, f), (_a, _m, n_active) in t.acts[1].items():
        j = LANGS.index(t.phrases[pid_]["lang"])
        p[0, feats.index(f), j] += n_active / tok[LANGS[j]]
    want = {(layer, feats[u], lang) for layer, u, lang in reference_lape(p, 0.05)}
    assert _set(df, "feature") == want
    probs = wh.sql("SELECT unit, lang, p FROM lape_probs WHERE run_id = 1 AND kind = 'features'")
    got = {(r.unit, r.lang): r.p for r in probs.itertuples()}
    assert len(got) == len(feats) * len(LANGS)  # the full grid, zeros included
    for (f, lang), value in got.items():
        assert value == pytest.approx(p[0, feats.index(f), LANGS.index(lang)], rel=1e-12)


def test_lape_errors(wh):
    write_neurons(wh, neuron_probs())
    with pytest.raises(XlingError, match="top-rate must be in"):
        queries.lape(wh, kind="neurons", top_rate=0, run=1)
    with pytest.raises(XlingError, match="unknown LAPE kind"):
        queries.lape(wh, kind="heads", run=1)
    with pytest.raises(
        XlingError, match="layer 4 has no neuron stats in run 1; its layers are 0-1"
    ):
        queries.lape(wh, kind="neurons", run=1, layer=4)
    wh.con.execute(
        "INSERT INTO runs (run_id, model_id, status, config) VALUES (2, 1, 'finished', '{}')"
    )
    with pytest.raises(XlingError, match="run 2 has no neuron stats; ingest with --neurons"):
        queries.lape(wh, kind="neurons", run=2)


def test_lape_on_a_killed_runs_unmerged_rows_equals_lape_on_them_merged(corpus_wh, tiny_model_dir):
    """A run killed mid-way keeps one partial neuron_stats row per committed chunk (the merge
    happens when a run finishes). LAPE over those rows equals LAPE over the same rows summed
    into one row per key, and p is Σ n_positive / Σ n_tokens over the raw rows."""
    from xling.ingest.runner import IngestConfig, run_ingest

    wh = corpus_wh
    seen = []

    def kill_after_four_batches(state):
        seen.append(state.done)
        if len(seen) == 4:
            raise KeyboardInterrupt

    # residual rows count toward chunk_rows: every batch is committed as its own chunk
    config = IngestConfig(
        model=str(tiny_model_dir), neurons=True, residuals=True, batch_size=10, chunk_rows=1
    )
    with pytest.raises(KeyboardInterrupt):
        run_ingest(wh, config, kill_after_four_batches)
    (killed,) = wh.con.execute("SELECT run_id FROM runs WHERE status = 'failed'").fetchone()
    raw = wh.sql("SELECT * FROM neuron_stats WHERE run_id = ?", [killed])
    keys = ["lang", "layer", "neuron"]
    assert len(raw) > len(raw.drop_duplicates(keys))  # several partial rows per key
    merged = raw.groupby(keys, as_index=False)[["n_tokens", "n_positive", "act_sum"]].sum()
    with wh.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, model_id, status, config) VALUES (99, 1, 'finished', '{}')"
        )
        con.register("merged_rows", merged.assign(run_id=99))
        con.execute("INSERT INTO neuron_stats BY NAME SELECT * FROM merged_rows")
        con.unregister("merged_rows")
    probs = "SELECT layer, unit, lang, n_positive, n_tokens, p FROM lape_probs "
    order = " ORDER BY layer, unit, lang"
    a = wh.sql(f"{probs} WHERE run_id = ? AND kind = 'neurons'{order}", [killed])
    b = wh.sql(f"{probs} WHERE run_id = 99 AND kind = 'neurons'{order}")
    assert len(a) == len(merged) and a.equals(b)
    # p from the raw rows, independently of the view
    expected = merged.sort_values(["layer", "neuron", "lang"])
    np.testing.assert_allclose(
        a["p"].to_numpy(), (expected["n_positive"] / expected["n_tokens"]).to_numpy(), rtol=1e-12
    )
    # The tiny model's neurons are not language-specific: a low bar selects some anyway.
    lape_a = queries.lape(wh, kind="neurons", top_rate=0.5, filter_rate=0.3, run=killed)
    lape_b = queries.lape(wh, kind="neurons", top_rate=0.5, filter_rate=0.3, run=99)
    assert len(lape_a) > 0
    keys = ["layer", "neuron", "lang"]
    assert lape_a[keys].reset_index(drop=True).equals(lape_b[keys].reset_index(drop=True))
    for col in ("p", "entropy"):  # window sums may add in another order: equal to rounding
        np.testing.assert_allclose(lape_a[col], lape_b[col], rtol=1e-12, atol=1e-15)
