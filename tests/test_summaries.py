"""Summaries (warehouse/summaries.py) against independent numpy over the same raw rows.

Random warehouses are ingested chunk by chunk in a shuffled phrase order (so an English
phrase often lands after its translations), one chunk is killed mid-transaction and redone
later (a resumed run), and partial rows are folded mid-run. The summary macros must then give
the numbers that tests/analysis_data.ref_scores computes from the raw rows, and those of the
raw-row macros, for both modes, both statistics and several k.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from analysis_data import LANGS10, Toy, ref_scores

from xling.warehouse import encoding, summaries
from xling.warehouse.writer import append_arrow

REL = 1e-9
N_LAYERS = 4


def random_toy(seed: int) -> Toy:
    """Groups missing languages, groups without English, origins on English or another
    phrase, tied activations (values on a 0.5 grid) and phrases without any row."""
    rng = np.random.default_rng(seed)
    t = Toy()
    pid = 0
    for g in range(int(rng.integers(12, 20))):
        langs = [lang for lang in LANGS10 if rng.random() < 0.8]
        if g % 7 == 3:
            langs = [lang for lang in langs if lang != "en"]
        origin = (int(rng.integers(0, N_LAYERS)), int(rng.integers(0, 40)))
        carrier = "en" if rng.random() < 0.7 else (langs[-1] if langs else None)
        for lang in langs:
            pid += 1
            has = g % 5 != 4 and lang == carrier
            t.phrase(pid, f"g{g}", lang, origin if has else None)
    t.tokens[1] = {p: int(rng.integers(1, 9)) for p in t.phrases}
    t.acts[1] = {}
    for p, ph in t.phrases.items():
        if rng.random() < 0.05:
            continue  # a phrase with no active feature at all
        g = int(ph["group_id"][1:])
        base = np.random.default_rng(1000 + g).choice(40, 14, replace=False)
        for layer in range(N_LAYERS):
            for f in base:
                if rng.random() < 0.3:
                    continue
                v = float(rng.integers(1, 12)) / 2  # ties on purpose
                t.acts[1][(p, layer, int(f))] = (v, v / t.tokens[1][p], int(rng.integers(1, 4)))
    return t


def _rows(toy: Toy, run: int, pids: list[int], enc: str) -> dict[str, pa.Table]:
    keys = [k for k in toy.acts[run] if k[0] in set(pids)]
    rows = pa.table(
        {
            "phrase_id": pa.array([k[0] for k in keys], pa.int64()),
            "layer": pa.array([k[1] for k in keys], pa.int16()),
            "feature": pa.array([k[2] for k in keys], pa.int32()),
            "act_max": pa.array([toy.acts[run][k][0] for k in keys], pa.float32()),
            "act_mean": pa.array([toy.acts[run][k][1] for k in keys], pa.float32()),
            "n_active": pa.array([toy.acts[run][k][2] for k in keys], pa.int16()),
        }
    )
    tokens = pa.table(
        {
            "phrase_id": pa.array(pids, pa.int64()),
            "n_tokens": pa.array([toy.tokens[run][p] for p in pids], pa.int32()),
        }
    )
    return {
        table: t.append_column("run_id", pa.array([run] * t.num_rows, pa.int32()))
        for table, t in encoding.encode_tables(rows, enc, tokens).items()
    }


def ingest(wh, toy: Toy, run: int, enc: str, seed: int, kill: bool = True) -> None:
    """Write run `run` in shuffled chunks, each with its summaries, one killed and redone."""
    con = wh.con
    config = {"layers": list(range(N_LAYERS)), "encoding": enc}
    con.execute(
        "INSERT INTO runs (run_id, model_id, status, config) VALUES (?, 1, 'running', ?)",
        [run, json.dumps(config)],
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(sorted(toy.tokens[run])).tolist()
    chunks = [order[i : i + 17] for i in range(0, len(order), 17)]
    killed = chunks.pop(1) if kill else None
    for i, chunk in enumerate(chunks):
        _commit(wh, toy, run, chunk, enc)
        if killed is not None and i == 0:
            with pytest.raises(KeyboardInterrupt), wh.transaction():
                _write(con, toy, run, killed, enc)
                summaries.update_summaries(con, run, killed)
                raise KeyboardInterrupt  # the process dies before the commit
    if killed is not None:
        _commit(wh, toy, run, killed, enc)  # the resume redoes the missing phrases
    with wh.transaction() as con:
        summaries.finish_summaries(con, run)
        con.execute("UPDATE runs SET status = 'finished' WHERE run_id = ?", [run])


def _write(con, toy, run, pids, enc) -> None:
    append_arrow(
        con,
        "phrase_tokens",
        pa.table(
            {
                "run_id": pa.array([run] * len(pids), pa.int32()),
                "phrase_id": pa.array(pids, pa.int64()),
                "n_tokens": pa.array([toy.tokens[run][p] for p in pids], pa.int32()),
            }
        ),
    )
    for table, rows in _rows(toy, run, pids, enc).items():
        if table == "feature_acts_compact" and rows.num_rows:
            con.register("_t_rows", rows)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _t_rows")
            con.unregister("_t_rows")
        elif table != "feature_acts_compact":
            append_arrow(con, table, rows)


def _commit(wh, toy, run, pids, enc) -> None:
    with wh.transaction() as con:
        _write(con, toy, run, pids, enc)
        summaries.update_summaries(con, run, pids)


def _setup(wh, toy: Toy) -> None:
    con = wh.con
    con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('toy', 4, 8)")
    ph = list(toy.phrases.values())
    append_arrow(
        con,
        "phrases",
        pa.table(
            {
                "phrase_id": pa.array([p["phrase_id"] for p in ph], pa.int64()),
                "group_id": [p["group_id"] for p in ph],
                "lang": [p["lang"] for p in ph],
                "text": [p["text"] for p in ph],
                "origin_layer": pa.array([p["origin"] and p["origin"][0] for p in ph], pa.int32()),
                "origin_feature": pa.array(
                    [p["origin"] and p["origin"][1] for p in ph], pa.int32()
                ),
            }
        ),
    )


def _decoded(toy: Toy, run: int) -> Toy:
    """`toy` with run `run`'s values replaced by their compact decoding (numpy)."""
    keys = list(toy.acts[run])
    q_max, q_mean = encoding.encode_compact(
        np.array([toy.acts[run][k][0] for k in keys], np.float32),
        np.array([toy.acts[run][k][1] for k in keys], np.float32),
    )
    mx, mean = encoding.decode_compact(q_max, q_mean)
    out = Toy(phrases=toy.phrases, tokens=toy.tokens, acts=dict(toy.acts))
    out.acts[run] = {
        k: (float(mx[i]), float(mean[i]), toy.acts[run][k][2]) for i, k in enumerate(keys)
    }
    return out


def _summary_scores(wh, run, mode, stat, k):
    rows = wh.con.execute(
        "SELECT layer, lang, score, n_units, n_phrases FROM activation_scores_summary("
        "mode := ?, stat := ?, k := ?, at_run := ?)",
        [mode, stat, k, run],
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}, {(r[0], r[1]): (r[3], r[4]) for r in rows}


def _assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=REL, abs=1e-12), key


@pytest.mark.parametrize(
    ("enc", "seed"), [("lossless", 0), ("lossless", 1), ("lossless", 2), ("lean", 1)]
)
def test_summaries_equal_raw_rows(wh, enc, seed, monkeypatch):
    monkeypatch.setattr(summaries, "_MIN_FOLD", 10)  # fold mid-run too
    toy = random_toy(seed)
    _setup(wh, toy)
    ingest(wh, toy, 1, enc, seed)
    if enc == "lean":  # the single-token rows left feature_acts, yet every view reads them
        n_single = wh.scalar("SELECT count(*) FROM feature_acts_single")
        assert 0 < n_single < len(toy.acts[1])
        assert wh.scalar("SELECT count(*) FROM feature_values") == len(toy.acts[1])
    assert summaries.has_summaries(wh.con, 1, 16) and not summaries.has_summaries(wh.con, 1, 17)
    for mode in ("origin", "english-topk"):
        for stat in ("max", "mean"):
            for k in (1, 3, 16):
                if mode == "origin" and k != 16:
                    continue
                want = ref_scores(toy, 1, mode, stat, k)
                got, units = _summary_scores(wh, 1, mode, stat, k)
                _assert_close(got, want)
                raw = wh.con.execute(
                    "SELECT layer, lang, score, n_units, n_phrases FROM activation_scores("
                    "mode := ?, stat := ?, k := ?, at_run := 1)",
                    [mode, stat, k],
                ).fetchall()
                assert units == {(r[0], r[1]): (r[3], r[4]) for r in raw}
    # feature_lang_stats: per (layer, feature, lang) against numpy over the raw rows
    sums: dict[tuple[int, int, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for (p, layer, f), (mx, mean, n) in toy.acts[1].items():
        acc = sums[(layer, f, toy.phrases[p]["lang"])]
        acc[0] += float(np.float32(mx))
        acc[1] += float(np.float32(mean))
        acc[2] += 1
        acc[3] += n
    n_phr = defaultdict(int)
    n_tok = defaultdict(int)
    for p, n in toy.tokens[1].items():
        n_phr[toy.phrases[p]["lang"]] += 1
        n_tok[toy.phrases[p]["lang"]] += n
    got = {
        (r[0], r[1], r[2]): r[3:]
        for r in wh.con.execute(
            "SELECT layer, feature, lang, mean_act_max, mean_act_mean, n_active_phrases, "
            "fire_rate FROM feature_lang_stats_summary WHERE run_id = 1"
        ).fetchall()
    }
    assert got.keys() == sums.keys()
    for key, (smax, smean, n_act, n_tokens_active) in sums.items():
        lang = key[2]
        assert got[key][0] == pytest.approx(smax / n_phr[lang], rel=REL)
        assert got[key][1] == pytest.approx(smean / n_phr[lang], rel=REL)
        assert got[key][2] == n_act
        assert got[key][3] == pytest.approx(n_tokens_active / n_tok[lang], rel=REL)
    # one row per key (lape_counts reads them without summing again)
    keys = "SELECT DISTINCT run_id, layer, lang, feature FROM summary_feature_lang"
    assert wh.scalar("SELECT count(*) FROM summary_feature_lang") == wh.scalar(
        f"SELECT count(*) FROM ({keys})"
    )
    # LAPE over features and language_features read those sums: the same rows either way
    lape = (
        "SELECT layer, unit, lang, p, entropy, bar FROM lape_selected(top_rate := ?, "
        "filter_rate := 0.5, from_summaries := {}) WHERE run_id = 1 AND kind = 'features'"
    )
    for top_rate in (0.05, 0.5):
        raw = wh.con.execute(lape.format("false"), [top_rate]).fetchall()
        assert raw
        _assert_same_rows(wh.con.execute(lape.format("true"), [top_rate]).fetchall(), raw, 3)
    feats = (
        "SELECT layer, feature, lang_mean, en_mean, lang_fire_rate, lang_share, "
        "lang_active_phrases, en_active_phrases FROM language_features(?, stat := ?, "
        "from_summaries := {}) WHERE run_id = 1"
    )
    for lang in ("ml", "zh"):
        for stat in ("max", "mean"):
            raw = wh.con.execute(feats.format("false"), [lang, stat]).fetchall()
            assert raw
            got = wh.con.execute(feats.format("true"), [lang, stat]).fetchall()
            _assert_same_rows(got, raw, 2)


def _assert_same_rows(got: list[tuple], want: list[tuple], n_keys: int) -> None:
    """The same keys (the first `n_keys` columns) with the same values, floats to REL."""
    by_key = {r[:n_keys]: r[n_keys:] for r in want}
    assert len(by_key) == len(want)
    assert {r[:n_keys]: r[n_keys:] for r in got}.keys() == by_key.keys()
    for r in got:
        assert r[n_keys:] == pytest.approx(by_key[r[:n_keys]], rel=REL), r[:n_keys]


def test_compact_run_summaries_match_decoded_rows(wh):
    toy = random_toy(7)
    _setup(wh, toy)
    ingest(wh, toy, 1, "compact", 7)
    decoded = _decoded(toy, 1)
    for mode in ("origin", "english-topk"):
        for stat in ("max", "mean"):
            got, _ = _summary_scores(wh, 1, mode, stat, 16)
            want = ref_scores(decoded, 1, mode, stat, 16)
            assert got.keys() == want.keys()
            for key, value in want.items():
                # float32 decoding in DuckDB and numpy may differ by an ulp
                assert got[key] == pytest.approx(value, rel=1e-6), key
    assert wh.scalar("SELECT count(*) FROM feature_acts") == 0
    assert wh.scalar("SELECT count(*) FROM feature_values") == len(toy.acts[1])


def test_rebuild_equals_incremental(wh):
    toy = random_toy(3)
    _setup(wh, toy)
    ingest(wh, toy, 1, "lossless", 3)
    before = _summary_scores(wh, 1, "english-topk", "max", 16)
    with wh.transaction() as con:
        summaries.rebuild_summaries(con, 1)
    after = _summary_scores(wh, 1, "english-topk", "max", 16)
    assert after[1] == before[1]
    _assert_close(after[0], before[0])


def test_lape_and_language_features_read_the_summaries(wh):
    """queries.lape and queries.features take a finished run's numbers from the summaries:
    equal to the raw rows' until the summaries are changed behind their back."""
    from xling.analysis import queries

    toy = random_toy(5)
    _setup(wh, toy)
    ingest(wh, toy, 1, "lossless", 5)
    lape_before = queries.lape(wh, run=1, top_rate=0.5, filter_rate=0.5)
    feats_before = queries.features(wh, "ml", 0, run=1, min_support=1)
    assert not lape_before.empty and not feats_before.empty
    with wh.transaction() as con:  # the raw rows stay; only the summaries now say otherwise
        con.execute(
            "UPDATE summary_feature_lang SET n_active_tokens = 0, s_max = 0 WHERE lang = 'ml'"
        )
    assert wh.scalar("SELECT sum(n_active_tokens) FROM feature_lang_stats WHERE lang = 'ml'") > 0
    lape_after = queries.lape(wh, run=1, top_rate=0.5, filter_rate=0.5)
    assert "ml" in set(lape_before["lang"]) and "ml" not in set(lape_after["lang"])
    assert queries.features(wh, "ml", 0, run=1, min_support=1).empty  # lang_mean 0 everywhere
    # a run without finished summaries reads the raw rows
    wh.con.execute("UPDATE summary_runs SET finished = false WHERE run_id = 1")
    pd.testing.assert_frame_equal(
        queries.lape(wh, run=1, top_rate=0.5, filter_rate=0.5), lape_before
    )
    pd.testing.assert_frame_equal(queries.features(wh, "ml", 0, run=1, min_support=1), feats_before)


def test_compare_reads_the_summaries_where_they_hold_the_answer(wh, monkeypatch):
    """compare from the summaries (base: origin and english-topk; tuned: origin) gives the
    raw rows' numbers; a round's held-apart split is scored from the raw rows."""
    from xling.analysis import queries

    toy = random_toy(4)
    rng = np.random.default_rng(44)
    toy.tokens[2] = dict(toy.tokens[1])
    toy.acts[2] = {}
    for key, (_mx, _mean, n) in toy.acts[1].items():
        if rng.random() < 0.15:
            continue  # the tuned run lost this activation
        v = float(rng.integers(1, 12)) / 2
        toy.acts[2][key] = (v, v / toy.tokens[2][key[0]], n)
    _setup(wh, toy)
    ingest(wh, toy, 1, "lossless", 4)
    ingest(wh, toy, 2, "lean", 5)
    seen = []
    real_sql = wh.sql

    def spy(sql, params=None):
        if "compare_runs(" in sql:
            seen.append(sql)
        return real_sql(sql, params)

    monkeypatch.setattr(wh, "sql", spy)
    for mode in ("origin", "english-topk"):
        got = queries.compare(wh, 1, 2, mode=mode)
        flags = "base_summaries := true, tuned_summaries := " + (
            "true" if mode == "origin" else "false"
        )
        assert flags in seen[-1]
        with monkeypatch.context() as m:
            m.setattr(queries, "has_summaries", lambda *a, **k: False)
            want = queries.compare(wh, 1, 2, mode=mode)
        assert "base_summaries := false, tuned_summaries := false" in seen[-1]
        assert len(got) == len(want) > 0
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)
    # a round's held-apart split is scored from the raw rows: here every group is held
    # apart, so the numbers stay those of the summaries
    from_summaries = queries.compare(wh, 1, 2, mode="origin")
    groups = sorted({p["group_id"] for p in toy.phrases.values()})
    with wh.transaction() as con:
        con.execute(
            "INSERT INTO splits (split_id, base_run, seed, eval_frac, n_train, n_eval) "
            "VALUES (1, 1, 0, 1.0, 0, ?)",
            [len(groups)],
        )
        con.executemany("INSERT INTO split_groups VALUES (1, ?, 'eval')", [[g] for g in groups])
        con.execute(
            "INSERT INTO rounds (base_run, tuned_run, split_id, method, config) "
            "VALUES (1, 2, 1, 'steer', '{}')"
        )
    held = queries.compare(wh, 1, 2, mode="origin")
    assert "base_summaries := false, tuned_summaries := false" in seen[-1]
    assert (held["split_id"] == 1).all()
    pd.testing.assert_frame_equal(
        held.drop(columns="split_id"),
        from_summaries.drop(columns="split_id"),
        check_exact=False,
        rtol=1e-9,
    )
