"""Benchmark correlation: the activation gap of a real (tiny) ingest against stored scores."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xling.analysis.benchmarks import Score, scores_table, store_scores
from xling.analysis.correlation import correlate, correlation_stats
from xling.warehouse import XlingError

# Hand-picked accuracies; ml and mr share a value so Spearman sees a tie.
ARC = {
    "en": 0.62,
    "es": 0.48,
    "it": 0.47,
    "ru": 0.45,
    "zh": 0.41,
    "id": 0.40,
    "ca": 0.43,
    "hi": 0.30,
    "mr": 0.27,
    "ml": 0.27,
}


@pytest.fixture
def run_wh(corpus_wh, tiny_model_dir, tiny_sae_dirs):
    """corpus_wh after a real ingest of the tiny model with its SAEs at layers 0-3."""
    from xling.ingest.runner import IngestConfig, run_ingest

    sae_parent = next(iter(tiny_sae_dirs.values())).parent
    run_ingest(
        corpus_wh, IngestConfig(model=str(tiny_model_dir), sae_dir=str(sae_parent), device="cpu")
    )
    return corpus_wh


def model_id(wh) -> int:
    return wh.run(wh.resolve_run(None))["model_id"]


def store(wh, task: str, values: dict[str, float], metric: str = "acc", steer=None) -> None:
    scores = [Score(task, lang, metric, v, n_samples=100) for lang, v in values.items()]
    with wh.transaction() as con:
        store_scores(con, scores_table(model_id(wh), scores, source="test", steer=steer))


def gaps(wh) -> pd.DataFrame:
    """(layer, lang, score, gap_vs_en_pct) straight from the analysis view."""
    return wh.sql(
        "SELECT layer, lang, score, gap_vs_en_pct FROM gap_by_lang WHERE run_id = ?",
        [wh.resolve_run(None)],
    )


def test_correlation_equals_scipy_on_the_same_vectors(run_wh):
    store(run_wh, "arc", ARC)
    store(run_wh, "arc", {"hi": 0.99}, steer="boost-hi")  # another condition: not used
    out = correlate(run_wh, "arc")
    assert out["layer"].tolist() == [0, 1, 2, 3]
    assert set(out["metric"]) == {"acc"} and set(out["against"]) == {"gap"}
    g = gaps(run_wh)
    for row in out.itertuples(index=False):
        sel = g[(g["layer"] == row.layer) & (g["lang"] != "en")].sort_values("lang")
        x = sel["gap_vs_en_pct"].to_numpy()
        y = np.array([ARC[lang] for lang in sel["lang"]])
        r, p = stats.pearsonr(x, y)
        rho, p_rho = stats.spearmanr(x, y)
        assert row.n == 9 and row.langs == ",".join(sel["lang"])
        assert row.pearson_r == pytest.approx(r, abs=1e-12)
        assert row.pearson_p == pytest.approx(p, rel=1e-9)
        assert row.spearman_rho == pytest.approx(rho, abs=1e-12)
        assert row.spearman_p == pytest.approx(p_rho, rel=1e-9)
    # the SQL view gives the same Pearson r with corr()
    sql_r = run_wh.sql(
        "SELECT layer, corr(gap_vs_en_pct, bench_value) AS r FROM gap_vs_benchmark "
        "WHERE run_id = ? AND task = 'arc' AND metric = 'acc' AND lang <> 'en' "
        "GROUP BY layer ORDER BY layer",
        [run_wh.resolve_run(None)],
    )
    assert sql_r["r"].to_numpy() == pytest.approx(out["pearson_r"].to_numpy(), abs=1e-9)


def test_against_score_keeps_english_and_one_layer(run_wh):
    store(run_wh, "arc", ARC)
    out = correlate(run_wh, "arc", layer=2, against="score")
    assert out["layer"].tolist() == [2] and out["n"].tolist() == [10]
    g = gaps(run_wh)
    sel = g[g["layer"] == 2].sort_values("lang")
    r, _ = stats.pearsonr(sel["score"], [ARC[lang] for lang in sel["lang"]])
    assert out["pearson_r"].iloc[0] == pytest.approx(r, abs=1e-12)


def test_bits_per_byte_against_the_layer_0_gap(run_wh):
    from xling.analysis.bpb import BpbConfig, bench_bpb

    bpb = bench_bpb(run_wh, BpbConfig(device="cpu"))  # the latest run's model and phrases
    assert set(bpb["model_id"]) == {model_id(run_wh)}
    out = correlate(run_wh, "bpb", layer=0)  # metric: the task's only one
    assert out[["metric", "n"]].values.tolist() == [["bpb", 9]]
    g = gaps(run_wh)
    sel = g[(g["layer"] == 0) & (g["lang"] != "en")].merge(bpb, on="lang")
    r, _ = stats.pearsonr(sel["gap_vs_en_pct"], sel["bpb"])
    assert out["pearson_r"].iloc[0] == pytest.approx(r, abs=1e-9)


def test_correlation_stats_on_a_hand_made_table():
    points = pd.DataFrame(
        {
            "layer": [0] * 4 + [1] * 2 + [2] * 3,
            "lang": ["a", "b", "c", "d", "a", "b", "a", "b", "c"],
            "x": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 5.0, 5.0, 5.0],
            "bench_value": [0.9, 0.7, 0.8, 0.1, 0.5, 0.4, 0.1, 0.2, 0.3],
        }
    )
    out = correlation_stats(points, "x").set_index("layer")
    assert out.loc[0, "pearson_r"] == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [0.9, 0.7, 0.8, 0.1])[0, 1], abs=1e-12
    )
    assert out.loc[0, "spearman_rho"] == pytest.approx(-0.8)
    assert out.loc[1, "n"] == 2 and math.isnan(out.loc[1, "pearson_r"])  # too few languages
    assert math.isnan(out.loc[2, "pearson_r"]) and math.isnan(out.loc[2, "spearman_rho"])


def test_correlation_errors(run_wh):
    with pytest.raises(XlingError, match=r"no 'arc' scores for model .* it has none"):
        correlate(run_wh, "arc")
    store(run_wh, "arc", ARC)
    store(run_wh, "arc", ARC, metric="acc_norm")
    store(run_wh, "flores", {"es": 50.0, "hi": 30.0, "ml": 20.0}, metric="chrf")
    store(run_wh, "flores", {"es": 40.0, "hi": 35.0, "ml": 21.0}, metric="bleu")
    with pytest.raises(XlingError, match=r"no 'mmlu' scores .* it has arc, flores"):
        correlate(run_wh, "mmlu")
    with pytest.raises(XlingError, match="has metrics bleu, chrf; pass --metric"):
        correlate(run_wh, "flores")
    with pytest.raises(XlingError, match="no metric 'f1'"):
        correlate(run_wh, "arc", metric="f1")
    with pytest.raises(XlingError, match="layer 7 is not in run"):
        correlate(run_wh, "arc", layer=7)
    with pytest.raises(XlingError, match="--against must be gap or score"):
        correlate(run_wh, "arc", against="size")
    assert correlate(run_wh, "arc", metric="acc_norm")["n"].tolist() == [9, 9, 9, 9]


def test_cli_query_and_plot(run_wh, cli, db_path, tmp_path):
    store(run_wh, "arc", ARC)
    expected = correlate(run_wh, "arc", layer=1)
    run_wh.close()
    result = cli(
        "query", "correlate", "--task", "arc", "--layer", "1", "--format", "csv", "--db", db_path
    )
    assert result.exit_code == 0, result.stderr
    got = pd.read_csv(io.StringIO(result.stdout))
    assert got["pearson_r"].iloc[0] == pytest.approx(expected["pearson_r"].iloc[0], abs=1e-12)
    out = tmp_path / "corr.png"
    result = cli(
        "plot", "correlate", "--task", "arc", "--layer", "1", "--out", out, "--db", db_path
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli(
        "plot",
        "correlate",
        "--task",
        "arc",
        "--layer",
        "1",
        "--out",
        tmp_path / "c.gif",
        "--db",
        db_path,
    )
    assert bad.exit_code == 1 and "use one of .png, .pdf, .svg" in bad.stderr


def test_the_public_api_spelling(run_wh):
    """`from xling import analysis; analysis.correlate(wh, ...)`, as the README writes it."""
    from xling import analysis

    store(run_wh, "arc", ARC)
    out = analysis.correlate(run_wh, "arc", layer=0, against="score")
    g = gaps(run_wh)
    sel = g[g["layer"] == 0].sort_values("lang")
    r, _ = stats.pearsonr(sel["score"], [ARC[lang] for lang in sel["lang"]])
    assert out["n"].tolist() == [10] and out["pearson_r"].iloc[0] == pytest.approx(r, abs=1e-12)
