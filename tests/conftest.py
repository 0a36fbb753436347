"""Shared fixtures: a real warehouse file per test and a CLI runner with a fixed width."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

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


# -- tiny model, tiny SAEs, small aligned corpus (built offline, seeded) --------------------
# xling.ingest.tiny builds them (see its docstring). A build is deterministic, so it is made
# once into a cache keyed on the builder's source and the library versions, shared by every
# test session on the machine; each session works on its own copy, so no test can alter it.


def _cache_key() -> str:
    from importlib.metadata import version

    import xling.ingest.tiny as tiny

    digest = hashlib.sha256(Path(tiny.__file__).read_bytes())
    for package in ("torch", "transformers", "tokenizers", "sae-lens", "babel", "safetensors"):
        digest.update(f"{package}={version(package)};".encode())
    return digest.hexdigest()[:16]


def _built_once(what: str, build, copy_to: Path) -> Path:
    """`build(dir)` run once per cache key (concurrent sessions race harmlessly: the first
    rename wins), then copied to `copy_to`."""
    root = Path(os.environ.get("XLING_TEST_CACHE") or tempfile.gettempdir()) / "xling-test-cache"
    done = root / f"{what}-{_cache_key()}"
    if not done.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{what}-", dir=root))
        build(scratch)
        try:
            scratch.rename(done)
        except OSError:  # another session finished the same build first
            shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(done, copy_to)
    return copy_to


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A seeded 4-layer Gemma3ForCausalLM + fast tokenizer saved as safetensors."""
    from xling.ingest.tiny import build_tiny_model

    return _built_once("tiny-model", build_tiny_model, tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="session")
def tiny_sae_dirs(tmp_path_factory):
    """{layer: sae-lens directory} for layers 0-3 (d_in 64, d_sae 128); the parent directory
    holds them as `layer_{L}`, usable as `--sae-dir`."""
    from xling.ingest.tiny import N_LAYERS, build_tiny_saes

    parent = _built_once("tiny-saes", build_tiny_saes, tmp_path_factory.mktemp("s") / "saes")
    return {layer: parent / f"layer_{layer}" for layer in range(N_LAYERS)}


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """The tiny model loaded once per session (`xling.ingest.models.LoadedModel`). Shared:
    a test that changes it (merges an adapter, registers hooks it keeps) takes
    `copy.deepcopy(tiny_lm)` instead."""
    from xling.ingest.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture
def corpus_wh(wh):
    """`wh` holding 12 aligned CLDR groups in the ten languages (phrase ids 1-120)."""
    from xling.ingest.tiny import cldr_phrases, insert_phrases

    insert_phrases(wh, cldr_phrases(12))
    return wh
