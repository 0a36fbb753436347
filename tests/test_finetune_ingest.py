"""ingest --adapter / --steer: the seams in the runner, end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np


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
