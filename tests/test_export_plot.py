"""`xling export` and `xling plot`: files written, read back and checked; bad paths refused."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_data import TOY_CONFIGS, paper_like, toy_data

from xling.analysis.formats import column_digits, format_frame
from xling.warehouse import Warehouse


@pytest.fixture
def toy_db(db_path):
    with Warehouse(db_path) as wh:
        toy_data().write(wh, configs=TOY_CONFIGS)
    return db_path


@pytest.fixture(scope="module")
def paper_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "paper.duckdb"
    with Warehouse(path) as wh:
        paper_like().write(
            wh, configs={1: {"layers": list(range(6))}, 2: {"layers": list(range(6))}}
        )
        wh.con.execute("UPDATE models SET name = 'google/gemma-2-2b'")
    return path


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr


def _view(db, sql, params=None) -> pd.DataFrame:
    with Warehouse(db, read_only=True) as wh:
        return wh.sql(sql, params)


# -- export ------------------------------------------------------------------------------------


def test_export_parquet_and_csv_hold_the_views_rows(cli, toy_db, tmp_path):
    want = _view(toy_db, "SELECT * FROM gap_by_layer WHERE run_id = 2 ORDER BY layer")
    r = cli("export", "gap_by_layer", "--db", toy_db, "--out", tmp_path / "g.parquet")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"wrote 2 rows of gap_by_layer to {tmp_path / 'g.parquet'}"
    got = pq.read_table(tmp_path / "g.parquet").to_pandas().sort_values("layer")
    assert got["gap_pct"].tolist() == pytest.approx(want["gap_pct"].tolist(), nan_ok=True)
    assert set(got["run_id"]) == {2}
    r = cli(
        "export",
        "gap_by_lang",
        "--db",
        toy_db,
        "--run",
        "1",
        "--format",
        "csv",
        "--out",
        tmp_path / "by_lang.txt",
    )
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(tmp_path / "by_lang.txt")
    assert set(df["run_id"]) == {1}
    assert df.set_index(["layer", "lang"]).loc[(0, "hi"), "gap_vs_en_pct"] == pytest.approx(95)


def test_export_json_all_runs_and_base_tables(cli, toy_db, tmp_path):
    assert (
        cli(
            "export", "gap_by_layer", "--db", toy_db, "--all-runs", "--out", tmp_path / "g.json"
        ).exit_code
        == 0
    )
    rows = json.loads((tmp_path / "g.json").read_text())
    assert {r["run_id"] for r in rows} == {1, 2} and len(rows) == 4
    assert cli("export", "phrases", "--db", toy_db, "--out", tmp_path / "p.csv").exit_code == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 13


def test_export_latex_is_a_booktabs_table(cli, toy_db, tmp_path):
    r = cli(
        "export", "gap_by_lang_summary", "--db", toy_db, "--run", "1", "--out", tmp_path / "t.tex"
    )
    assert r.exit_code == 0, r.stderr
    tex = (tmp_path / "t.tex").read_text()
    for line in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\label{tab:gap_by_lang_summary}",
        r"\caption{gap by lang summary (run 1, toy)}",
    ):
        assert line in tex
    mr = next(line for line in tex.splitlines() if line.startswith("1 & mr &"))
    assert "65.00" in mr and "21.21" in mr  # mean and sample std, two decimals
    r = cli(
        "export",
        "gap_by_lang_summary",
        "--db",
        toy_db,
        "--run",
        "1",
        "--format",
        "markdown",
        "--caption",
        "ignored",
        "--out",
        tmp_path / "t.md",
    )
    assert (tmp_path / "t.md").read_text().startswith("| run_id | lang |")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "--out", "{tmp}/x.csv"), "no table or view named 'nope'; choose one of"),
        (("gap_by_layer", "--out", "{tmp}"), "is a directory; pass a file path"),
        (("gap_by_layer", "--out", "{tmp}/missing/x.csv"), "does not exist"),
        (
            ("gap_by_layer", "--out", "/proc/xling-export.csv"),
            "cannot write /proc/xling-export.csv",
        ),
        (("gap_by_layer", "--out", "{tmp}/x.dat"), "cannot tell the format from 'x.dat'"),
        (("languages", "--run", "1", "--out", "{tmp}/x.csv"), "languages has no run_id column"),
        (("gap_by_layer", "--run", "9", "--out", "{tmp}/x.csv"), "no run 9"),
        (("_xling_meta", "--out", "{tmp}/x.csv"), "no table or view named '_xling_meta'"),
        (('gap_by_layer"; DROP TABLE runs; --', "--out", "{tmp}/x.csv"), "no table or view named"),
    ],
)
def test_export_bad_input(cli, toy_db, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _one_line_error(cli("export", *args, "--db", toy_db), message)
    assert not list(tmp_path.glob("*.xling-tmp")) and not (tmp_path / "x.csv").exists()
    assert _view(toy_db, "SELECT count(*) AS n FROM runs")["n"].iloc[0] == 2


def test_latex_rounds_each_column_to_its_scale():
    df = pd.DataFrame(
        {
            "lang": ["a_b", "c"],
            "gap_pct": [12.3456, -3.0],
            "similarity": [0.0012345, 0.5],
            "n": [3, 4],
        }
    )
    tex = format_frame(df, "latex", name="demo")
    assert r"a\_b & 12.35 & 0.0012 & 3 \\" in tex
    assert r"c & $-$3.00 & 0.5000 & 4 \\" in tex
    assert column_digits(pd.Series([float("nan"), 0.0]), 2) == 2


# -- plot ----------------------------------------------------------------------------------------

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


@pytest.mark.parametrize(
    ("args", "suffix"),
    [
        (("gap", "--run", "1"), ".png"),
        (("gap", "--run", "1", "--mode", "english-topk", "--stat", "mean"), ".svg"),
        (("similarity", "--run", "1"), ".pdf"),
        (("languages", "--run", "1"), ".png"),
        (("languages", "--run", "1", "--layer", "2"), ".pdf"),
        (("compare", "--base", "1", "--tuned", "2"), ".png"),
        (("compare", "--base", "1", "--tuned", "2", "--layer", "0"), ".svg"),
    ],
)
def test_plots_write_figures(cli, paper_db, tmp_path, args, suffix):
    out = tmp_path / f"fig{suffix}"
    r = cli("plot", *args, "--db", paper_db, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    assert data.startswith(MAGIC[suffix]) and len(data) > 5000


def test_plot_titles_name_model_and_run(cli, paper_db, tmp_path):
    out = tmp_path / "gap.svg"  # SVG keeps text as <text>
    assert cli("plot", "gap", "--run", "1", "--db", paper_db, "--out", out).exit_code == 0
    svg = out.read_text()
    assert "Activation gap by layer — google/gemma-2-2b, run 1 (origin, max)" in svg
    assert "Hindi" in svg and "low-resource (W)" in svg
    out = tmp_path / "cmp.svg"
    assert (
        cli(
            "plot", "compare", "--base", "1", "--tuned", "2", "--db", paper_db, "--out", out
        ).exit_code
        == 0
    )
    assert "vs base run 1" in out.read_text() and "English retention" in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gap", "--out", "{tmp}/fig.gif"), "has no known extension; use one of .png, .pdf, .svg"),
        (("gap", "--out", "{tmp}"), "is a directory"),
        (("gap", "--out", "/proc/xling-fig.png"), "cannot write /proc/xling-fig.png"),
        (("similarity", "--run", "2", "--out", "{tmp}/s.png"), "run 2 has no residuals"),
        (("compare", "--base", "1", "--tuned", "9", "--out", "{tmp}/c.png"), "no run 9"),
    ],
)
def test_plot_bad_input(cli, paper_db, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _one_line_error(cli("plot", *args, "--db", paper_db), message)
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
