"""ingest --adapter / --steer: the seams in the runner, end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np


def test_finetune_round_and_ingest_adapter(corpus_wh, tiny_model_dir, tiny_sae_dirs, tmp_path):
    from xling.analysis.queries import compare
    from xling.finetune.apply import finetune_round
    from xling.ingest.runner import IngestConfig, run_ingest

    cfg = IngestConfig(model=str(tiny_model_dir), sae_dir=str(tiny_sae_dirs[2]), layers=[2])
    base = run_ingest(corpus_wh, cfg)
    r = finetune_round(
        corpus_wh,
        base_run=base,
        lang="ml",
        target_layer=2,
        out=tmp_path / "lora",
        steps=20,
        lr=1e-2,
    )
    tuned = corpus_wh.run(r.tuned_run)
    assert tuned["adapter"] == str((tmp_path / "lora").resolve()) == tuned["config"]["adapter"]
    assert tuned["model_id"] != corpus_wh.run(base)["model_id"]
    table = compare(corpus_wh, base, r.tuned_run).set_index("lang")
    # The aligned language moves; English is largely kept.
    assert abs(table.loc["ml", "improvement_pct"]) > 1
    assert 50 < table.loc["en", "en_retention_pct"] < 150


def test_ingest_steer_records_the_recipe_and_changes_only_layers_from_its_own(
    corpus_wh, tiny_model_dir, db_path, cli
):
    from xling.finetune.config import ResidualSteerConfig
    from xling.finetune.steer import add_intervention
    from xling.ingest.runner import IngestConfig, run_ingest

    base = run_ingest(corpus_wh, IngestConfig(model=str(tiny_model_dir), residuals=True))
    add_intervention(corpus_wh, "ml-en", ResidualSteerConfig(run=base, lang="ml", layer=1))
    corpus_wh.close()
    r = cli("ingest", "--model", tiny_model_dir, "--residuals", "--steer", "ml-en", "--db", db_path)
    assert r.exit_code == 0, r.stderr
    r = cli("ingest", "--model", tiny_model_dir, "--residuals", "--steer", "nope", "--db", db_path)
    assert r.exit_code == 1 and "no intervention 'nope'" in r.stderr

    from xling.warehouse import Warehouse

    with Warehouse(db_path, read_only=True) as wh:
        steered = int(wh.scalar("SELECT max(run_id) FROM runs WHERE status = 'finished'"))
        assert wh.run(steered)["config"]["steering"]["config"]["layer"] == 1
        assert wh.scalar("SELECT count(*) FROM runs") == 2  # the bad name wrote nothing
        vec = np.array(
            json.loads(wh.scalar("SELECT config FROM interventions"))["edits"][0]["values"]
        )
        got = wh.sql(
            "SELECT b.layer, b.vec AS before, s.vec AS after FROM residuals b "
            "JOIN residuals s USING (phrase_id, layer) WHERE b.run_id = ? AND s.run_id = ? "
            "ORDER BY b.layer, b.phrase_id",
            [base, steered],
        )
    for layer, before, after in got.itertuples(index=False):
        diff = np.asarray(after) - np.asarray(before)
        if layer == 0:
            assert np.array_equal(diff, np.zeros_like(diff))
        elif layer == 1:
            # Every pooled position got +vec, so the mean-pooled residual moved by exactly vec.
            np.testing.assert_allclose(diff, vec, rtol=1e-4, atol=1e-4)
        else:
            assert np.abs(diff).max() > 1e-3
