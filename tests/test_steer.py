"""Steering: hooks change exactly the intended units, vanish on exit; recipes from the warehouse."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from xling.finetune.steer import Edit, SteeringRecipe, steering
from xling.warehouse.errors import XlingError

LAYER = 1
NEURONS = [2, 5, 9]


@pytest.fixture(scope="module")
def model_and_batch(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tok(["Germany", "Deutschland und Frankreich"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    return model, batch, logits


@contextlib.contextmanager
def record(model, layer):
    """Outputs of gate_proj, up_proj, the down_proj input and the block output at `layer`."""
    block = model.model.layers[layer]
    out = {}
    handles = [
        block.mlp.gate_proj.register_forward_hook(lambda m, i, o: out.__setitem__("gate", o)),
        block.mlp.up_proj.register_forward_hook(lambda m, i, o: out.__setitem__("up", o)),
        block.mlp.down_proj.register_forward_pre_hook(
            lambda m, i: out.__setitem__("down_in", i[0])
        ),
        block.register_forward_hook(lambda m, i, o: out.__setitem__("resid", o)),
    ]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def run(model, batch, recipe=None, layers=(0, LAYER, 3)):
    import torch

    recs = {}
    with contextlib.ExitStack() as stack:
        # Steering first: its hooks then run before the recorders, which see steered outputs.
        if recipe is not None:
            stack.enter_context(steering(model, recipe))
        for layer in layers:
            recs[layer] = stack.enter_context(record(model, layer))
        with torch.no_grad():
            logits = model(**batch).logits
    return recs, logits


def recipe_of(*edits):
    return SteeringRecipe("t", "neurons", {}, "tiny-gemma3", list(edits))


@pytest.mark.parametrize("op", ["add", "mul", "set"])
def test_neuron_edit_changes_exactly_the_selected_neurons(model_and_batch, op):
    import torch

    model, batch, logits0 = model_and_batch
    values = [1.5, -2.0, 0.25]
    base, _ = run(model, batch)
    steered, logits = run(model, batch, recipe_of(Edit("mlp_act", LAYER, op, values, NEURONS)))

    act = model.model.layers[LAYER].mlp.act_fn(base[LAYER]["gate"])
    v = torch.tensor(values)
    want = (
        act[..., NEURONS] + v
        if op == "add"
        else act[..., NEURONS] * v
        if op == "mul"
        else v.expand_as(act[..., NEURONS])
    )
    down_in = steered[LAYER]["down_in"]
    others = [j for j in range(act.shape[-1]) if j not in NEURONS]
    # Unselected neurons are untouched at every position; selected ones carry the edit everywhere.
    assert torch.equal(down_in[..., others], base[LAYER]["down_in"][..., others])
    torch.testing.assert_close(down_in[..., NEURONS], want * base[LAYER]["up"][..., NEURONS])
    assert torch.equal(steered[0]["resid"], base[0]["resid"])
    assert not torch.equal(steered[3]["resid"], base[3]["resid"])
    assert not torch.equal(logits, logits0)

    # The hooks are gone: the same forward gives bit-identical logits.
    _, after = run(model, batch)
    assert torch.equal(after, logits0)


def test_residual_edit_adds_the_vector_at_the_layer_only(model_and_batch):
    import torch

    model, batch, logits0 = model_and_batch
    vec = torch.linspace(-1, 1, model.config.hidden_size)
    base, _ = run(model, batch)
    steered, _ = run(model, batch, recipe_of(Edit("resid_post", LAYER, "add", vec.tolist())))
    assert torch.equal(steered[0]["resid"], base[0]["resid"])
    assert torch.equal(steered[LAYER]["resid"], base[LAYER]["resid"] + vec)
    assert not torch.equal(steered[3]["resid"], base[3]["resid"])
    _, after = run(model, batch)
    assert torch.equal(after, logits0)


def test_hooks_are_removed_when_the_block_raises(model_and_batch):
    import torch

    model, batch, logits0 = model_and_batch
    recipe = recipe_of(Edit("resid_post", 0, "mul", [0.0] * model.config.hidden_size))
    with pytest.raises(RuntimeError), steering(model, recipe):
        raise RuntimeError("boom")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, logits0)


def test_recipe_that_does_not_fit_the_model_is_refused(model_and_batch):
    model, _, _ = model_and_batch
    with (
        pytest.raises(XlingError, match="layer 9"),
        steering(model, recipe_of(Edit("mlp_act", 9, "add", [1.0], [0]))),
    ):
        pass
    with (
        pytest.raises(XlingError, match="does not fit"),
        steering(model, recipe_of(Edit("mlp_act", 0, "add", [1.0], [10_000]))),
    ):
        pass
    with (
        pytest.raises(XlingError, match="does not fit"),
        steering(model, recipe_of(Edit("resid_post", 0, "add", [1.0, 2.0]))),
    ):
        pass


# -- recipes built from the warehouse ---------------------------------------------------------


def _fake_run(wh, *, with_residuals: bool, rng) -> int:
    """A finished run over the corpus with random pooled residuals at layers 0-1 (d_model 8)."""
    import pyarrow as pa

    from xling.warehouse.writer import append_arrow

    with wh.transaction() as con:
        model_id = con.execute(
            "INSERT INTO models (name, n_layers, d_model, d_mlp) VALUES ('tiny-gemma3', 4, 8, 16) "
            "RETURNING model_id"
        ).fetchone()[0]
        run_id = con.execute(
            "INSERT INTO runs (model_id, status, config) VALUES (?, 'finished', '{}') RETURNING run_id",
            [model_id],
        ).fetchone()[0]
        if with_residuals:
            ids = [r[0] for r in con.execute("SELECT phrase_id FROM phrases ORDER BY 1").fetchall()]
            rows = [
                (pid, layer, rng.normal(size=8).astype(np.float32))
                for pid in ids
                for layer in (0, 1)
            ]
            append_arrow(
                con,
                "residuals",
                pa.table(
                    {
                        "run_id": pa.array([run_id] * len(rows), pa.int32()),
                        "phrase_id": [r[0] for r in rows],
                        "layer": pa.array([r[1] for r in rows], pa.int16()),
                        "vec": pa.array([r[2].tolist() for r in rows], pa.list_(pa.float32())),
                    }
                ),
            )
    return run_id


def test_residual_recipe_is_alpha_times_the_difference_of_means(corpus_wh):
    from xling.finetune.config import ResidualSteerConfig
    from xling.finetune.steer import add_intervention, load_recipe

    run_id = _fake_run(corpus_wh, with_residuals=True, rng=np.random.default_rng(0))
    add_intervention(
        corpus_wh, "ml-to-en", ResidualSteerConfig(run=run_id, lang="ml", layer=1, alpha=2.0)
    )

    raw = corpus_wh.sql(
        "SELECT p.lang, r.vec FROM residuals r JOIN phrases p USING (phrase_id) WHERE r.layer = 1"
    )
    mean = {
        lang: np.stack(raw[raw.lang == lang].vec.to_list()).astype(np.float64).mean(0)
        for lang in ("en", "ml")
    }
    recipe = load_recipe(corpus_wh, "ml-to-en")
    assert recipe.kind == "residual" and recipe.model == "tiny-gemma3"
    (edit,) = recipe.edits
    assert (edit.site, edit.layer, edit.op, edit.index) == ("resid_post", 1, "add", None)
    np.testing.assert_allclose(edit.values, 2.0 * (mean["en"] - mean["ml"]), rtol=1e-6, atol=1e-7)


def test_residual_recipe_needs_residuals(corpus_wh):
    from xling.finetune.config import ResidualSteerConfig
    from xling.finetune.steer import add_intervention

    run_id = _fake_run(corpus_wh, with_residuals=False, rng=np.random.default_rng(0))
    with pytest.raises(XlingError, match="--residuals"):
        add_intervention(corpus_wh, "x", ResidualSteerConfig(run=run_id, lang="ml", layer=1))
    assert corpus_wh.scalar("SELECT count(*) FROM interventions") == 0


def test_steer_cli_add_list_show_delete(corpus_wh, db_path, cli):
    run_id = _fake_run(corpus_wh, with_residuals=True, rng=np.random.default_rng(1))
    corpus_wh.close()
    args = ["--db", db_path]
    r = cli(
        "steer",
        "add",
        "hi-en",
        "--kind",
        "residual",
        "--run",
        run_id,
        "--lang",
        "hi",
        "--layer",
        0,
        "--alpha",
        0.5,
        *args,
    )
    assert r.exit_code == 0, r.stderr
    r = cli(
        "steer",
        "add",
        "hi-en",
        "--kind",
        "residual",
        "--run",
        run_id,
        "--lang",
        "hi",
        "--layer",
        0,
        *args,
    )
    assert r.exit_code == 1 and "exists" in r.stderr
    r = cli(
        "steer",
        "add",
        "bad",
        "--kind",
        "residual",
        "--run",
        run_id,
        "--lang",
        "hi",
        "--layer",
        3,
        *args,
    )
    assert r.exit_code == 1 and "layer 3" in r.stderr

    r = cli("steer", "list", "--format", "json", *args)
    assert r.exit_code == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert (row["name"], row["kind"], row["lang"], row["alpha"], row["layers"]) == (
        "hi-en",
        "residual",
        "hi",
        0.5,
        "0",
    )

    r = cli("steer", "show", "hi-en", *args)
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["config"]["layer"] == 0 and len(shown["edits"][0]["values"]) == 8

    r = cli("steer", "delete", "hi-en", *args)
    assert r.exit_code == 0, r.stderr
    r = cli("steer", "show", "hi-en", *args)
    assert r.exit_code == 1 and "no intervention" in r.stderr


@pytest.fixture
def neuron_run(corpus_wh, tiny_model_dir):
    from xling.ingest.runner import IngestConfig, run_ingest

    return run_ingest(corpus_wh, IngestConfig(model=str(tiny_model_dir), neurons=True))


def test_neuron_recipe_values_from_neuron_stats(corpus_wh, neuron_run):
    from xling.analysis.queries import lape
    from xling.finetune.config import NEURON_MODES, NeuronSteerConfig
    from xling.finetune.steer import add_intervention

    selected = lape(corpus_wh, kind="neurons", lang="hi", top_rate=0.05, run=neuron_run)
    stats = corpus_wh.sql("SELECT * FROM neuron_stats WHERE run_id = ?", [neuron_run])
    mean = {  # (lang, layer, neuron) -> mean activation, straight from the raw rows
        (r.lang, r.layer, r.neuron): r.act_sum / r.n_tokens for r in stats.itertuples()
    }
    langs = sorted(stats["lang"].unique())
    for mode in NEURON_MODES:
        cfg = NeuronSteerConfig(run=neuron_run, lang="hi", mode=mode, alpha=1.5, top_rate=0.05)
        recipe = add_intervention(corpus_wh, mode, cfg)
        got = {}
        for edit in recipe.edits:
            assert edit.site == "mlp_act"
            got.update(
                {
                    (edit.layer, j): (edit.op, v)
                    for j, v in zip(edit.index, edit.values, strict=True)
                }
            )
        assert set(got) == set(zip(selected["layer"], selected["neuron"], strict=True))
        for (layer, j), (op, value) in got.items():
            target = mean[("hi", layer, j)]
            others = np.mean([mean[(lang, layer, j)] for lang in langs if lang != "hi"])
            want = {
                "scale": ("mul", 1.5),
                "replacement": ("set", target),
                "additive": ("add", 1.5 * target),
                "diffmean": ("add", 1.5 * (target - others)),
            }[mode]
            assert op == want[0]
            assert value == pytest.approx(want[1], rel=1e-9, abs=1e-12)


def test_steer_cli_neurons(corpus_wh, neuron_run, db_path, cli):
    from xling.analysis.queries import lape

    layers = sorted(
        set(lape(corpus_wh, kind="neurons", lang="mr", top_rate=0.05, run=neuron_run)["layer"])
    )
    corpus_wh.close()
    base = [
        "--kind",
        "neurons",
        "--run",
        neuron_run,
        "--lang",
        "mr",
        "--top-rate",
        0.05,
        "--db",
        db_path,
    ]
    r = cli("steer", "add", "mr-up", *base, "--mode", "diffmean", "--alpha", 2)
    assert r.exit_code == 0, r.stderr
    assert f"at layers {','.join(map(str, layers))}" in r.stdout
    missing = next(layer for layer in range(4) if layer not in layers)
    r = cli("steer", "add", "mr-x", *base, "--layers", missing)
    assert r.exit_code == 1 and f"no LAPE neurons at layers [{missing}]" in r.stderr
    r = cli("steer", "add", "mr-y", *base, "--mode", "louder")
    assert r.exit_code == 2  # a usage error: click rejects the choice


def test_neuron_recipe_refuses_a_run_without_neuron_stats(corpus_wh, tiny_model_dir):
    from xling.finetune.config import NeuronSteerConfig
    from xling.finetune.steer import add_intervention

    run = _fake_run(corpus_wh, with_residuals=True, rng=np.random.default_rng(0))
    with pytest.raises(XlingError, match="--neurons"):
        add_intervention(corpus_wh, "x", NeuronSteerConfig(run=run, lang="hi"))
    with pytest.raises(XlingError, match="steering mode"):
        NeuronSteerConfig(run=run, lang="hi", mode="boost")
