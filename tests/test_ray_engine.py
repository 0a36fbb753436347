"""The Ray engine on a local CPU cluster: same rows as the local engine, idempotent import."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from tinymodel import cldr_phrases, insert_phrases  # noqa: E402

from xling.ingest.ray_engine import RayOptions, run_ingest_ray  # noqa: E402
from xling.ingest.runner import IngestConfig, run_ingest  # noqa: E402
from xling.warehouse import Warehouse  # noqa: E402
from xling.warehouse.errors import XlingError  # noqa: E402
from xling.warehouse.parquet import import_parts  # noqa: E402

FEATURES = "SELECT phrase_id, layer, feature, act_mean, act_max, n_active FROM feature_acts "
RESIDUALS = "SELECT phrase_id, layer, vec FROM residuals "


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def both(ray_cluster, tmp_path_factory, tiny_model_dir, tiny_sae_dirs):
    """The same corpus ingested by the local engine and by Ray (batch 16: several parts)."""
    tmp = tmp_path_factory.mktemp("ray")
    config = dict(
        model=str(tiny_model_dir),
        sae_dir=str(tiny_sae_dirs[0].parent),
        residuals=True,
        batch_size=16,
    )
    local = Warehouse(tmp / "local.duckdb")
    insert_phrases(local, cldr_phrases(6))
    local_run = run_ingest(local, IngestConfig(**config))
    remote = Warehouse(tmp / "ray.duckdb")
    insert_phrases(remote, cldr_phrases(6))
    parts = tmp / "parts"
    run_id, result = run_ingest_ray(
        remote, IngestConfig(**config), RayOptions(parts=str(parts), concurrency=1)
    )
    yield local, local_run, remote, run_id, result, parts
    local.close()
    remote.close()


def test_rows_identical_to_local_engine(both):
    local, local_run, remote, run_id, result, _ = both
    assert remote.run(run_id)["status"] == "finished"
    assert result.finished and result.missing == 0 and result.parts == 4  # 60 phrases / 16
    for query, order in ((FEATURES, "phrase_id, layer, feature"), (RESIDUALS, "phrase_id, layer")):
        a = local.sql(f"{query} WHERE run_id = ? ORDER BY {order}", [local_run])
        b = remote.sql(f"{query} WHERE run_id = ? ORDER BY {order}", [run_id])
        assert len(a) > 0
        assert a.equals(b)
    tokens = "SELECT phrase_id, n_tokens FROM phrase_tokens WHERE run_id = ? ORDER BY phrase_id"
    assert local.sql(tokens, [local_run]).equals(remote.sql(tokens, [run_id]))
    n = remote.scalar("SELECT n_rows FROM runs WHERE run_id = ?", [run_id])
    assert n == remote.scalar("SELECT count(*) FROM feature_acts WHERE run_id = ?", [run_id])
    # imported in layer order
    layers = remote.sql("SELECT layer FROM feature_acts WHERE run_id = ? ORDER BY rowid", [run_id])
    assert layers["layer"].is_monotonic_increasing


def test_import_again_changes_nothing(both):
    _, _, remote, run_id, _, parts = both
    before = remote.sql(f"{FEATURES} WHERE run_id = ? ORDER BY phrase_id, layer, feature", [run_id])
    again = import_parts(remote, parts, run_id)
    assert again.finished and again.phrases == 60
    after = remote.sql(f"{FEATURES} WHERE run_id = ? ORDER BY phrase_id, layer, feature", [run_id])
    assert after.equals(before)


def test_neurons_refused_before_anything_is_written(both, tiny_model_dir):
    _, _, remote, _, _, parts = both
    runs = remote.scalar("SELECT count(*) FROM runs")
    with pytest.raises(XlingError, match="--neurons"):
        run_ingest_ray(
            remote,
            IngestConfig(model=str(tiny_model_dir), neurons=True),
            RayOptions(parts=str(parts)),
        )
    assert remote.scalar("SELECT count(*) FROM runs") == runs


@pytest.fixture(scope="module")
def tuned_inputs(tmp_path_factory, tiny_model_dir):
    """A LoRA on the tiny model (random, non-zero B so it changes the activations) and a
    steering recipe adding a constant to the residual stream at layer 1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(
        base,
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False),
    )
    out = tmp_path_factory.mktemp("lora") / "lora"
    lora.save_pretrained(out)
    from xling.ingest.steering import Edit, SteeringRecipe

    recipe = SteeringRecipe(
        name="push",
        kind="residual",
        config={"lang": "hi", "alpha": 1.0, "run": 0},
        model="tiny",
        edits=[Edit(site="resid_post", layer=1, op="add", values=[0.5] * 64)],
    )
    return out, recipe


@pytest.mark.parametrize("change", ["adapter", "steer"])
def test_ray_rows_equal_local_rows_with_adapter_and_steering(
    change, ray_cluster, tmp_path, tiny_model_dir, tiny_sae_dirs, tuned_inputs
):
    """A Ray actor loads the model as the local engine does: adapter merged, steering hooked in
    (the rows differ from the base model's, and are the local engine's rows exactly)."""
    lora_dir, recipe = tuned_inputs
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_phrases(wh, cldr_phrases(3))
    wh.con.execute(
        "INSERT INTO interventions (name, kind, config) VALUES (?, ?, ?)",
        [recipe.name, recipe.kind, recipe.to_json()],
    )
    common = dict(model=str(tiny_model_dir), sae_dir=str(tiny_sae_dirs[0].parent), residuals=True)
    extra = {"adapter": str(lora_dir)} if change == "adapter" else {"steer": "push"}
    base = run_ingest(wh, IngestConfig(**common, batch_size=8))
    local = run_ingest(wh, IngestConfig(**common, **extra, batch_size=8))
    ray_run, result = run_ingest_ray(
        wh, IngestConfig(**common, **extra, batch_size=8), RayOptions(parts=str(tmp_path / "p"))
    )
    assert result.finished
    for query, order in ((FEATURES, "phrase_id, layer, feature"), (RESIDUALS, "phrase_id, layer")):
        rows = {
            run: wh.sql(f"{query} WHERE run_id = ? ORDER BY {order}", [run])
            for run in (base, local, ray_run)
        }
        assert len(rows[local]) > 0
        assert rows[ray_run].equals(rows[local])
        assert not rows[local].equals(rows[base])
    record = wh.run(ray_run)
    assert record.engine == "ray"
    if change == "adapter":
        assert record.adapter == str(lora_dir.resolve())
    else:
        assert record.steer == "push" and record.config["steering"]["edits"][0]["layer"] == 1
    wh.close()
