"""`xling query`: invoke, then check what it printed against the toy warehouse's hand values.

The toy (tests/analysis_data.py) has runs 1 and 2 over the same phrases; run 2 is the latest
finished one. Errors must be one line on stderr with exit code 1.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from analysis_data import TOY_CONFIGS, neuron_probs, toy_data, write_neurons

from xling.warehouse import Warehouse


@pytest.fixture
def toy_db(db_path):
    with Warehouse(db_path) as wh:
        toy_data().write(wh, configs=TOY_CONFIGS)
    return db_path


def _csv(result) -> pd.DataFrame:
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout))


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert text in lines[0], lines[0]


def test_gap_table_names_model_run_and_mode(cli, toy_db):
    r = cli("query", "gap", "--db", toy_db, "--run", "1")
    assert r.exit_code == 0, r.stderr
    assert "activation gap — run 1 (toy), origin, ref en, max" in r.stdout
    assert " 75.0 " in r.stdout  # English, the reference, left out of H


def test_gap_defaults_to_the_latest_finished_run(cli, toy_db):
    r = cli("query", "gap", "--db", toy_db, "--layer", "0")
    assert r.exit_code == 0, r.stderr
    assert "run 2 (toy)" in r.stdout


def test_gap_csv_json_and_options(cli, toy_db):
    df = _csv(cli("query", "gap", "--db", toy_db, "--run", "1", "--include-ref", "-f", "csv"))
    assert df["gap_pct"].tolist() == pytest.approx([100 * (3.75 - 0.625) / 3.75, 50.0])
    assert df["high_langs"].tolist() == ["en,zh", "en"]
    r = cli(
        "query",
        "gap",
        "--db",
        toy_db,
        "--run",
        "1",
        "--layer",
        "1",
        "--mode",
        "english-topk",
        "--k",
        "2",
        "--include-ref",
        "-f",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 1 and rows[0]["mode"] == "english-topk"
    assert rows[0]["gap_pct"] == pytest.approx(100 * (0.75 - 0.25) / 0.75)
    mean = _csv(
        cli(
            "query",
            "gap",
            "--db",
            toy_db,
            "--run",
            "1",
            "--stat",
            "mean",
            "--include-ref",
            "-f",
            "csv",
        )
    )
    # act_mean = act_max / 2 everywhere in the toy: the same gap
    assert mean["gap_pct"].tolist() == pytest.approx(df["gap_pct"].tolist())
    assert mean["high_score"].tolist() == pytest.approx((df["high_score"] / 2).tolist())


def test_languages_is_the_appendix_d_table(cli, toy_db):
    r = cli("query", "languages", "--db", toy_db, "--run", "1", "-f", "markdown")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("| run_id | lang | name |")
    df = _csv(cli("query", "languages", "--db", toy_db, "--run", "1", "-f", "csv"))
    mr = df.set_index("lang").loc["mr"]
    assert mr["mean_gap_pct"] == pytest.approx(65.0) and mr["std_gap_pct"] == pytest.approx(
        450**0.5
    )


def test_similarity_and_matrix(cli, toy_db):
    df = _csv(cli("query", "similarity", "--db", toy_db, "--run", "1", "--layer", "0", "-f", "csv"))
    assert set(df["lang"]) == {"zh", "hi", "mr"} and set(df["layer"]) == {0}
    assert list(df.columns[1:7]) == ["layer", "lang", "sim", "baseline", "centred", "retrieval"]
    ci = _csv(
        cli(
            "query",
            "similarity",
            "--db",
            toy_db,
            "--run",
            "1",
            "--ci",
            "--n-boot",
            "50",
            "-f",
            "csv",
        )
    )
    for name in ("sim", "baseline", "centred", "retrieval"):
        assert (ci[f"{name}_lo"] <= ci[name] + 1e-12).all() and (
            ci[name] <= ci[f"{name}_hi"] + 1e-12
        ).all()
    wide = _csv(
        cli(
            "query",
            "similarity",
            "--db",
            toy_db,
            "--run",
            "1",
            "--matrix",
            "--layer",
            "0",
            "-f",
            "csv",
        )
    )
    assert list(wide.columns[:4]) == ["run_id", "layer", "lang_a", "lang_b"]
    cells = wide.set_index(["lang_a", "lang_b"])
    assert cells.loc[("zh", "zh"), "sim"] == pytest.approx(1.0, rel=1e-6)
    assert cells.loc[("en", "hi"), "sim"] == pytest.approx(
        df.set_index("lang").loc["hi", "sim"], rel=1e-9
    )
    r = cli("query", "similarity", "--db", toy_db, "--run", "1", "--matrix", "--layer", "0")
    assert r.exit_code == 0 and "matrix (sim)" in r.stdout


def test_compare_and_features(cli, toy_db):
    df = _csv(
        cli(
            "query",
            "compare",
            "--db",
            toy_db,
            "--base",
            "1",
            "--tuned",
            "2",
            "--layer",
            "0",
            "-f",
            "csv",
        )
    ).set_index("lang")
    assert df.loc["zh", "improvement_pct"] == pytest.approx(50.0)
    assert df.loc["en", "en_retention_pct"] == pytest.approx(90.0)
    feats = _csv(
        cli(
            "query",
            "features",
            "--db",
            toy_db,
            "--run",
            "1",
            "--lang",
            "hi",
            "--layer",
            "0",
            "--under",
            "--limit",
            "2",
            "--min-support",
            "1",
            "-f",
            "csv",
        )
    )
    assert feats["feature"].tolist()[0] == 7 and len(feats) == 2
    # by default a feature needs 2 phrases: only f7 fired on two English phrases (p1, p5)
    strict = _csv(
        cli(
            "query",
            "features",
            "--db",
            toy_db,
            "--run",
            "1",
            "--lang",
            "hi",
            "--layer",
            "0",
            "--under",
            "-f",
            "csv",
        )
    )
    assert strict["feature"].tolist() == [7] and strict["en_active_phrases"].tolist() == [2]
    top = _csv(
        cli(
            "query",
            "feature",
            "--db",
            toy_db,
            "--run",
            "1",
            "--layer",
            "0",
            "--feature",
            "5",
            "--top",
            "1",
            "-f",
            "csv",
        )
    )
    # f5 at layer 0 fires on p1 (en 4.0), p2 (zh 2.0), p10 (zh 2.0), p4 (mr 1.0), p11 (hi 1.0)
    assert top[["lang", "phrase_id", "act", "n_lang_active"]].values.tolist() == [
        ["en", 1, 4.0, 1],
        ["hi", 11, 1.0, 1],
        ["mr", 4, 1.0, 1],
        ["zh", 2, 2.0, 2],
    ]


def test_lape_neurons_of_a_language(cli, db_path):
    with Warehouse(db_path) as wh:
        write_neurons(wh, neuron_probs())
    df = _csv(
        cli(
            "query",
            "lape",
            "--db",
            db_path,
            "--kind",
            "neurons",
            "--lang",
            "hi",
            "--top-rate",
            "0.04",
            "-f",
            "csv",
        )
    )
    assert list(df.columns[:4]) == ["run_id", "layer", "neuron", "lang"]
    assert sorted(zip(df["layer"], df["neuron"], strict=True)) == [(0, 3), (0, 7), (1, 9)]
    # neuron (1, 9) belongs to Hindi and Marathi: both listed though only Hindi's row shows
    assert dict(zip(df["neuron"], df["langs"], strict=True)) == {3: "hi", 7: "hi", 9: "hi,mr"}
    r = cli("query", "lape", "--db", db_path, "--kind", "neurons", "--top-rate", "0.04")
    assert r.exit_code == 0 and "LAPE neurons, top rate 0.04 — run 1 (toy)" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gap", "--run", "9"), "no run 9; `xling runs list` shows the runs"),
        (("gap", "--run", "1", "--layer", "7"), "layer 7 is not in run 1; its layers are 0-1"),
        (
            ("languages", "--run", "1", "--layer", "3"),
            "layer 3 is not in run 1; its layers are 0-1",
        ),
        (("similarity", "--run", "2"), "run 2 has no residuals; ingest with --residuals"),
        (("similarity", "--run", "1", "--layer", "5"), "layer 5 has no residuals in run 1"),
        (("lape", "--kind", "neurons", "--run", "1"), "run 1 has no neuron stats"),
        (("lape", "--run", "1", "--lang", "ru"), "run 1 has no phrases in 'ru'"),
        (("lape", "--run", "1", "--top-rate", "2"), "--top-rate must be in (0, 1]"),
        (("compare", "--base", "1", "--tuned", "1"), "two different runs"),
        (("compare", "--base", "1", "--tuned", "2", "--layer", "4"), "shared layers are 0-1"),
        (("features", "--run", "1", "--lang", "xx", "--layer", "0"), "no phrases in 'xx'"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(cli, toy_db, args, message):
    _one_line_error(cli("query", *args, "--db", toy_db), message)


def test_missing_warehouse_and_usage_errors(cli, tmp_path):
    _one_line_error(cli("query", "gap", "--db", tmp_path / "none.duckdb"), "no warehouse at")
    r = cli("query", "gap", "--db", tmp_path / "none.duckdb", "--mode", "topk")
    assert r.exit_code == 2  # a usage error: click names the choices


def test_query_leaves_the_warehouse_unchanged(cli, toy_db):
    before = toy_db.read_bytes()
    assert cli("query", "gap", "--db", toy_db).exit_code == 0
    assert toy_db.read_bytes() == before


def test_ci_columns_in_query_and_export(cli, toy_db, tmp_path):
    df = _csv(
        cli(
            "query",
            "gap",
            "--db",
            toy_db,
            "--run",
            "1",
            "--mode",
            "group-topk",
            "--ci",
            "--n-boot",
            "100",
            "--seed",
            "3",
            "-f",
            "csv",
        )
    )
    assert list(df.columns[:7]) == [
        "run_id",
        "layer",
        "mode",
        "ref",
        "high_score",
        "low_score",
        "gap_pct",
    ]
    assert {"gap_pct_lo", "gap_pct_hi", "high_langs", "low_langs"} <= set(df.columns)
    assert set(df["mode"]) == {"group-topk"}
    langs = _csv(
        cli("query", "languages", "--db", toy_db, "--run", "1", "--ref", "zh", "--ci", "-f", "csv")
    )
    assert "zh" not in set(langs["lang"]) and set(langs["ref"]) == {"zh"}
    assert {"mean_gap_pct_lo", "mean_gap_pct_hi"} <= set(langs.columns)
    out = tmp_path / "gap.csv"
    r = cli(
        "export",
        "gap_by_layer",
        "--db",
        toy_db,
        "--run",
        "1",
        "--ci",
        "--n-boot",
        "100",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.stderr
    exported = pd.read_csv(out)
    direct = _csv(
        cli("query", "gap", "--db", toy_db, "--run", "1", "--ci", "--n-boot", "100", "-f", "csv")
    )
    assert exported["gap_pct_lo"].tolist() == pytest.approx(
        direct["gap_pct_lo"].tolist(), nan_ok=True
    )
    _one_line_error(
        cli("export", "phrases", "--db", toy_db, "--ci", "--out", tmp_path / "p.csv"),
        "has no interval",
    )
    assert not (tmp_path / "p.csv").exists()
