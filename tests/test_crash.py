"""Kill -9 at random points, then resume or retry: nothing lost, nothing duplicated, no partial
chunk, and the warehouse reopens (DuckDB replays its WAL). Then a second process while an
ingest runs: one line naming the holder, never a traceback.

Killed processes are forked from a multiprocessing forkserver that imported torch,
transformers, sae-lens and xling once, so each start costs a fork instead of ~10 s of
imports, and the forkserver itself never ran a forward pass (forking a process whose OpenMP
pool is running can hang). Kill times are drawn from a seeded `random.Random`.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from concurrency import committed_chunks

from xling.warehouse import Warehouse

PRELOAD = [
    "torch",
    "transformers",
    "transformers.models.gemma3.modeling_gemma3",
    "sae_lens",
    "xling.cli",
    "xling.ingest.runner",
    "xling.ingest.corpus",
    "xling.analysis.benchmarks",
]
LANGS = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")


@pytest.fixture(scope="module")
def ctx():
    c = multiprocessing.get_context("forkserver")
    c.set_forkserver_preload(PRELOAD)
    # Start the server now (its imports take seconds) so children's timings are their own.
    proc = c.Process(target=_quiet_torch)
    proc.start()
    proc.join()
    return c


# -- children (run in forked processes; module-level so the forkserver can find them) --------


def _quiet_torch() -> None:
    # One thread: two killed-and-restarted processes on two shared cores otherwise spend
    # most of their time spinning in OpenMP barriers.
    import torch

    torch.set_num_threads(1)


def _ingest_child(db: str, config: dict | None, run_id: int | None, conn) -> None:
    """run_ingest(config), or resume_ingest(run_id); sends the committed chunk count after
    every batch, then "done"."""
    _quiet_torch()
    from xling.ingest.runner import IngestConfig, resume_ingest, run_ingest

    def progress(p) -> None:
        conn.send(p.chunks)

    with Warehouse(db) as wh:
        if run_id is None:
            run_ingest(wh, IngestConfig(**config), progress)
        else:
            resume_ingest(wh, run_id, progress)
    conn.send("done")


def _cli_child(args: list[str]) -> None:
    """`xling ARGS` in this process (exits through SystemExit)."""
    _quiet_torch()
    from xling.cli import app

    app([str(a) for a in args], prog_name="xling")


# -- reading a warehouse the way a user would after a crash ---------------------------------


def _con(db: Path) -> duckdb.DuckDBPyConnection:
    """A fresh read-only open: replays the WAL a killed writer left."""
    return duckdb.connect(str(db), read_only=True)


def _rows(con, query: str, params=()) -> pd.DataFrame:
    return con.execute(query, params).df()


def check_whole_chunks(db: Path, n_layers: int) -> dict:
    """The invariants a killed ingest must leave; returns what it found."""
    with _con(db) as con:
        runs = _rows(con, "SELECT run_id, status, n_phrases, n_rows FROM runs")
        if runs.empty:
            for t in ("run_chunks", "phrase_tokens", "feature_acts", "residuals", "neuron_stats"):
                assert con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0, t
            return {"run": None, "chunks": 0, "phrases": 0, "status": None}
        assert len(runs) == 1, runs  # a resume never starts a second run
        run = runs.iloc[0]
        assert run.status in ("running", "finished"), run.status
        chunks = _rows(con, "SELECT chunk, n_phrases, n_rows FROM run_chunks ORDER BY chunk")
        assert chunks.chunk.tolist() == list(range(len(chunks)))
        tokens = _rows(con, "SELECT phrase_id FROM phrase_tokens")
        assert not tokens.phrase_id.duplicated().any()
        assert len(tokens) == chunks.n_phrases.sum() == run.n_phrases
        n_feat = con.execute("SELECT count(*) FROM feature_acts").fetchone()[0]
        assert n_feat == chunks.n_rows.sum() == run.n_rows
        orphan = con.execute(
            "SELECT count(*) FROM (SELECT phrase_id FROM feature_acts UNION "
            "SELECT phrase_id FROM residuals) WHERE phrase_id NOT IN "
            "(SELECT phrase_id FROM phrase_tokens)"
        ).fetchone()[0]
        assert orphan == 0  # every stored row belongs to a phrase its chunk finished
        for table, key in (
            ("feature_acts", "phrase_id, layer, feature"),
            ("residuals", "phrase_id, layer"),
        ):
            dup = con.execute(
                f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
            ).fetchone()[0]
            assert dup == 0, table
        n_resid = con.execute("SELECT count(*) FROM residuals").fetchone()[0]
        assert n_resid == len(tokens) * n_layers
        return {
            "run": int(run.run_id),
            "chunks": len(chunks),
            "phrases": len(tokens),
            "status": run.status,
        }


_TABLES = {
    "phrase_tokens": ("phrase_id, n_tokens", 1),
    "feature_acts": ("phrase_id, layer, feature, act_mean, act_max, n_active", 3),
    "neuron_stats": ("lang, layer, neuron, n_tokens, n_positive, act_sum", 3),
}


def assert_same_rows(a: Path, b: Path) -> int:
    """Every ingest table of `b` holds the rows of `a` (keys equal, values to float32
    rounding: batches are composed differently after a resume); returns rows compared."""
    n = 0
    with _con(a) as ca, _con(b) as cb:
        for table, (cols, n_key) in _TABLES.items():
            x = _rows(ca, f"SELECT {cols} FROM {table} ORDER BY ALL")
            y = _rows(cb, f"SELECT {cols} FROM {table} ORDER BY ALL")
            key = list(x.columns[:n_key])
            assert not y.duplicated(key).any(), table
            pd.testing.assert_frame_equal(x[key], y[key], obj=table)
            np.testing.assert_allclose(
                x.drop(columns=key).select_dtypes("number").to_numpy(float),
                y.drop(columns=key).select_dtypes("number").to_numpy(float),
                rtol=1e-5,
                atol=1e-5,
                err_msg=table,
            )
            n += len(x)
        q = "SELECT phrase_id, layer, vec FROM residuals ORDER BY phrase_id, layer"
        x, y = _rows(ca, q), _rows(cb, q)
        pd.testing.assert_frame_equal(x[["phrase_id", "layer"]], y[["phrase_id", "layer"]])
        np.testing.assert_allclose(np.stack(x.vec), np.stack(y.vec), rtol=1e-5, atol=1e-5)
        n += len(x)
    return n


# -- the kill loop ------------------------------------------------------------------------------


@dataclass
class KillLog:
    kills: int = 0
    after_chunk: int = 0  # kills made once a new chunk was committed
    at_random: int = 0  # kills at a random delay from the start (loading, writing, closing)
    phrases_after_kill: list[int] = field(default_factory=list)


def _wait_for_chunk(conn, proc, target: int, timeout: float = 120.0) -> bool:
    """Block until the child reports `target` committed chunks; False if it finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if conn.poll(0.05):
            msg = conn.recv()
            if msg == "done":
                return False
            if msg >= target:
                return True
        elif not proc.is_alive():
            return False
    raise AssertionError("the ingest child made no progress")


def kill_and_resume(
    ctx, db: Path, config: dict, rng: random.Random, kills: int, took: float
) -> KillLog:
    """Start the ingest, SIGKILL it `kills` times (alternately once a new chunk is committed,
    through the library, and at a random delay, through the CLI), resuming after each, then
    let the last resume finish. Checks the whole-chunk invariants after every kill.

    Delays are fractions of `took`, an uninterrupted run's time, so that on a fast or a busy
    machine alike the kills spread over the run without finishing it early."""
    log = KillLog()
    n_layers = len(config["layers"])
    state = check_whole_chunks(db, n_layers)
    while True:
        by_chunk = log.kills % 2 == 0
        parent, child_end = ctx.Pipe(duplex=False)
        if by_chunk or log.kills >= kills:
            proc = ctx.Process(
                target=_ingest_child,
                args=(str(db), None if state["run"] else config, state["run"], child_end),
            )
        else:
            args = ["ingest", "--db", db]
            if state["run"]:
                args += ["--resume", state["run"]]
            else:
                args += _ingest_args(config)
            proc = ctx.Process(target=_cli_child, args=(args,))
        proc.start()
        child_end.close()
        if log.kills >= kills:
            proc.join(300)
            assert proc.exitcode == 0, proc.exitcode
            break
        if by_chunk:
            alive = _wait_for_chunk(parent, proc, state["chunks"] + rng.randint(1, 4))
            time.sleep(rng.uniform(0.0, 0.1 / kills) * took)
        else:
            proc.join(rng.uniform(0.05, 0.6 / kills) * took)
            alive = proc.is_alive()
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        parent.close()
        state = check_whole_chunks(db, n_layers)
        if alive:
            assert proc.exitcode == -signal.SIGKILL
            log.kills += 1
            log.after_chunk += by_chunk
            log.at_random += not by_chunk
            log.phrases_after_kill.append(state["phrases"])
        assert state["status"] != "finished", "the run finished before every kill was made"
    return log


def _ingest_args(config: dict) -> list[str]:
    return [
        "--model",
        config["model"],
        "--sae-dir",
        config["sae_dir"],
        "--layers",
        ",".join(map(str, config["layers"])),
        "--residuals",
        "--neurons",
        "--batch-size",
        config["batch_size"],
        "--chunk-rows",
        config["chunk_rows"],
    ]


def _corpus_db(path: Path, groups: int) -> Path:
    from tinymodel import cldr_phrases, insert_phrases

    with Warehouse(path) as wh:
        insert_phrases(wh, cldr_phrases(groups))
    return path


def _run_child(ctx, target, *args) -> None:
    proc = ctx.Process(target=target, args=args)
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0, proc.exitcode


def _ingest_kills(ctx, tmp_path, model_dir, sae_dirs, groups, kills, seed) -> KillLog:
    config = {
        "model": str(model_dir),
        "sae_dir": str(sae_dirs[0].parent),
        "layers": [0, 1, 2, 3],
        "residuals": True,
        "neurons": True,
        # One batch per chunk: as many commit points as batches.
        "batch_size": 4,
        "chunk_rows": 1,
    }
    reference = _corpus_db(tmp_path / "reference.duckdb", groups)
    start = time.monotonic()
    _run_child(ctx, _cli_child, ["ingest", "--db", reference, *_ingest_args(config)])
    took = time.monotonic() - start
    killed = _corpus_db(tmp_path / "killed.duckdb", groups)
    log = kill_and_resume(ctx, killed, config, random.Random(seed), kills, took)
    final = check_whole_chunks(killed, 4)
    assert final["status"] == "finished" and final["phrases"] == groups * len(LANGS)
    assert check_whole_chunks(reference, 4)["phrases"] == final["phrases"]
    assert assert_same_rows(reference, killed) > 0
    assert log.kills == kills and log.after_chunk >= 1 and log.at_random >= 1
    # The runs stored the same config, so `runs show` reproduces either.
    with _con(reference) as a, _con(killed) as b:
        q = "SELECT config::JSON->>'$.chunk_rows', config::JSON->>'$.layers' FROM runs"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()
    return log


def test_ingest_killed_five_times_resumes_to_the_same_rows(
    ctx, tmp_path, tiny_model_dir, tiny_sae_dirs
):
    log = _ingest_kills(ctx, tmp_path, tiny_model_dir, tiny_sae_dirs, groups=16, kills=5, seed=7)
    print(log)
    # Kills landed at different points of the run, not all before the first write.
    assert len(set(log.phrases_after_kill)) >= 3, log


@pytest.mark.soak
def test_ingest_soak(ctx, tmp_path, tiny_model_dir, tiny_sae_dirs):
    log = _ingest_kills(ctx, tmp_path, tiny_model_dir, tiny_sae_dirs, groups=60, kills=25, seed=1)
    print(log)
    assert len(set(log.phrases_after_kill)) >= 10, log


# -- one-transaction loads: all of a file or none of it --------------------------------------


def _restore(pristine: Path, db: Path) -> Path:
    """Copy `pristine` over `db`, dropping the write-ahead log a killed writer left (replayed
    onto the copy, it would bring the killed load's rows back); returns the log's path."""
    wal = Path(f"{db}.wal")
    wal.unlink(missing_ok=True)
    shutil.copy(pristine, db)
    return wal


def kill_during_load(
    ctx, db: Path, args: list, table: str, rng: random.Random, kills: int
) -> tuple[int, list[int]]:
    """Run `xling ARGS --db db` and SIGKILL it `kills` times: alternately at a random point of
    its run, and just after its write-ahead log appears (the commit under way).

    After every kill `table` must hold none or all of the load's rows; the pristine file is
    copied back before each attempt so that it loads again. Returns the full row count and
    the row count seen after each kill."""
    pristine = db.with_name("pristine.duckdb")
    shutil.copy(db, pristine)
    with _con(db) as con:
        base = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    start = time.monotonic()
    _run_child(ctx, _cli_child, [*args, "--db", db])
    took = time.monotonic() - start
    with _con(db) as con:
        full = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert full > base
    seen = []
    for _attempt in range(kills * 10):
        if len(seen) == kills:
            break
        wal = _restore(pristine, db)
        proc = ctx.Process(target=_cli_child, args=([*args, "--db", db],))
        proc.start()
        if len(seen) % 2 == 0:
            proc.join(rng.uniform(0.2, 1.0) * took)
        else:
            while proc.is_alive() and not wal.exists():
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.05))
        if not proc.is_alive():
            continue  # finished first: not a kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        with _con(db) as con:
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert n in (base, full), (n, base, full)
        seen.append(n)
    assert len(seen) == kills, f"{kills * 10} attempts, {len(seen)} kills: loads ended first"
    return full, seen


def _big_corpus(path: Path, groups: int) -> Path:
    rows = [
        f"big{g},{lang},phrase {g} in {lang} {'x' * (g % 37)}"
        for g in range(groups)
        for lang in LANGS
    ]
    path.write_text("group_id,lang,text\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("groups", "kills"),
    [(8_000, 4), pytest.param(40_000, 16, marks=pytest.mark.soak)],
    ids=["bounded", "soak"],
)
def test_corpus_load_killed_has_all_or_none(ctx, tmp_path, groups, kills):
    db = _corpus_db(tmp_path / "w.duckdb", 2)
    corpus = _big_corpus(tmp_path / "big.csv", groups)
    full, seen = kill_during_load(
        ctx, db, ["corpus", "load", corpus], "phrases", random.Random(3), kills=kills
    )
    print(f"corpus load: {full} rows; rows after each kill {seen}")
    # Loaded afterwards, the file gives the same rows as an uninterrupted load.
    _restore(tmp_path / "pristine.duckdb", db)
    _run_child(ctx, _cli_child, ["corpus", "load", corpus, "--db", db])
    with _con(db) as con:
        assert con.execute("SELECT count(*) FROM phrases").fetchone()[0] == full
        assert (
            con.execute("SELECT count(DISTINCT (group_id, lang)) FROM phrases").fetchone()[0]
            == full
        )


def test_bench_import_killed_has_all_or_none(ctx, tmp_path):
    db = tmp_path / "w.duckdb"
    with Warehouse(db) as wh:
        wh.con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('m', 4, 64)")
    scores = tmp_path / "scores.csv"
    rng = random.Random(5)
    scores.write_text(
        "model,task,lang,metric,value\n"
        + "".join(f"m,task{t},{lang},acc,{rng.random()}\n" for t in range(6_000) for lang in LANGS)
    )
    full, seen = kill_during_load(
        ctx, db, ["bench", "import", scores], "benchmarks", random.Random(4), kills=4
    )
    print(f"bench import: {full} rows; rows after each kill {seen}")


# -- a second process while an ingest runs --------------------------------------------------

# Two writers and two readers, started together (each is a fresh Python process).
WRITERS = {
    "writer corpus load": ["corpus", "load", "{tmp}/more.csv"],
    "writer ingest --resume": ["ingest", "--resume", "1"],
}
READERS = {
    "reader sql": ["--wait", "60", "sql", "SELECT count(*) AS n FROM phrases"],
    "reader query gap": ["--wait", "60", "query", "gap", "--run", "1", "-f", "csv"],
}


def _xling(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "xling", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _holder_args(db: Path, model_dir: Path, sae_dirs: dict) -> list:
    return [
        "ingest", "--db", db, "--model", model_dir, "--sae-dir", sae_dirs[0].parent,
        "--neurons", "--residuals", "--batch-size", "2", "--chunk-rows", "1",
    ]  # fmt: skip


def check_second_processes(db: Path, tmp_path: Path, pid: int, alive, command: str) -> None:
    """While the ingest `pid` is writing `db`: writers (the Python API and `xling`, fresh
    processes) are refused at once with one line naming the holder, readers get in between
    its commits; the run then holds whole chunks only once the holder is killed."""
    from xling.warehouse.errors import WarehouseLocked

    deadline = time.monotonic() + 120
    while not committed_chunks(db):
        assert alive(), "the ingest ended before it was checked"
        assert time.monotonic() < deadline, "the ingest never committed a chunk"
        time.sleep(0.02)

    start = time.monotonic()
    with pytest.raises(WarehouseLocked) as err:
        Warehouse(db)
    assert time.monotonic() - start < 1.0
    assert f"is being written by PID {pid} (" in str(err.value) and command in str(err.value)
    with Warehouse(db, read_only=True) as wh:  # waits for a commit window (XLING_WAIT)
        assert wh.scalar("SELECT count(*) FROM phrases") == 400

    started = time.monotonic()
    procs = {
        name: _xling(*[a.format(tmp=tmp_path) for a in args], "--db", db)
        for name, args in {**WRITERS, **READERS}.items()
    }
    outputs = {}
    for name, proc in procs.items():
        out, errors = proc.communicate(timeout=120)
        outputs[name] = out
        if name in WRITERS:
            lines = errors.splitlines()
            assert proc.returncode == 1, (name, out, errors)
            assert len(lines) == 1, (name, errors)
            assert lines[0].startswith(f"Error: warehouse {db} is being written by PID {pid} (")
            assert command in lines[0], lines[0]
        else:
            assert proc.returncode == 0, (name, out, errors)
    assert "400" in outputs["reader sql"], outputs["reader sql"]
    assert "gap_pct" in outputs["reader query gap"], outputs["reader query gap"]
    print(
        f"{len(WRITERS)} writers refused and {len(READERS)} readers answered in "
        f"{time.monotonic() - started:.1f} s (process start-up included)"
    )
    assert alive(), "the ingest ended before every second process was checked"


def _after_holder_killed(db: Path) -> None:
    state = check_whole_chunks(db, 4)
    assert state["status"] == "running" and state["chunks"] >= 1
    with _con(db) as con:
        assert con.execute("SELECT count(*) FROM phrases").fetchone()[0] == 400


def test_second_process_during_ingest_is_told_who_holds_it(
    ctx, tmp_path, tiny_model_dir, tiny_sae_dirs, monkeypatch
):
    """The holder is an `xling ingest` forked from the forkserver (its /proc command line is
    the forkserver's); the soak test below runs it as `python -m xling ingest`."""
    monkeypatch.setenv("XLING_WAIT", "60")  # readers wait for a commit window
    db = _corpus_db(tmp_path / "w.duckdb", 40)
    (tmp_path / "more.csv").write_text("group_id,lang,text\nnew,en,hello\n")
    holder = ctx.Process(target=_cli_child, args=(_holder_args(db, tiny_model_dir, tiny_sae_dirs),))
    holder.start()
    try:
        check_second_processes(db, tmp_path, holder.pid, holder.is_alive, "forkserver")
    finally:
        holder.kill()
        holder.join()
    _after_holder_killed(db)


@pytest.mark.soak
def test_second_process_during_a_cli_ingest(tmp_path, tiny_model_dir, tiny_sae_dirs, monkeypatch):
    monkeypatch.setenv("XLING_WAIT", "60")  # readers wait for a commit window
    db = _corpus_db(tmp_path / "w.duckdb", 40)
    (tmp_path / "more.csv").write_text("group_id,lang,text\nnew,en,hello\n")
    holder = _xling(*_holder_args(db, tiny_model_dir, tiny_sae_dirs))
    try:
        alive = lambda: holder.poll() is None  # noqa: E731
        check_second_processes(db, tmp_path, holder.pid, alive, "-m xling ingest")
    finally:
        holder.kill()
        holder.wait()
    _after_holder_killed(db)
