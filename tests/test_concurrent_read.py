"""Queries while a long write runs: a writer that holds `hold_writer` for its whole run and
opens the file only to commit lets `xling query` in between its commits; other writers are
refused with one line naming it.

The first test drives that protocol with a small writer process shaped like an ingest's
chunk sink (compute, open, commit, close, repeat). The second runs a real `xling ingest` in
one process (which holds the file only to read its next phrases and to commit:
`Warehouse.between_commits`) and `xling query gap` in another.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from analysis_data import TOY_CONFIGS, toy_data
from concurrency import committed_chunks

from xling.warehouse import Warehouse

CHUNKED_WRITER = """
import sys, time
from xling.warehouse.connection import connect, hold_writer
db, chunks = sys.argv[1], int(sys.argv[2])
with hold_writer(db):
    print("ready", flush=True)
    for i in range(chunks):
        time.sleep(0.4)                      # computing the next chunk: the file is free
        con = connect(db, wait=60)           # a reader may hold it for a moment
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO phrases (phrase_id, group_id, lang, text) VALUES (?, ?, 'en', 'x')",
            [100000 + i, f"chunk-{i}"],
        )
        time.sleep(0.2)                      # a commit takes a while
        con.execute("COMMIT")
        con.close()
        print(f"chunk {i}", flush=True)
"""


def _xling(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    env.pop("XLING_WAIT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "xling", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.fixture
def toy_db(db_path) -> Path:
    with Warehouse(db_path) as wh:
        toy_data().write(wh, configs=TOY_CONFIGS)
    return db_path


def test_query_gets_in_between_a_writers_commits(toy_db, tmp_path):
    want = _xling("query", "gap", "--db", toy_db, "--run", "1", "-f", "csv").communicate(
        timeout=120
    )[0]
    assert "gap_pct" in want
    writer = subprocess.Popen(
        [sys.executable, "-c", CHUNKED_WRITER, str(toy_db), "200"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert writer.stdout.readline().startswith("chunk 0")
        start = time.monotonic()
        reader = _xling("--wait", "30", "query", "gap", "--db", toy_db, "--run", "1", "-f", "csv")
        (tmp_path / "more.csv").write_text("group_id,lang,text\nnew,en,hello\n")
        other = _xling("corpus", "load", tmp_path / "more.csv", "--db", toy_db)
        out, err = reader.communicate(timeout=120)
        took = time.monotonic() - start
        assert reader.returncode == 0, err
        assert out == want
        o_out, o_err = other.communicate(timeout=120)
        assert other.returncode == 1, (o_out, o_err)
        lines = o_err.splitlines()
        assert len(lines) == 1 and f"is being written by PID {writer.pid} (" in lines[0]
        assert writer.poll() is None, "the writer ended before the reader was checked"
        print(f"query answered in {took:.1f} s (process start-up included) during the writes")
    finally:
        writer.kill()
        writer.wait()


def test_query_gap_during_a_real_ingest(tmp_path, tiny_model_dir, tiny_sae_dirs):
    from tinymodel import cldr_phrases, insert_phrases

    db = tmp_path / "w.duckdb"
    with Warehouse(db) as wh:
        insert_phrases(wh, cldr_phrases(60))
    ingest = _xling(
        "ingest", "--db", db, "--model", tiny_model_dir, "--sae-dir", tiny_sae_dirs[0].parent,
        "--batch-size", "2", "--chunk-rows", "1",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not committed_chunks(db):
            assert ingest.poll() is None, ingest.communicate()[1]
            assert time.monotonic() < deadline, "the ingest never committed"
            time.sleep(0.05)
        start = time.monotonic()
        reader = _xling("--wait", "30", "query", "gap", "--db", db, "--run", "1", "-f", "csv")
        (tmp_path / "more.csv").write_text("group_id,lang,text\nnew,en,hello\n")
        writer = _xling("corpus", "load", tmp_path / "more.csv", "--db", db)
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        assert "gap_pct" in out and time.monotonic() - start < 60
        # ... and a table says the run is still being written, and how far it got
        shown = _xling("--wait", "30", "query", "gap", "--db", db, "--run", "1")
        s_out, s_err = shown.communicate(timeout=120)
        assert shown.returncode == 0, s_err
        title = " ".join(s_out.split())  # a long model path wraps the title
        assert re.search(r"run 1 \(.*\), running: [\d,]+ of 600 phrases committed", title), s_out
        w_out, w_err = writer.communicate(timeout=120)
        assert writer.returncode == 1 and len(w_err.splitlines()) == 1, (w_out, w_err)
        assert f"is being written by PID {ingest.pid} (" in w_err
        assert ingest.poll() is None, "the ingest ended before the query was checked"
        # Readers in between its commits do not disturb the run: it finishes whole.
        _, i_err = ingest.communicate(timeout=600)
        assert ingest.returncode == 0, i_err
    finally:
        ingest.kill()
        ingest.wait()
    with Warehouse(db, read_only=True) as wh:
        run = wh.run(1)
        assert run.status == "finished"
        assert run.n_phrases == wh.scalar("SELECT count(*) FROM phrases")
        assert wh.scalar("SELECT count(*) FROM phrase_tokens WHERE run_id = 1") == run.n_phrases
