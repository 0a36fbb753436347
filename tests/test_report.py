"""`xling report`: every available item written, the rest skipped with a command, and the HTML
opened in real headless Chromium (skipped with a reason when it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from analysis_data import paper_like

from xling.warehouse import Warehouse


@pytest.fixture(scope="module")
def paper_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "paper.duckdb"
    with Warehouse(path) as wh:
        paper_like().write(
            wh,
            configs={1: {"layers": list(range(6))}, 2: {"layers": list(range(6)), "steer": "s"}},
        )
        wh.con.execute("UPDATE models SET name = 'google/gemma-2-2b'")
    return path


@pytest.fixture(scope="module")
def report_dir(paper_db, tmp_path_factory):
    from typer.testing import CliRunner

    from xling.cli import app

    out = tmp_path_factory.mktemp("rep") / "report"
    r = CliRunner().invoke(app, ["report", "--db", str(paper_db), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    return out, r.stdout


def test_report_writes_items_and_names_what_is_missing(report_dir):
    out, stdout = report_dir
    for key in ("gap_by_layer", "gap_by_lang", "lape_features", "similarity", "effect_run2"):
        for f in (f"figures/{key}.pdf", f"figures/{key}.png"):
            assert (out / f).stat().st_size > 5000, f
        assert len((out / f"tables/{key}.csv").read_text().splitlines()) > 2
        assert r"\begin{tabular}" in (out / f"tables/{key}.tex").read_text()
    assert "skipped lape_neurons: run 1 has no neuron stats; ingest with --neurons" in stdout
    assert "skipped benchmarks:" in stdout and "`xling bench bpb`" in stdout
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 5
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    for fact in (
        "<dt>run</dt><dd>1</dd>",
        "<dt>groups</dt><dd>24</dd>",
        "<dt>mode</dt>",
        "<dt>layers</dt><dd>0-5</dd>",
        "<dt>reference</dt><dd>en</dd>",
        "Steering effect of run 2",
    ):
        assert fact in page, fact


def test_report_refuses_a_full_folder_and_the_warehouse(cli, paper_db, report_dir):
    out, _ = report_dir
    r = cli("report", "--db", paper_db, "--out", out)
    assert r.exit_code == 1 and "is not empty; pass --force" in r.stderr
    r = cli("report", "--db", paper_db, "--out", paper_db)
    assert r.exit_code == 1 and "is the open warehouse" in r.stderr


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium installed (`make test-setup` installs Debian's chromium)")


def test_report_opens_in_headless_chromium(report_dir, tmp_path):
    import matplotlib.image as mpimg

    chromium = _chromium()
    out, _ = report_dir
    # a probe copy: the page plus a script that records errors and loaded images in the DOM
    probe = out / "probe.html"
    probe.write_text(
        (out / "report.html")
        .read_text()
        .replace(
            "<head>",
            "<head><script>window.__errors=[];window.addEventListener('error',"
            "e=>window.__errors.push(String(e.message||e.type)),true);"
            "const __ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));"
            "__ce(...a)};window.addEventListener('load',()=>{const im=[...document.images];"
            "document.body.dataset.probe=im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'"
            "+im.length+' errors:'+window.__errors.length})</script>",
            1,
        )
    )
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r'data-probe="(\d+)/(\d+) errors:(\d+)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    loaded, total, errors = map(int, m.groups())
    assert total == 5 and loaded == total and errors == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1600", (out / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels[..., :3].std() > 0.05  # not a blank page


def test_runs_list_shows_adapter_steering_and_layers(cli, paper_db):
    r = cli("runs", "list", "--db", paper_db, "-f", "csv")
    assert r.exit_code == 0, r.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["run_id"], x["steering"], x["layers"]) for x in rows] == [
        ("1", "", "0-5"),
        ("2", "s", "0-5"),
    ]
    assert "adapter" in rows[0]
