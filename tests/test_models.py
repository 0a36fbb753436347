"""Model and SAE loading: local directories, pickle refusal, dtype/device, registration, SAE
sources (directory, template, registered), and the GGUF cache on the real Gemma 3 270M."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from xling.ingest.models import load_model, register_model
from xling.ingest.saes import SaeSource, check_saes, hook_layer, load_saes
from xling.warehouse.errors import XlingError


def test_local_dir_facts_and_registration(tiny_model_dir, wh):
    lm = load_model(str(tiny_model_dir))
    assert (lm.n_layers, lm.d_model, lm.d_mlp, lm.arch) == (4, 64, 128, "Gemma3ForCausalLM")
    assert lm.name == str(tiny_model_dir.resolve()) and lm.adapter is None
    assert not lm.model.training and lm.dtype == torch.float32
    with wh.transaction() as con:
        first = register_model(con, lm)
        assert register_model(con, lm) == first  # same name/revision/adapter: same row
    row = wh.sql("SELECT name, n_layers, d_model, d_mlp, arch FROM models").iloc[0]
    assert tuple(row) == (lm.name, 4, 64, 128, "Gemma3ForCausalLM")


def test_pickle_checkpoint_needs_allow_pickle(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, d)
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(XlingError, match="--allow-pickle"):
        load_model(str(d))
    lm = load_model(str(d), allow_pickle=True)
    torch.testing.assert_close(
        lm.model.model.embed_tokens.weight, state["model.embed_tokens.weight"]
    )


def test_dtype_device_and_missing_model(tiny_model_dir):
    assert load_model(str(tiny_model_dir), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(XlingError, match="unknown dtype"):
        load_model(str(tiny_model_dir), dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(XlingError, match="CUDA is not available"):
            load_model(str(tiny_model_dir), device="cuda")
    with pytest.raises(XlingError, match="cannot load model"):
        load_model("no-such-org/no-such-model")  # offline: the hub is unreachable
    with pytest.raises(XlingError, match="no GGUF file"):
        load_model("missing.gguf")


def test_sae_sources(tiny_sae_dirs, tmp_path):
    root = tiny_sae_dirs[0].parent
    every = load_saes(SaeSource(sae_dir=str(root)), None)
    assert sorted(every) == [0, 1, 2, 3]
    assert [every[layer].architecture for layer in range(4)] == ["standard", "jumprelu"] * 2
    picked = load_saes(SaeSource(sae_dir=str(root / "layer_{layer}")), [1, 3])
    assert sorted(picked) == [1, 3] and picked[3].hook_name == "blocks.3.hook_resid_post"
    single = load_saes(SaeSource(sae_dir=str(tiny_sae_dirs[2])), None)
    assert list(single) == [2]
    check_saes(every, d_model=64, n_layers=4)
    with pytest.raises(XlingError, match="out of range"):
        check_saes(every, d_model=64, n_layers=3)
    with pytest.raises(XlingError, match="has no SAE for layer"):
        load_saes(SaeSource(sae_dir=str(root)), [5])
    shutil.copytree(tiny_sae_dirs[0], tmp_path / "dup" / "a")
    shutil.copytree(tiny_sae_dirs[0], tmp_path / "dup" / "b")
    with pytest.raises(XlingError, match="two SAEs for layer 0"):
        load_saes(SaeSource(sae_dir=str(tmp_path / "dup")), None)
    with pytest.raises(XlingError, match="go together"):
        SaeSource(release="gemma-scope-2b-pt-res-canonical")
    with pytest.raises(XlingError, match="needs --layers"):
        load_saes(SaeSource(release="r", sae_id="layer_{layer}"), None)
    assert (
        hook_layer("blocks.12.hook_resid_post") == 12
        and hook_layer("blocks.1.hook_mlp_out") is None
    )


@pytest.mark.slow
def test_gemma3_gguf_converted_once(tmp_path, monkeypatch):
    """With an empty XLING_HOME the built-in GGUF is dequantised into a safetensors directory
    whose weights give the same hidden states as the GGUF-loaded model."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("XLING_HOME", str(tmp_path))
    lm = load_model("gemma3-270m")
    cached = tmp_path / "models"
    (d,) = cached.iterdir()
    assert (d / "model.safetensors").is_file() and (d / ".xling-complete").is_file()
    assert "quantization_config" not in (d / "config.json").read_text()
    gguf = next((tmp_path / "gguf").iterdir())
    direct = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    enc = lm.tokenizer(["Deutschland", "जर्मनी"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = lm.model(**enc, output_hidden_states=True).hidden_states
        b = direct(**enc, output_hidden_states=True).hidden_states
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    again = load_model("gemma3-270m")  # from the cache this time
    assert again.source == str(d)


def test_gguf_cache_is_keyed_on_content_not_name_and_size(tmp_path, monkeypatch, tiny_model_dir):
    """Two GGUF files with the same name and size but different bytes never share a converted
    cache: a file of zeros is read (and refused), not served another model's weights."""
    import numpy as np

    from xling.ingest.models import gguf_cache_dir, gguf_sha256

    monkeypatch.setenv("XLING_HOME", str(tmp_path / "home"))
    real, zeros = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    real.parent.mkdir()
    zeros.parent.mkdir()
    real.write_bytes(np.random.default_rng(0).bytes(4096))
    zeros.write_bytes(bytes(4096))
    sha = gguf_sha256(real)
    # `real`'s conversion is already cached (the tiny model stands in for its weights).
    cached = gguf_cache_dir(real, sha)
    shutil.copytree(tiny_model_dir, cached)
    (cached / ".xling-complete").write_text(f"{sha}\n{real}\n")
    assert load_model(str(real)).source == str(cached)
    with pytest.raises(XlingError, match="not a GGUF file"):
        load_model(str(zeros))
    assert gguf_cache_dir(zeros, gguf_sha256(zeros)) != cached
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir()) == sorted(
        [cached.name, "gguf-sha256.json"]
    )
    # The hash is remembered per (path, size, mtime): a rewritten file is hashed again.
    zeros.write_bytes(real.read_bytes())
    os.utime(zeros, ns=(10**18, 10**18))  # a distinct mtime whatever the clock's resolution
    assert gguf_sha256(zeros) == sha
