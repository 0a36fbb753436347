"""`xling export` and `xling plot`: files written, read back and checked; bad paths refused."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from analysis_data import TOY_CONFIGS, paper_like, toy_data

from xling.analysis.formats import column_decimals, format_frame
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
        r"\caption{gap by lang summary (run 1, toy; mode origin, stat max)}",
    ):
        assert line in tex
    mr = next(line for line in tex.splitlines() if line.startswith("1 & mr &"))
    # the mean's column holds exact values (kept as they are); the std's is rounded to two
    assert " & 65.0 & " in mr and " & 21.21 & " in mr
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
    assert column_decimals([float("nan"), 0.0], 2) == 1  # 0.0 is short: one decimal


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


def _fig(db, draw, *args, **kwargs):
    with Warehouse(db, read_only=True) as wh:
        return draw(wh, *args, **kwargs)


def _line_colours(ax) -> dict[str, str]:
    from matplotlib.colors import to_hex

    return {
        line.get_label(): to_hex(line.get_color())
        for line in ax.get_lines()
        if not line.get_label().startswith("_")  # reference lines (y = 0) have no label
    }


def _legend(fig, ax=None) -> list[str]:
    legends = list(fig.legends) + ([ax.get_legend()] if ax and ax.get_legend() else [])
    return [t.get_text() for leg in legends for t in leg.get_texts()]


NAMES = {
    "en": "English",
    "zh": "Chinese",
    "ru": "Russian",
    "es": "Spanish",
    "it": "Italian",
    "id": "Indonesian",
    "ca": "Catalan",
    "mr": "Marathi",
    "ml": "Malayalam",
    "hi": "Hindi",
}


def _expected_colours(langs) -> dict[str, str]:
    from xling.analysis.style import COLOURS

    order = list(NAMES)
    return {NAMES[lang]: COLOURS[order.index(lang)].lower() for lang in langs}


def test_gap_figure_reads_back_ticks_colours_legend_and_title(paper_db):
    from xling.analysis.plots import Look, plot_gap

    fig = _fig(paper_db, plot_gap, None, 1, look=Look("paper"))
    left, right = fig.axes[:2]
    for ax in (left, right):
        assert [int(t) for t in ax.get_xticks()] == list(range(6))
    langs = [lang for lang in NAMES if lang != "en"]
    assert _line_colours(right) == _expected_colours(langs)
    assert _legend(fig) == [NAMES[lang] for lang in langs]
    assert _legend(fig, left)[-3:] == ["high (H)", "low (W)", "gap (%)"]
    assert fig._suptitle.get_text() == ("Activation gap — google/gemma-2-2b, run 1 (origin, max)")
    assert tuple(fig.get_size_inches()) == pytest.approx((6.9, 3.0))
    assert right.get_legend() is None  # the language legend is the figure's, outside the axes
    fig = _fig(paper_db, plot_gap, None, 1, "english-topk", "mean", 4, look=Look("paper", width=5))
    assert "(english-topk k=4, mean)" in fig._suptitle.get_text()
    assert tuple(fig.get_size_inches()) == pytest.approx((5.0, 3.0))


def test_gap_axis_goes_log_when_magnitudes_span_orders(paper_db, tmp_path):
    import shutil

    from xling.analysis.plots import plot_gap

    db = tmp_path / "w.duckdb"
    shutil.copy(paper_db, db)
    with Warehouse(db) as wh:  # layer 0 activations become 1000x those of the other layers
        wh.con.execute("UPDATE feature_acts SET act_max = act_max * 1000 WHERE layer = 0")
    fig = _fig(db, plot_gap, None, 1)
    assert fig.axes[0].get_yscale() == "log" and "(log)" in fig.axes[0].get_ylabel()
    assert _fig(paper_db, plot_gap, None, 1).axes[0].get_yscale() == "linear"


def test_colours_stay_with_the_language_when_groups_change(paper_db, tmp_path):
    import shutil

    from xling.analysis.plots import plot_similarity

    before = _line_colours(_fig(paper_db, plot_similarity, None, 1).axes[0])
    db = tmp_path / "w.duckdb"
    shutil.copy(paper_db, db)
    with Warehouse(db) as wh:
        wh.con.execute("UPDATE languages SET resource_group = 'low' WHERE lang = 'zh'")
        wh.con.execute("UPDATE languages SET resource_group = 'high' WHERE lang = 'hi'")
    fig = _fig(db, plot_similarity, None, 1)
    after = _line_colours(fig.axes[0])
    assert after == before == _expected_colours([lang for lang in NAMES if lang != "en"])
    assert len(set(after.values())) == 9
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles["Chinese"] == "--" and styles["Hindi"] == "-"  # groups by dash, not colour
    assert [int(t) for t in fig.axes[0].get_xticks()] == list(range(6))
    assert _legend(fig) == [NAMES[lang] for lang in NAMES if lang != "en"]
    assert fig.axes[0].get_title() == "Residual similarity — google/gemma-2-2b, run 1"


def test_ten_languages_get_ten_distinct_styles():
    from xling.analysis.style import lang_style

    order = list(NAMES)
    colours = {lang_style(lang, order)["color"] for lang in order}
    markers = {lang_style(lang, order)["marker"] for lang in order}
    assert len(colours) == 10 and len(markers) == 10
    more = order + [f"x{i}" for i in range(40)]
    pairs = {(lang_style(x, more)["color"], lang_style(x, more)["marker"]) for x in more}
    assert len(pairs) == 50


@pytest.mark.parametrize("layer", [None, 2])
def test_languages_figure_bars_in_language_colours(paper_db, layer):
    from matplotlib.colors import to_hex

    from xling.analysis.plots import plot_languages

    fig = _fig(paper_db, plot_languages, None, 1, layer)
    ax = fig.axes[0]
    langs = [lang for lang in NAMES if lang != "en"]
    assert [t.get_text() for t in ax.get_xticklabels()] == langs
    got = [to_hex(bar.get_facecolor()) for bar in ax.patches[: len(langs)]]
    assert got == list(_expected_colours(langs).values())
    assert _legend(fig, ax) == ["high-resource", "low-resource"]
    assert "(origin, max)" in ax.get_title()


def test_compare_figure_names_fine_tune_or_steering(paper_db, tmp_path):
    import json
    import shutil

    from xling.analysis.plots import plot_compare

    fig = _fig(paper_db, plot_compare, 1, 2, None, 0)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Fine-tune effect — google/gemma-2-2b, run 2 vs base run 1")
    assert [t.get_text() for t in ax.get_xticklabels()] == [x for x in NAMES if x != "en"]
    assert "English retention" in ax.get_title() and "(origin, max)" in ax.get_title()
    db = tmp_path / "w.duckdb"
    shutil.copy(paper_db, db)
    with Warehouse(db) as wh:
        wh.con.execute("UPDATE runs SET config = ? WHERE run_id = 2", [json.dumps({"steer": "s"})])
    title = _fig(db, plot_compare, 1, 2, None, 0).axes[0].get_title()
    assert title.startswith("Steering effect — google/gemma-2-2b steered by s, run 2")


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
