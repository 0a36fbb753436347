"""Token premium and information parity against direct computations on the same rows; parity
on the tiny model, scored one phrase at a time with its own forward pass."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from analysis_data import TOY_CONFIGS, toy_data

from xling.analysis.capability import ParityConfig, bench_parity, capability, premium
from xling.warehouse import Warehouse, XlingError


def test_token_premium_matches_numpy(wh):
    toy = toy_data()
    toy.write(wh, configs=TOY_CONFIGS)
    got = premium(wh, 1).set_index("lang")
    groups = {}
    for pid, p in toy.phrases.items():
        groups.setdefault(p["group_id"], {})[p["lang"]] = toy.tokens[1][pid]
    for lang in ("en", "zh", "hi", "mr"):
        both = [g for g in groups.values() if "en" in g and lang in g]
        want = sum(g[lang] for g in both) / sum(g["en"] for g in both)
        assert got.loc[lang, "premium"] == pytest.approx(want, rel=1e-12)
        assert got.loc[lang, "n_groups"] == len(both)
    # a run that pooled BOS counted one token more per phrase: it is taken off again
    wh.con.execute("UPDATE runs SET config = '{\"include_bos\": true}' WHERE run_id = 2")
    wh.con.execute("UPDATE phrase_tokens SET n_tokens = n_tokens + 1 WHERE run_id = 2")
    again = premium(wh, 2).set_index("lang")
    assert again["premium"].to_dict() == pytest.approx(got["premium"].to_dict(), rel=1e-12)


def direct_nll(model, tokenizer, text: str) -> float:
    """Σ −ln p(token | BOS, earlier tokens), one phrase alone."""
    import torch

    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return -sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))


@pytest.fixture
def parity_wh(corpus_wh, tiny_model_dir):
    """corpus_wh with parity scored on its first 4 groups, and a run 1 of that model over
    every phrase (token counts of the tokenizer, activations at layer 0)."""
    table = bench_parity(
        corpus_wh, ParityConfig(model=str(tiny_model_dir), groups=4, device="cpu", batch_size=7)
    )
    model_id = int(table["model_id"].iloc[0])
    rng = np.random.default_rng(0)
    with corpus_wh.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, model_id, status, config) VALUES (1, ?, 'finished', ?)",
            [model_id, json.dumps({"layers": [0]})],
        )
        con.execute("INSERT INTO phrase_tokens SELECT 1, phrase_id, 2 + length(text) FROM phrases")
        ids = [r[0] for r in con.execute("SELECT phrase_id FROM phrases").fetchall()]
        for pid in ids:
            for f in rng.choice(20, size=5, replace=False):
                v = float(rng.uniform(1, 5))
                con.execute(
                    "INSERT INTO feature_acts VALUES (1, ?, 0, ?, ?, ?, 1)", [pid, int(f), v, v]
                )
    return corpus_wh, table


def test_parity_matches_direct_nll_on_the_tiny_model(parity_wh, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wh, table = parity_wh
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    phrases = wh.sql(
        "SELECT phrase_id, group_id, lang, text FROM phrases WHERE group_id IN "
        "(SELECT DISTINCT group_id FROM phrases ORDER BY group_id LIMIT 4)"
    )
    nll = {
        (r.group_id, r.lang): direct_nll(model, tokenizer, r.text)
        for r in phrases.itertuples(index=False)
    }
    want = {
        lang: np.mean([nll[(g, "en")] / nll[(g, lang)] for g in phrases["group_id"].unique()])
        for lang in phrases["lang"].unique()
    }
    got = dict(zip(table["lang"], table["parity"], strict=True))
    assert got.keys() == want.keys() and got["en"] == pytest.approx(1.0)
    for lang, value in want.items():
        assert got[lang] == pytest.approx(value, rel=1e-5), lang
    stored = wh.sql("SELECT phrase_id, nll_nats FROM phrase_nll ORDER BY phrase_id")
    assert len(stored) == 40
    by_pid = dict(
        zip(
            phrases["phrase_id"],
            zip(phrases["group_id"], phrases["lang"], strict=True),
            strict=True,
        )
    )
    for pid, value in stored.itertuples(index=False):
        assert value == pytest.approx(nll[by_pid[pid]], rel=1e-5)
    view = wh.sql("SELECT lang, parity, n_groups FROM information_parity").set_index("lang")
    assert view["parity"].to_dict() == pytest.approx(got, rel=1e-12)
    assert set(view["n_groups"]) == {4}
    bench = wh.sql("SELECT lang, value, n_samples FROM benchmarks WHERE task = 'parity'")
    assert dict(zip(bench["lang"], bench["value"], strict=True)) == pytest.approx(got, rel=1e-12)


def test_capability_and_correlate_read_parity(parity_wh):
    from xling.analysis.correlation import correlate

    wh, table = parity_wh
    df = capability(wh, 1).set_index("lang")
    assert df.loc["hi", "parity"] == pytest.approx(
        table.set_index("lang").loc["hi", "parity"], rel=1e-12
    )
    lengths = wh.sql(
        "SELECT p.lang, sum(length(text)) AS n FROM phrases p GROUP BY p.lang"
    ).set_index("lang")["n"]
    assert df.loc["hi", "premium"] == pytest.approx(
        (lengths["hi"] + 2 * 12) / (lengths["en"] + 2 * 12), rel=1e-12
    )
    out = correlate(wh, "parity", run=1, mode="english-topk").iloc[0]
    assert out["n"] == 9 and out["metric"] == "parity"
    assert out["pearson_lo"] <= out["pearson_r"] <= out["pearson_hi"]


def test_bench_parity_and_query_capability_cli(cli, db_path, tiny_model_dir):
    from tinymodel import cldr_phrases, insert_phrases

    with Warehouse(db_path) as wh:
        insert_phrases(wh, cldr_phrases(3))
        bench_parity(wh, ParityConfig(model=str(tiny_model_dir), device="cpu"))
        model_id = wh.scalar("SELECT max(model_id) FROM models")
        wh.con.execute(
            "INSERT INTO runs (run_id, model_id, status, config) VALUES (1, ?, 'finished', '{}')",
            [model_id],
        )
        wh.con.execute("INSERT INTO phrase_tokens SELECT 1, phrase_id, 3 FROM phrases")
        before = wh.sql("SELECT lang, value FROM benchmarks WHERE task = 'parity' ORDER BY lang")
    r = cli("bench", "parity", "--run", "1", "--groups", "2", "--device", "cpu", "--db", db_path)
    assert r.exit_code == 0, r.stderr
    assert "information parity" in r.stdout
    with Warehouse(db_path, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM phrase_nll") == 30  # 2 groups replaced, 1 kept
        after = wh.sql("SELECT lang, value FROM benchmarks WHERE task = 'parity' ORDER BY lang")
    assert len(after) == len(before) == 10
    r = cli("query", "capability", "--db", db_path, "--format", "csv")
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout))
    assert list(df.columns[:5]) == ["run_id", "lang", "resource_group", "premium", "parity"]
    assert set(df["premium"]) == {1.0} and df.set_index("lang").loc["en", "parity"] == 1.0
    r = cli("query", "capability", "--db", db_path, "--ref", "xx")
    assert r.exit_code == 1 and "no phrases in 'xx'" in r.stderr


def test_parity_needs_reference_phrases(corpus_wh, tiny_model_dir):
    with pytest.raises(XlingError, match="no phrases in 'xx'"):
        bench_parity(corpus_wh, ParityConfig(model=str(tiny_model_dir), ref="xx", device="cpu"))
