"""Shared fixtures: a real warehouse file per test and a CLI runner with a fixed width."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

os.environ.setdefault("COLUMNS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "w.duckdb"


@pytest.fixture
def wh(db_path):
    from xling.warehouse import Warehouse

    w = Warehouse(db_path)
    yield w
    w.close()


@pytest.fixture
def cli():
    """Invoke `xling ARGS...`; returns click's Result (exit_code, stdout, stderr)."""
    from xling.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "120"})

    return invoke
