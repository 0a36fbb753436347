"""One model spec for every command that loads a model: bench bpb keeps revision,
trust-remote-code and allow-pickle (given, or recorded by the run it scores)."""

from __future__ import annotations

import shutil

import pytest
import torch

from xling.analysis.bpb import BpbConfig, bench_bpb
from xling.ingest.models import ModelSpec, run_spec
from xling.ingest.runner import IngestConfig, run_ingest
from xling.warehouse.errors import XlingError


@pytest.fixture(scope="module")
def pickle_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with its weights as a pickled .bin only."""
    from safetensors.torch import load_file

    d = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_model_dir, d)
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    return d


def test_bench_bpb_keeps_allow_pickle(corpus_wh, pickle_model):
    cfg = dict(model=str(pickle_model), langs=["en"], groups=2, device="cpu")
    with pytest.raises(XlingError, match="--allow-pickle"):
        bench_bpb(corpus_wh, BpbConfig(**cfg))
    table = bench_bpb(corpus_wh, BpbConfig(**cfg, allow_pickle=True))
    assert table["bpb"].iloc[0] > 0
    job = corpus_wh.sql("SELECT kind, config FROM jobs")
    assert list(job.kind) == ["bench-bpb"] and '"allow_pickle": true' in job.config[0]


def test_bench_bpb_of_a_run_loads_the_model_as_the_run_did(corpus_wh, pickle_model):
    run = run_ingest(
        corpus_wh,
        IngestConfig(model=str(pickle_model), allow_pickle=True, residuals=True, limit=10),
    )
    table = bench_bpb(corpus_wh, BpbConfig(run=run, device="cpu"))
    assert set(table["lang"]) <= {"en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi"}
    assert int(table["n_phrases"].sum()) == 10  # the run's phrases


def test_run_spec_is_the_spec_the_run_read(corpus_wh, pickle_model):
    """The run's model as the catalog names it with its recorded loading fields; the
    fine-tune base model loads through it (a pickled checkpoint needs the recorded flag)."""
    from xling.finetune.common import load_run_model

    run = run_ingest(
        corpus_wh,
        IngestConfig(model=str(pickle_model), allow_pickle=True, residuals=True, limit=4),
    )
    spec = run_spec(corpus_wh, run)
    recorded = corpus_wh.run(run).config
    assert spec.source == str(pickle_model.resolve()) == corpus_wh.run(run).model
    assert (spec.allow_pickle, spec.trust_remote_code, spec.revision) == (True, False, None)
    assert (spec.dtype, spec.device) == (recorded["dtype"], recorded["device"])
    assert spec.adapter is None and spec.steering is None
    assert run_spec(corpus_wh, run, device="meta", dtype="bfloat16").device == "meta"
    lm, config = load_run_model(corpus_wh, run)
    assert lm.name == spec.source and config == recorded


def test_spec_refuses_bad_fields():
    with pytest.raises(XlingError, match="no model given"):
        ModelSpec(source="")
    with pytest.raises(XlingError, match="unknown dtype"):
        ModelSpec(source="m", dtype="int3")
