"""Real SAE releases, offline: sae-lens's own pretrained loader (`SAE.from_pretrained`: the
release lookup in its pretrained_saes.yaml, the id -> folder mapping, the per-release
converter) runs through xling's `load_saes` on a Hugging Face hub cache built in a temporary
HF_HOME with HF_HUB_OFFLINE=1, holding small SAE files in the releases' real layouts:

- `gemma-scope-2b-pt-res-canonical`, id template `layer_{layer}/width_16k/canonical`:
  `params.npz` (W_enc, W_dec, b_enc, b_dec, threshold) under the folder the canonical id maps
  to. sae-lens's gemma_2 converter takes d_in (2304) from the repo name and d_sae (16384) from
  `width_16k`, and the weights must have those shapes, so the file is full size but mostly
  zeros (six live features; the npz is compressed).
- `gemma-scope-2-270m-pt-res` (Gemma 3 270M), template `layer_{layer}_width_16k_l0_medium`:
  `resid_post/<id>/params.safetensors` (w_enc, w_dec, ...). Its converter reads d_in and d_sae
  from the file's header, so a width of 48 loads; it asks for that header over HTTP range
  requests even when the file is cached, answered here by a local server over the cache.

The work runs in a child interpreter (tests/release_offline_child.py) because huggingface_hub
reads HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT once, at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("release_offline_child.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    hf_home = tmp_path_factory.mktemp("hf-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run(
        [sys.executable, str(CHILD), str(hf_home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _ok(entry: dict):
    assert "ok" in entry, entry
    return entry["ok"]


def _error(entry: dict) -> str:
    assert "error" in entry, entry  # a one-line XlingError, not an escaped traceback
    assert "\n" not in entry["error"]
    return entry["error"]


def test_gemma_scope_canonical_release_loads_through_sae_lens(report):
    sae = _ok(report["gemma_scope"])["3"]
    assert sae["sae_name"] == "layer_3/width_16k/canonical"  # the template, filled in
    assert (sae["d_in"], sae["d_sae"]) == (2304, 16384)
    assert sae["hook_name"] == "blocks.3.hook_resid_post"
    assert sae["class"] == "JumpReLUSAE" and sae["architecture"] == "jumprelu"
    # encode() equals Gemma Scope's JumpReLU computed in numpy from the file's arrays
    assert sae["active"] > 0 and sae["max_abs_diff"] < 1e-4


def test_gemma_scope_2_release_for_gemma_3_270m_loads(report):
    saes = _ok(report["gemma_scope_2"])
    assert sorted(saes) == ["5", "9"]
    for layer, sae in saes.items():
        assert sae["sae_name"] == f"layer_{layer}_width_16k_l0_medium"
        assert (sae["d_in"], sae["d_sae"]) == (640, 48)
        assert sae["hook_name"] == f"blocks.{layer}.hook_resid_post"
        assert sae["class"] == "JumpReLUSAE"
        assert sae["active"] > 0 and sae["max_abs_diff"] < 1e-4


def test_the_cache_was_read_offline(report):
    assert report["offline"] == "1"
    # only Gemma Scope 2's header probes reached the (local) hub; no Gemma Scope file did
    assert report["hub_requests"]
    assert all(r.startswith("/google/gemma-scope-2-270m-pt/") for r in report["hub_requests"])


def test_matching_models_are_accepted(report):
    assert _ok(report["checks"]["2b_on_gemma2_2b"]) == "accepted"
    assert _ok(report["checks"]["270m_on_gemma3_270m"]) == "accepted"


def test_a_d_in_mismatch_is_refused(report):
    assert "has d_in 2304 but the model's d_model is 64" in _error(
        report["checks"]["2b_on_tiny_model"]
    )
    assert "has d_in 640 but the model's d_model is 2304" in _error(
        report["checks"]["270m_on_gemma2_2b"]
    )


def test_an_sae_of_another_layer_is_refused(report):
    line = _error(report["checks"]["2b_layer3_used_for_4"])
    assert "reads hook blocks.3.hook_resid_post but is used for layer 4" in line
    line = _error(report["checks"]["270m_layer9_used_for_5"])
    assert "reads hook blocks.9.hook_resid_post but is used for layer 5" in line


def test_unknown_ids_releases_and_uncached_files_are_one_line(report):
    assert "not found in release gemma-scope-2b-pt-res-canonical" in _error(
        report["checks"]["unknown_id"]
    )
    assert "no-such-release not found" in _error(report["checks"]["unknown_release"])
    assert "layer_7/width_16k/canonical" in _error(report["checks"]["not_cached"])


def test_gemma_scope_2_without_a_reachable_hub_is_one_line(report):
    """sae-lens asks the hub for the shapes even when the file is cached: with no hub at all
    the load fails, and xling says so in one line."""
    assert "cannot load SAE gemma-scope-2-270m-pt-res / layer_5_width_16k_l0_medium" in _error(
        report["checks"]["270m_without_a_hub"]
    )
