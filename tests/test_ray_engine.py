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
