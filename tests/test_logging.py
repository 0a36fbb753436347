"""The CLI's logging: one handler on stderr, xling's info with -v, warnings (xling's and
Python's) as one line each, nothing but errors with -q.

The command-level tests run `python -m xling` in a subprocess: the process's own stderr,
with no test runner's log handlers in the way.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import warnings

import pytest

from xling.cli.logs import LineFormatter, StderrHandler, levels, setup_logging


def xling(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xling", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
    )


@pytest.fixture
def running_run_db(db_path):
    """A warehouse whose only run is still `running` (and has no rows yet)."""
    from xling.warehouse import Warehouse

    with Warehouse(db_path) as wh:
        wh.con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('toy', 4, 8)")
        wh.con.execute(
            "INSERT INTO runs (run_id, model_id, status, config) VALUES (1, 1, 'running', '{}')"
        )
    return db_path


def test_info_only_with_verbose(tmp_path):
    quiet = xling("init", "--db", tmp_path / "a.duckdb")
    assert quiet.returncode == 0, quiet.stderr
    assert "info:" not in quiet.stderr
    loud = xling("-v", "init", "--db", tmp_path / "b.duckdb")
    assert loud.returncode == 0, loud.stderr
    info = [line for line in loud.stderr.splitlines() if line.startswith("info: ")]
    assert info and any("migration" in line for line in info), loud.stderr
    assert loud.stdout == quiet.stdout.replace("a.duckdb", "b.duckdb")


def test_a_library_warning_is_one_line_and_quiet_hides_it(running_run_db):
    res = xling("query", "gap", "--run", 1, "--db", running_run_db)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0] == (
        "warning: run 1 is running; its numbers cover only the phrases it has done"
    ), res.stderr
    assert len(lines) == 2 and lines[1].startswith("Error: run 1 has no SAE features")
    res = xling("-q", "query", "gap", "--run", 1, "--db", running_run_db)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [lines[1]]  # the error still shows


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path):
    res = xling("-v", "-q", "init", "--db", tmp_path / "w.duckdb")
    assert res.returncode == 2 and "not both" in res.stderr
    assert not (tmp_path / "w.duckdb").exists()


@pytest.fixture
def installed():
    """setup_logging inside a warnings context; both undone after the test."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield
        logging.captureWarnings(False)
    for h in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(h)
    root.setLevel(level)
    logging.getLogger("xling").setLevel(logging.NOTSET)


def test_python_warnings_become_one_line(installed, capsys):
    setup_logging()
    message = "`torch_dtype` is deprecated!\n  Use `dtype` instead!"
    # Libraries imported earlier in the session may have filtered FutureWarning; the test is
    # about how a warning that is shown looks.
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        warnings.warn(message, FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == (
        "warning: `torch_dtype` is deprecated! Use `dtype` instead! "
        f"(FutureWarning, tests/test_logging.py:{line})\n"
    )


def test_one_handler_however_often_it_is_set_up(installed, capsys):
    for _ in range(3):
        setup_logging(verbose=1)
    assert sum(isinstance(h, StderrHandler) for h in logging.getLogger().handlers) == 1
    logging.getLogger("xling.ingest.runner").info("run %d: %d phrases", 3, 40)
    logging.getLogger("some_library").info("not shown below -vv")
    logging.getLogger("some_library").warning("disk\nnearly full")
    assert capsys.readouterr().err == "info: run 3: 40 phrases\nwarning: disk nearly full\n"
    setup_logging()  # back to the default: xling's info is hidden again
    logging.getLogger("xling.ingest.runner").info("hidden")
    assert capsys.readouterr().err == ""


def test_transformers_follows_quiet_and_verbose(installed, monkeypatch):
    """transformers' logger has its own handler; -q and -vv set its threshold too."""
    import transformers

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "warning")
    before = transformers.logging.get_verbosity()
    try:
        setup_logging(quiet=True)
        assert transformers.logging.get_verbosity() == logging.ERROR
        setup_logging(verbose=2)
        assert transformers.logging.get_verbosity() == logging.INFO
    finally:
        transformers.logging.set_verbosity(before)
    monkeypatch.delitem(sys.modules, "transformers")  # as in a CLI that has not loaded it
    setup_logging(quiet=True)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_levels():
    assert levels(0, False) == (logging.WARNING, logging.WARNING)
    assert levels(1, False) == (logging.INFO, logging.WARNING)
    assert levels(2, False) == (logging.DEBUG, logging.INFO)
    assert levels(0, True) == (logging.ERROR, logging.ERROR)


def test_formatter_names_loggers_and_keeps_exceptions_short():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        exc = sys.exc_info()
    record = logging.LogRecord("xling.ingest", logging.ERROR, "f.py", 1, "failed %s", ("x",), exc)
    assert LineFormatter().format(record) == "error: failed x (ValueError: bad value)"
    verbose = LineFormatter(names=True, tracebacks=True).format(record)
    assert verbose.startswith("error xling.ingest: failed x\nTraceback")
    assert verbose.rstrip().endswith("value")


def test_warnings_are_captured_again_after_showwarning_was_replaced(installed, capsys):
    """A CLI call earlier in the process set up capture; a warnings context since then put its
    own showwarning back. The next setup must capture again."""
    setup_logging()
    warnings.showwarning = warnings._showwarning_orig
    setup_logging()
    warnings.warn("again", UserWarning, stacklevel=1)
    assert capsys.readouterr().err.startswith("warning: again (UserWarning, ")
