"""Broken model and SAE inputs are one `Error:` line and leave the warehouse as it was: a
cfg.json that is a list, absurd or mismatched SAE sizes, an unknown SAE architecture, a pickle
named .safetensors (issue 16)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch


def _sae_copy(tiny_sae_dirs, tmp_path, edit):
    d = tmp_path / "saes" / "layer_0"
    shutil.copytree(tiny_sae_dirs[0], d)
    cfg = json.loads((d / "cfg.json").read_text())
    (d / "cfg.json").write_text(json.dumps(edit(cfg)))
    return d.parent


CASES = {
    "cfg-is-a-list": (lambda cfg: [cfg], "not a JSON object"),
    "absurd-d-sae": (lambda cfg: {**cfg, "d_sae": 10**12}, "too large"),
    "negative-d-in": (lambda cfg: {**cfg, "d_in": -4}, "positive integer"),
    "mismatched-d-in": (lambda cfg: {**cfg, "d_in": 32}, "SAE"),
    "unknown-architecture": (lambda cfg: {**cfg, "architecture": "banana"}, "banana"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_sae_is_one_error_line(
    case, cli, corpus_wh, db_path, tiny_model_dir, tiny_sae_dirs, tmp_path
):
    edit, match = CASES[case]
    saes = _sae_copy(tiny_sae_dirs, tmp_path, edit)
    corpus_wh.close()
    res = cli("ingest", "--db", db_path, "--model", tiny_model_dir, "--sae-dir", saes)
    assert res.exit_code == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], res.stderr
    from xling.warehouse import Warehouse

    with Warehouse(db_path) as wh:
        assert wh.scalar("SELECT count(*) FROM runs") == wh.scalar("SELECT count(*) FROM saes") == 0


def test_pickle_named_safetensors_is_one_error_line(
    cli, corpus_wh, db_path, tiny_model_dir, tmp_path
):
    from safetensors.torch import load_file

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    state = {k: v.clone() for k, v in load_file(d / "model.safetensors").items()}
    (d / "model.safetensors").unlink()  # the loaded file is memory-mapped: never write into it
    torch.save(state, d / "model.safetensors")  # a pickle under the safetensors name
    corpus_wh.close()
    res = cli("ingest", "--db", db_path, "--model", d, "--residuals")
    assert res.exit_code == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot load model"), res.stderr
