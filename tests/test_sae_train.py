"""`xling sae train` on the tiny model: sae-lens directories, held-out metrics recomputed in
numpy, registration, and ingest picking the registered SAEs up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xling.ingest.models import load_model
from xling.ingest.runner import IngestConfig, run_ingest
from xling.ingest.sae_train import SaeTrainConfig, train_saes
from xling.warehouse import Warehouse
from xling.warehouse.errors import XlingError


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture
def big_corpus_wh(wh):
    from tinymodel import cldr_phrases, insert_phrases

    insert_phrases(wh, cldr_phrases(40))
    return wh


def heldout_tokens(wh, lm, layer: int) -> np.ndarray:
    """Residuals at non-BOS tokens of every 10th group (by sorted group id), phrase by phrase."""
    groups = sorted(wh.sql("SELECT DISTINCT group_id FROM phrases").group_id)
    held = groups[9::10]
    texts = wh.sql(
        "SELECT text FROM phrases WHERE group_id IN (SELECT unnest(?::VARCHAR[]))", [held]
    ).text
    xs = []
    for text in texts:
        ids = lm.tokenizer(text)["input_ids"]
        with torch.no_grad():
            hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        xs.append(hs[layer + 1][0, 1:].numpy())
    return np.concatenate(xs)


def test_train_register_and_metrics(big_corpus_wh, lm, tiny_model_dir, tmp_path):
    wh = big_corpus_wh
    cfg = SaeTrainConfig(
        model=str(tiny_model_dir),
        layers=[0, 2],
        d_sae=128,
        k=8,
        tokens=16_384,
        batch_tokens=512,
        out=str(tmp_path / "saes"),
    )
    seen = []
    trained = train_saes(wh, cfg, seen.append, model=lm)
    assert seen[-1].done == seen[-1].total == 16_384
    assert [t.layer for t in trained] == [0, 2]
    from sae_lens import SAE

    rows = wh.sql("SELECT * FROM saes ORDER BY layer")
    assert list(rows.layer) == [0, 2] and rows.release.isna().all()
    for t, row in zip(trained, rows.itertuples(), strict=True):
        sae = SAE.load_from_disk(t.path)
        assert sae.cfg.metadata.hook_name == f"blocks.{t.layer}.hook_resid_post"
        assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.architecture()) == (64, 128, "jumprelu")
        # Held-out explained variance and L0, recomputed from the saved weights in numpy.
        x = heldout_tokens(wh, lm, t.layer)
        p = {k: v.detach().numpy().astype(np.float64) for k, v in sae.state_dict().items()}
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        acts = np.maximum(pre, 0) * (pre > p["threshold"])
        recon = acts @ p["W_dec"] + p["b_dec"]
        ev = 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        assert row.explained_variance == pytest.approx(ev, abs=1e-4)
        assert row.l0 == pytest.approx((acts > 0).sum(1).mean(), abs=1e-3)
        assert 0 < row.l0 < 128 and row.explained_variance > 0
        info = json.loads((tmp_path / "saes" / f"layer_{t.layer}" / "xling_train.json").read_text())
        assert info["k"] == 8 and info["explained_variance"] == pytest.approx(ev, abs=1e-4)
    # Ingest without SAE options uses the SAEs just registered.
    run = run_ingest(wh, IngestConfig(model=str(tiny_model_dir), limit=20), model=lm)
    recorded = wh.run(run)["config"]["saes"]
    assert [(s["layer"], s["path"]) for s in recorded] == [(t.layer, t.path) for t in trained]
    assert wh.scalar("SELECT count(DISTINCT layer) FROM feature_acts WHERE run_id = ?", [run]) == 2
    # Loading the trained SAEs registers nothing new: the run uses the rows training wrote,
    # with their explained variance and L0.
    assert wh.scalar("SELECT count(*) FROM saes") == 2
    assert [s["sae_id"] for s in recorded] == [t.sae_id for t in trained]
    used = wh.sql(
        "SELECT s.explained_variance, s.l0 FROM run_layers l JOIN saes s USING (sae_id) "
        "WHERE l.run_id = ? ORDER BY l.layer",
        [run],
    )
    assert len(used) == 2 and used.notna().all().all()
    job = wh.sql("SELECT kind, config FROM jobs")
    assert list(job.kind) == ["sae-train"] and json.loads(job.config[0])["k"] == 8


def test_train_standard_l1(big_corpus_wh, lm, tiny_model_dir, tmp_path):
    trained = train_saes(
        big_corpus_wh,
        SaeTrainConfig(
            model=str(tiny_model_dir),
            layers=[1],
            d_sae=64,
            l1=2.0,
            tokens=4096,
            batch_tokens=512,
            out=str(tmp_path / "l1"),
        ),
        model=lm,
    )
    assert trained[0].architecture == "standard"
    assert big_corpus_wh.scalar("SELECT architecture FROM saes") == "standard"


@pytest.mark.parametrize("bad", [{"k": 4, "l1": 1.0}, {"layers": []}, {"tokens": 0}])
def test_bad_config_refused(bad, tiny_model_dir):
    kw = {"model": str(tiny_model_dir), "layers": [0], **bad}
    with pytest.raises(XlingError):
        SaeTrainConfig(**kw)


def test_refusals_leave_warehouse_unchanged(wh, lm, tiny_model_dir, tmp_path):
    from tinymodel import cldr_phrases, insert_phrases

    with pytest.raises(XlingError, match="out of range"):
        train_saes(wh, SaeTrainConfig(model=str(tiny_model_dir), layers=[9]), model=lm)
    insert_phrases(wh, cldr_phrases(5))  # fewer groups than one held-out in ten needs
    with pytest.raises(XlingError, match="at least 10 phrase groups"):
        train_saes(wh, SaeTrainConfig(model=str(tiny_model_dir), layers=[0]), model=lm)
    assert wh.scalar("SELECT count(*) FROM saes") == wh.scalar("SELECT count(*) FROM models") == 0


def test_cli_train_and_list(cli, big_corpus_wh, db_path, tiny_model_dir, tmp_path):
    big_corpus_wh.close()
    res = cli(
        "sae",
        "train",
        "--db",
        db_path,
        "--model",
        tiny_model_dir,
        "--layers",
        "3",
        "--d-sae",
        "64",
        "--tokens",
        "2048",
        "--batch-tokens",
        "512",
        "--out",
        tmp_path / "o",
    )
    assert res.exit_code == 0, res.stderr
    assert "explained_variance" in res.stdout and "jumprelu" in res.stdout
    res = cli("sae", "list", "--db", db_path, "--format", "csv")
    assert res.exit_code == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("sae_id,model,layer") and len(lines) == 2
    with Warehouse(db_path) as w:
        assert w.scalar("SELECT d_sae FROM saes") == 64
