"""The catalog (warehouse/catalog.py): run records, the default run, SAE registration once,
and migration 005's backfill of what views read from old runs' config JSON."""

from __future__ import annotations

import json

import duckdb
import pytest

from xling.warehouse import catalog
from xling.warehouse.connection import migrations
from xling.warehouse.errors import XlingError


def _model(con, adapter=None) -> int:
    return catalog.register_model(
        con, catalog.ModelFacts(name="toy", revision=None, adapter=adapter, n_layers=4, d_model=8)
    )


def _run(con, model_id, *, status="finished", **columns) -> int:
    run_id = catalog.create_run(
        con, model_id, catalog.NewRun(config={"model": "toy"}, layers={0: None}, **columns)
    )
    if status == "finished":
        catalog.finish_run(con, run_id)
    elif status == "failed":
        catalog.fail_run(con, run_id, "killed")
    return run_id


def test_run_record_is_typed_and_reads_like_a_dict(wh):
    with wh.transaction() as con:
        sae = catalog.register_sae(
            con,
            _model(con),
            catalog.SaeFacts(layer=2, sae_name="l2", release=None, path="/s/l2", d_in=8, d_sae=16),
        )
        run_id = catalog.create_run(
            con,
            1,
            catalog.NewRun(
                config={"model": "toy", "residuals": True},
                layers={1: None, 2: sae},
                steer="push",
                residuals=True,
                n_selected=7,
            ),
        )
        catalog.commit_chunk(con, run_id, 0, 3, 40)
    rec = wh.run(run_id)
    assert (rec.status, rec.model, rec.n_phrases, rec.n_rows) == ("running", "toy", 3, 40)
    assert (rec.layers, rec.sae_layers, rec.steer, rec.residuals, rec.neurons) == (
        [1, 2],
        [2],
        "push",
        True,
        False,
    )
    assert rec["status"] == "running" and rec["config"]["residuals"] is True
    assert rec.n_selected == 7 and not rec.is_base and not rec.finished
    assert json.loads(json.dumps(rec.to_dict(), default=str))["run_id"] == run_id
    with pytest.raises(KeyError):
        rec["nope"]
    with pytest.raises(XlingError, match="no run 99"):
        wh.run(99)


def test_default_run_is_the_newest_finished_base_run(wh):
    with wh.transaction() as con:
        base_model, tuned_model = _model(con), _model(con, adapter="/lora")
        base = _run(con, base_model, residuals=True)
        _run(con, base_model)  # newer, no residuals
        _run(con, tuned_model, adapter="/lora")
        _run(con, base_model, steer="push")
        _run(con, base_model, status="failed")
    assert wh.resolve_run(None) == base + 1
    assert wh.resolve_run(None, needs="residuals") == base
    with pytest.raises(XlingError, match=rf"run {base + 1} has no residuals; run {base} has them"):
        wh.resolve_run(base + 1, needs="residuals")
    with pytest.raises(XlingError, match="no finished run has neurons; ingest with --neurons"):
        wh.resolve_run(None, needs="neurons")


def test_only_tuned_runs_name_the_run_to_pass(wh):
    with wh.transaction() as con:
        tuned = _run(con, _model(con, adapter="/lora"), adapter="/lora")
    with pytest.raises(XlingError, match=rf"run {tuned} has an adapter or steering: pass --run"):
        wh.resolve_run(None)
    assert wh.resolve_run(tuned) == tuned


def test_an_sae_directory_is_registered_once(wh):
    facts = catalog.SaeFacts(
        layer=0, sae_name="run1/layer_0", release=None, path="/saes/layer_0", d_in=8, d_sae=16
    )
    with wh.transaction() as con:
        model_id = _model(con)
        trained = catalog.register_sae(
            con, model_id, catalog.SaeFacts(**{**facts.__dict__, "explained_variance": 0.8})
        )
        # Loading the directory later (its own name, no metrics) finds the same row.
        loaded = catalog.register_sae(
            con, model_id, catalog.SaeFacts(**{**facts.__dict__, "sae_name": "layer_0"})
        )
        pretrained = catalog.register_sae(
            con, model_id, catalog.SaeFacts(**{**facts.__dict__, "path": None, "release": "r"})
        )
    assert loaded == trained != pretrained
    assert wh.sql("SELECT explained_variance FROM saes ORDER BY sae_id")[
        "explained_variance"
    ].tolist()[0] == pytest.approx(0.8)
    assert wh.scalar("SELECT count(*) FROM saes") == 2


def test_migration_005_backfills_old_runs():
    con = duckdb.connect()
    steps = migrations()
    for name, text in steps:
        if name.startswith("005"):
            break
        con.execute(text)
    con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('toy', 4, 8)")
    old = [
        {"saes": [{"layer": 0, "sae_id": 3}, {"layer": 2, "sae_id": 5}], "residuals": True},
        {"saes": [], "layers": [1, 3], "steer": "push", "adapter": "/lora", "neurons": True},
        {"saes": [], "layers": None, "engine": "ray", "n_selected": 12},
    ]
    for cfg in old:
        con.execute(
            "INSERT INTO runs (model_id, status, config) VALUES (1, 'finished', ?)",
            [json.dumps(cfg)],
        )
    con.execute(dict(steps)[next(n for n, _ in steps if n.startswith("005"))])
    assert con.sql("SELECT * FROM run_layers ORDER BY ALL").fetchall() == [
        (1, 0, 3),
        (1, 2, 5),
        (2, 1, None),
        (2, 3, None),
    ]
    assert con.sql(
        "SELECT adapter, steer, residuals, neurons, engine, n_selected FROM runs ORDER BY run_id"
    ).fetchall() == [
        (None, None, True, False, "local", None),
        ("/lora", "push", False, True, "local", None),
        (None, None, False, False, "ray", 12),
    ]
