"""The real runner keeps the summaries and writes the run's encoding: summaries of a killed and
resumed tiny-model ingest equal an uninterrupted one's and a rebuild from the raw rows; the
summary macros give the raw-row views' numbers; a compact run's rows decode to a lossless
run's within the stated bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xling.ingest.runner import IngestConfig, resume_ingest, run_ingest
from xling.warehouse import Warehouse
from xling.warehouse.encoding import MAX_REL_ERROR, MEAN_REL_ERROR
from xling.warehouse.errors import XlingError
from xling.warehouse.summaries import has_summaries, rebuild_summaries

SUMMARY_TABLES = {
    "summary_origin": "layer, lang, feature",
    "summary_topk_hits": "layer, lang, stat, rank",
    "summary_feature_lang": "layer, lang, feature",
}


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from xling.ingest.models import load_model

    return load_model(str(tiny_model_dir))


def _config(tiny_model_dir, tiny_sae_dirs, **kw) -> IngestConfig:
    return IngestConfig(
        model=str(tiny_model_dir),
        sae_dir=str(tiny_sae_dirs[0].parent),
        batch_size=8,
        chunk_rows=1500,
        **kw,
    )


def _fresh(path) -> Warehouse:
    from tinymodel import cldr_phrases, insert_phrases

    wh = Warehouse(path)
    insert_phrases(wh, cldr_phrases(12))
    # Origins on every group, so origin mode (and summary_origin) is exercised too.
    wh.con.execute(
        "UPDATE phrases SET origin_layer = hash(group_id) % 4, origin_feature = hash(group_id) % 128"
    )
    return wh


def _summaries(wh, run) -> dict[str, list[tuple]]:
    """Each summary table summed per key (partials and folded rows read alike), sorted."""
    out = {}
    for table, keys in SUMMARY_TABLES.items():
        sums = {
            "summary_origin": "sum(s_max), sum(s_mean), sum(n_targets)",
            "summary_topk_hits": "sum(act_sum), sum(n_units)",
            "summary_feature_lang": "sum(s_max), sum(s_mean), sum(n_active_phrases), "
            "sum(n_active_tokens)",
        }[table]
        out[table] = wh.con.execute(
            f"SELECT {keys}, {sums} FROM {table} WHERE run_id = ? GROUP BY ALL ORDER BY ALL",
            [run],
        ).fetchall()
    out["summary_topk"] = wh.con.execute(
        "SELECT layer, group_id, stat, rank, feature FROM summary_topk WHERE run_id = ? "
        "ORDER BY ALL",
        [run],
    ).fetchall()
    return out


def _assert_same(a: dict, b: dict) -> None:
    for table in a:
        assert len(a[table]) == len(b[table]), table
        assert len(a[table]) > 0, table
        for x, y in zip(a[table], b[table], strict=True):
            n_keys = len(SUMMARY_TABLES.get(table, "l, g, s, r, f").split(","))
            assert x[:n_keys] == y[:n_keys], table
            np.testing.assert_allclose(
                np.array(x[n_keys:], float), np.array(y[n_keys:], float), rtol=1e-5, err_msg=table
            )


def test_killed_and_resumed_run_summaries_equal_uninterrupted(
    tmp_path, lm, tiny_model_dir, tiny_sae_dirs
):
    cfg = _config(tiny_model_dir, tiny_sae_dirs)
    full = _fresh(tmp_path / "full.duckdb")
    run_ingest(full, cfg, model=lm)
    assert has_summaries(full.con, 1)
    assert full.scalar("SELECT count(DISTINCT chunk) FROM run_chunks WHERE run_id = 1") > 2

    def stop_after_two(p):
        if p.chunks >= 2:
            raise Interrupt

    part = _fresh(tmp_path / "part.duckdb")
    with pytest.raises(Interrupt):
        run_ingest(part, cfg, stop_after_two, model=lm)
    assert not has_summaries(part.con, 1)  # a failed run's summaries are not read
    resume_ingest(part, 1, model=lm)
    assert has_summaries(part.con, 1)
    got = _summaries(part, 1)
    _assert_same(_summaries(full, 1), got)

    # ... and equal the summaries rebuilt from the raw rows in one pass
    with part.transaction() as con:
        rebuild_summaries(con, 1)
    _assert_same(_summaries(part, 1), got)

    # the summary macros give the raw-row views' numbers on the real run
    cases = [("origin", "max", 16), ("origin", "mean", 16)]
    cases += [("english-topk", stat, k) for stat in ("max", "mean") for k in (1, 5, 16)]
    for mode, stat, k in cases:
        cols = "layer, lang, score, n_units, n_phrases"
        args = "mode := ?, stat := ?, k := ?, at_run := 1"
        raw = part.sql(
            f"SELECT {cols} FROM activation_scores({args}) ORDER BY layer, lang", [mode, stat, k]
        )
        summ = part.sql(
            f"SELECT {cols} FROM activation_scores_summary({args}) ORDER BY layer, lang",
            [mode, stat, k],
        )
        assert len(raw) == len(summ) > 0, (mode, stat, k)
        assert (raw[["layer", "lang"]].to_numpy() == summ[["layer", "lang"]].to_numpy()).all()
        np.testing.assert_allclose(summ.score, raw.score, rtol=1e-9)
        np.testing.assert_array_equal(summ.n_units, raw.n_units)
        np.testing.assert_array_equal(summ.n_phrases, raw.n_phrases)


def test_compact_run_decodes_to_lossless_within_bounds(tmp_path, lm, tiny_model_dir, tiny_sae_dirs):
    wh = _fresh(tmp_path / "w.duckdb")
    run_ingest(wh, _config(tiny_model_dir, tiny_sae_dirs), model=lm)
    run_ingest(wh, _config(tiny_model_dir, tiny_sae_dirs, encoding="compact"), model=lm)
    assert json.loads(wh.scalar("SELECT config FROM runs WHERE run_id = 2"))["encoding"] == (
        "compact"
    )
    assert wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = 2") == 0
    n = wh.scalar("SELECT count(*) FROM feature_acts_compact WHERE run_id = 2")
    assert n == wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = 1") > 0
    pair = wh.sql(
        "SELECT a.act_max AS max1, a.act_mean AS mean1, b.act_max AS max2, "
        "b.act_mean AS mean2, a.n_active = b.n_active AS same_n "
        "FROM feature_values a JOIN feature_values b USING (phrase_id, layer, feature) "
        "WHERE a.run_id = 1 AND b.run_id = 2"
    )
    assert len(pair) == n and pair.same_n.all()
    # float32 decoding adds at most a float32 rounding to the stated bound
    eps = 2.0**-23
    assert np.abs(pair.max2 / pair.max1 - 1).max() <= MAX_REL_ERROR + eps
    assert np.abs(pair.mean2 / pair.mean1 - 1).max() <= MEAN_REL_ERROR + eps
    assert has_summaries(wh.con, 2)
    # deleting the run removes its compact rows and summaries, not the other run's
    wh.delete_run(2)
    for table in ("feature_acts_compact", "summary_runs", "summary_topk", "summary_feature_lang"):
        assert wh.scalar(f"SELECT count(*) FROM {table} WHERE run_id = 2") == 0, table
    assert has_summaries(wh.con, 1)


def test_lean_run_reads_back_as_the_lossless_run(tmp_path, lm, tiny_model_dir, tiny_sae_dirs):
    wh = _fresh(tmp_path / "w.duckdb")
    run_ingest(wh, _config(tiny_model_dir, tiny_sae_dirs), model=lm)
    run_ingest(wh, _config(tiny_model_dir, tiny_sae_dirs, encoding="lean"), model=lm)
    single = wh.scalar("SELECT count(*) FROM feature_acts_single WHERE run_id = 2")
    whole = wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = 2")
    assert single > 0 and whole > 0
    assert single + whole == wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = 1")
    cols = "phrase_id, layer, feature, act_max, act_mean, n_active"
    one = wh.arrow(f"SELECT {cols} FROM feature_values WHERE run_id = 1 ORDER BY ALL")
    two = wh.arrow(f"SELECT {cols} FROM feature_values WHERE run_id = 2 ORDER BY ALL")
    assert one.equals(two)  # every value bit for bit (ordered by the values too)
    for mode, stat in (("english-topk", "max"), ("english-topk", "mean"), ("origin", "mean")):
        q = "SELECT layer, lang, score FROM activation_scores(mode := ?, stat := ?, k := 16, at_run := ?) ORDER BY layer, lang"
        a, b = wh.sql(q, [mode, stat, 1]), wh.sql(q, [mode, stat, 2])
        assert len(a) > 0 and a.equals(b), (mode, stat)
    # the aligned fine-tune reads a lean base run's English activations like a lossless one's
    from xling.finetune.align import aligned_pairs

    layer = int(wh.scalar("SELECT min(layer) FROM feature_values WHERE run_id = 1"))
    d_sae = int(wh.scalar("SELECT max(feature) + 1 FROM feature_values WHERE run_id = 1"))
    for stat in ("max", "mean"):
        a = aligned_pairs(wh, 1, layer, None, stat, d_sae)
        b = aligned_pairs(wh, 2, layer, None, stat, d_sae)
        assert len(a) > 0 and a.a_orig.any()
        np.testing.assert_array_equal(a.a_orig, b.a_orig)
    wh.delete_run(2)
    assert wh.scalar("SELECT count(*) FROM feature_acts_single") == 0


def test_compact_refused_past_its_token_bound(tiny_model_dir):
    with pytest.raises(XlingError, match=r"bad --encoding: .*300 tokens"):
        IngestConfig(model=str(tiny_model_dir), encoding="compact", max_tokens=301)
    with pytest.raises(XlingError, match="bad --encoding: unknown encoding"):
        IngestConfig(model=str(tiny_model_dir), encoding="zip")


QUERIES = ("scores", "gap", "gap_by_lang", "languages")


@pytest.mark.parametrize("seed", [0, 1])
def test_queries_from_summaries_equal_raw_rows(wh, seed, monkeypatch):
    """Every score query reads the summaries where they can answer and gives the raw rows'
    numbers; other modes, refs and k read the raw rows (random warehouses, a killed chunk)."""
    from test_summaries import _setup, ingest, random_toy

    from xling.analysis import queries

    toy = random_toy(seed)
    _setup(wh, toy)
    ingest(wh, toy, 1, "lossless", seed)
    cases = [
        ("origin", 16, "en", True),
        ("english-topk", 1, "en", True),
        ("english-topk", 16, "en", True),
        ("english-topk", 17, "en", False),  # past the summaries' k_max
        ("english-topk", 3, "es", False),  # another reference language
        ("group-topk", 3, "en", False),
    ]
    for mode, k, ref, summarised in cases:
        sel = queries._selection(wh, 1, None, mode, "max", k, ref)
        assert sel.from_summaries is summarised, (mode, k, ref)
        for stat in ("max", "mean"):
            for name in QUERIES:
                fn = getattr(queries, name)
                kw = {"run": 1, "mode": mode, "stat": stat, "k": k, "ref": ref}
                got = fn(wh, **kw)
                with monkeypatch.context() as m:
                    m.setattr(queries, "has_summaries", lambda *_a, **_k: False)
                    want = fn(wh, **kw)
                assert list(got.columns) == list(want.columns), name
                assert len(got) == len(want) > 0, (name, mode, k, ref)
                for col in want.columns:
                    if want[col].dtype.kind in "fiu":
                        np.testing.assert_allclose(
                            got[col].to_numpy(float),
                            want[col].to_numpy(float),
                            rtol=1e-9,
                            err_msg=f"{name} {mode} {k} {ref} {col}",
                        )
                    else:
                        assert (got[col].to_numpy() == want[col].to_numpy()).all(), col


def test_cli_encoding(cli, corpus_wh, db_path, tiny_model_dir, tiny_sae_dirs):
    """`--encoding compact` through the CLI, read by `query gap`; a bad name is one line."""
    corpus_wh.close()
    before = db_path.read_bytes()
    base = ["ingest", "--db", db_path, "--model", tiny_model_dir]
    base += ["--sae-dir", tiny_sae_dirs[0].parent, "--layers", "0,2", "--limit", "20"]
    res = cli(*base, "--encoding", "zip")
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "unknown encoding 'zip'" in res.stderr
    assert db_path.read_bytes() == before
    res = cli(*base, "--encoding", "compact")
    assert res.exit_code == 0, res.stderr
    with Warehouse(db_path) as w:
        assert w.scalar("SELECT count(*) FROM feature_acts") == 0
        assert w.scalar("SELECT count(DISTINCT layer) FROM feature_acts_compact") == 2
    res = cli("query", "gap", "--db", db_path, "--mode", "english-topk")
    assert res.exit_code == 0, res.stderr
    assert "english-topk" in res.stdout
