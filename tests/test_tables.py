"""Tables for people and papers: number formats, escaping, order, terminal layout, and output
paths that can never destroy the warehouse or another file."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import pandas as pd
import pytest
from analysis_data import paper_like

from xling.analysis.formats import (
    Grid,
    cell_texts,
    format_frame,
    latex_escape,
    markdown_escape,
)
from xling.warehouse import Warehouse

PAPER_ORDER = ["en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi"]


@pytest.fixture(scope="module")
def paper_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "paper.duckdb"
    with Warehouse(path) as wh:
        paper_like().write(
            wh, configs={1: {"layers": list(range(6))}, 2: {"layers": list(range(6))}}
        )
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr


# -- numbers ----------------------------------------------------------------------------------


def _cells(values, digits=4):
    grid = Grid.from_frame(pd.DataFrame({"x": values}))
    return [row[0] for row in cell_texts(grid, digits)]


def test_small_values_keep_their_digits_in_scientific_notation():
    assert _cells([1.2e-9, 0.034, 0.5123456]) == ["1.2e-09", "0.0340", "0.5123"]
    assert _cells([3.3e-12, 0.2]) == ["3.3e-12", "0.2000"]  # a tiny p-value stays visible
    assert _cells([488.123456, 1.5e16]) == ["488.1235", "1.5e+16"]


def test_user_rounding_is_kept_and_no_negative_zero():
    assert _cells([27.2, 3.1, 100.0]) == ["27.2", "3.1", "100.0"]
    # a column of small values gets decimals for two significant digits (at most six)
    assert _cells([-0.00001, 0.123456789]) == ["-0.000010", "0.123457"]
    assert _cells([-0.0, 1.333333]) == ["0.0000", "1.3333"]  # no -0.0000
    assert _cells([-0.0, 2.0]) == ["0.0", "2.0"]


def test_nan_and_inf_are_named_and_null_is_empty():
    assert _cells([math.nan, math.inf, -math.inf, 1.23456]) == ["NaN", "inf", "-inf", "1.2346"]
    import pyarrow as pa

    grid = Grid.from_arrow(pa.table({"x": pa.array([None, math.nan, 2.5])}))
    assert [r[0] for r in cell_texts(grid, 4)] == ["", "NaN", "2.5"]
    text = format_frame(pd.DataFrame({"x": [math.nan, math.inf]}), "json")
    assert json.loads(text) == [{"x": "NaN"}, {"x": "Infinity"}]
    tex = format_frame(pd.DataFrame({"x": [1.2e-9, -math.inf, -2.5]}), "latex", name="t")
    assert r"$1.2\times 10^{-9}$ \\" in tex and r"$-\infty$ \\" in tex and r"$-$2.50 \\" in tex


# -- escaping ---------------------------------------------------------------------------------


def test_latex_escaping_is_one_pass():
    assert latex_escape(r"a\b{c}") == r"a\textbackslash{}b\{c\}"
    assert latex_escape("50% & $5 #1 ~ ^ _ <>|") == (
        r"50\% \& \$5 \#1 \textasciitilde{} \textasciicircum{} \_ \textless{}\textgreater{}"
        r"\textbar{}"
    )
    df = pd.DataFrame({"na_me": ["x_y", "a\nb"], "v": [1, 2]})
    tex = format_frame(df, "latex", name="my table", caption="50% of {it}")
    assert r"\caption{50\% of \{it\}}" in tex and r"\label{tab:my-table}" in tex
    assert r"na\_me & v \\" in tex and r"x\_y & 1 \\" in tex and r"a b & 2 \\" in tex


def test_markdown_escaping_keeps_the_table_whole():
    assert markdown_escape("a|b") == r"a\|b"
    assert markdown_escape("run_id") == "run_id"  # intraword: no emphasis in GFM
    assert markdown_escape("_x_ *y* [z] <b> `c`") == r"\_x\_ \*y\* \[z\] \<b\> \`c\`"
    md = format_frame(pd.DataFrame({"t": ["a|b\nc"], "v": [1.5]}), "markdown")
    lines = md.splitlines()
    assert len(lines) == 3 and lines[2] == r"| a\|b c | 1.5 |"
    assert all(line.count("|") - line.count(r"\|") == 3 for line in lines)


def test_json_export_of_uuid_and_blob_columns(cli, tmp_path):
    db = tmp_path / "w.duckdb"
    with Warehouse(db) as wh:
        wh.con.execute(
            "CREATE TABLE odd AS SELECT '6f1c5b44-8a53-4f3e-9d0e-3d2c1b0a9f88'::UUID AS u, "
            "'\\xAB\\x01'::BLOB AS b, 1.5::DECIMAL(4, 2) AS d, DATE '2026-01-02' AS day, "
            "[1.0, 2.0]::FLOAT[2] AS vec, 'nan'::DOUBLE AS x, NULL::DOUBLE AS y"
        )
    r = cli("export", "odd", "--db", db, "--out", tmp_path / "odd.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "odd.json").read_text()) == [
        {
            "u": "6f1c5b44-8a53-4f3e-9d0e-3d2c1b0a9f88",
            "b": "0xab01",
            "d": "1.50",
            "day": "2026-01-02",
            "vec": [1.0, 2.0],
            "x": "NaN",
            "y": None,
        }
    ]
    r = cli("export", "odd", "--db", db, "--out", tmp_path / "odd.md")
    assert r.exit_code == 0, r.stderr
    assert "| 6f1c5b44-8a53-4f3e-9d0e-3d2c1b0a9f88 | 0xab01 |" in (tmp_path / "odd.md").read_text()


# -- order and options ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["latex", "csv", "json", "parquet"])
@pytest.mark.parametrize("name", ["gap_by_lang", "gap_by_lang_summary", "phrase_tokens"])
def test_exports_are_ordered_and_byte_identical(cli, paper_db, tmp_path, name, fmt):
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    for out in (a, b):
        r = cli("export", name, "--db", paper_db, "--run", "1", "-f", fmt, "--out", out)
        assert r.exit_code == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    if fmt != "csv":
        return
    df = pd.read_csv(a)
    if "layer" in df.columns:
        assert df["layer"].tolist() == sorted(df["layer"])
    if "lang" in df.columns:
        keys = ["layer"] if "layer" in df.columns else []
        for _, g in df.groupby(keys) if keys else [(None, df)]:
            langs = list(dict.fromkeys(g["lang"]))
            assert langs == [x for x in PAPER_ORDER if x in langs]


def test_export_takes_the_query_options_and_matches_query(cli, paper_db, tmp_path):
    opts = ["--mode", "english-topk", "--stat", "mean", "--k", "3"]
    r = cli(
        "export", "gap_by_layer", "--db", paper_db, "--run", "1", *opts, "-o", tmp_path / "g.tex"
    )
    assert r.exit_code == 0, r.stderr
    tex = (tmp_path / "g.tex").read_text()
    assert "mode english-topk, stat mean, k 3" in tex.splitlines()[2]
    q = cli("query", "gap", "--db", paper_db, "--run", "1", *opts, "-f", "latex")
    assert q.exit_code == 0, q.stderr

    def body(text):
        lines = text.splitlines()
        return lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]

    assert body(tex) == body(q.stdout) and len(body(tex)) == 6
    default = cli(
        "export", "gap_by_layer", "--db", paper_db, "--run", "1", "-o", tmp_path / "d.tex"
    )
    assert default.exit_code == 0
    assert body((tmp_path / "d.tex").read_text()) != body(tex)
    _one_line_error(
        cli("export", "phrases", "--db", paper_db, "--stat", "mean", "-o", tmp_path / "p.csv"),
        "phrases is not a metric view",
    )


# -- terminal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("width", ["80", "120"])
def test_terminal_tables_never_cut_a_number(width, capsys, monkeypatch):
    from xling.cli.common import render

    monkeypatch.setenv("COLUMNS", width)
    df = pd.DataFrame(
        {
            "run_id": [1, 1],
            "layer": [0, 12],
            "lang": ["en", "mr"],
            **{f"metric_number_{i}": [488.123456 * (i + 1), -11.86543 * i] for i in range(9)},
        }
    )
    render(df, title="wide")
    out = capsys.readouterr().out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= int(width)
    for text in [c for row in cell_texts(Grid.from_frame(df), 4) for c in row]:
        assert re.search(rf"(?<![\d.]){re.escape(text)}(?![\d.])", out), text
    assert out.count("metric_number_8") == 1  # each column once; the keys repeat instead
    assert "every row: run_id 1" in out  # a constant bookkeeping column leaves the table


def test_terminal_shows_markup_as_typed(capsys, monkeypatch):
    from xling.cli.common import render

    monkeypatch.setenv("COLUMNS", "80")
    render(pd.DataFrame({"lang": ["[/x]", "[bold]b"], "v": [1, 2]}), title="[red]t")
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]b" in out and "[red]t" in out


# -- output paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["db", "db.wal", "db.tmp/x.csv", "link"])
def test_export_refuses_the_warehouse_and_its_files(cli, paper_db, tmp_path, target):
    import shutil

    db = tmp_path / "w.duckdb"
    shutil.copy(paper_db, db)
    (tmp_path / "w.duckdb.tmp").mkdir()
    (tmp_path / "link.csv").symlink_to(db)
    before = _digest(db)
    out = {
        "db": db,
        "db.wal": tmp_path / "w.duckdb.wal",
        "db.tmp/x.csv": tmp_path / "w.duckdb.tmp" / "x.csv",
        "link": tmp_path / "link.csv",
    }[target]
    for extra in ([], ["--force"]):
        r = cli("export", "gap_by_layer", "--db", db, "-f", "csv", "--out", out, *extra)
        _one_line_error(r, "is the open warehouse or one of its files")
        r = cli("plot", "gap", "--db", db, "--out", out, *extra)
        _one_line_error(r, "is the open warehouse or one of its files")
    assert _digest(db) == before
    assert not (tmp_path / "w.duckdb.wal").exists() or target != "db.wal"
    assert not list(tmp_path.rglob("*.xling-tmp"))


def test_export_keeps_an_existing_file_unless_force(cli, paper_db, tmp_path):
    out = tmp_path / "g.csv"
    out.write_text("mine\n")
    _one_line_error(
        cli("export", "gap_by_layer", "--db", paper_db, "--out", out), "exists; pass --force"
    )
    assert out.read_text() == "mine\n"
    r = cli("export", "gap_by_layer", "--db", paper_db, "--out", out, "--force")
    assert r.exit_code == 0, r.stderr
    assert out.read_text().startswith("run_id,layer,")
    assert not list(tmp_path.glob("*.xling-tmp"))


@pytest.mark.parametrize("kind", ["devnull", "fifo"])
@pytest.mark.parametrize("command", ["export", "plot"])
def test_outputs_refuse_devices_and_fifos(cli, paper_db, tmp_path, kind, command):
    if kind == "devnull":
        out = tmp_path / "null.png"
        out.symlink_to("/dev/null")
    else:
        out = tmp_path / "fifo.png"
        os.mkfifo(out)
    args = ["export", "gap_by_layer", "-f", "csv"] if command == "export" else ["plot", "gap"]
    r = cli(*args, "--db", paper_db, "--out", out, "--force")
    _one_line_error(r, "is not a regular file")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
