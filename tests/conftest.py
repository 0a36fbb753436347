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


# -- tiny model, tiny SAEs, small aligned corpus (built offline once per session) ----------
# tests/tinymodel.py builds them; see its docstring.


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A seeded 4-layer Gemma3ForCausalLM + fast tokenizer saved as safetensors."""
    from tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_sae_dirs(tmp_path_factory):
    """{layer: sae-lens directory} for layers 0-3 (d_in 64, d_sae 128); the parent directory
    holds them as `layer_{L}`, usable as `--sae-dir`."""
    from tinymodel import build_tiny_saes

    return build_tiny_saes(tmp_path_factory.mktemp("tiny-saes"))


@pytest.fixture
def corpus_wh(wh):
    """`wh` holding 12 aligned CLDR groups in the ten languages (phrase ids 1-120)."""
    from tinymodel import cldr_phrases, insert_phrases

    insert_phrases(wh, cldr_phrases(12))
    return wh
