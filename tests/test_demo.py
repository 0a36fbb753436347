"""The demo's result tables on the tiny model: the same functions `xling demo` calls."""

from __future__ import annotations

import numpy as np

from xling.ingest.models import load_model
from xling.ingest.runner import IngestConfig, run_ingest
from xling.pipeline.demo import benchmark_tables, demo_tables


def test_demo_tables_and_information_parity(corpus_wh, tiny_model_dir, tiny_sae_dirs):
    wh = corpus_wh
    cfg = IngestConfig(
        model=str(tiny_model_dir), sae_dir=str(tiny_sae_dirs[0].parent), residuals=True
    )
    lm = load_model(str(tiny_model_dir))
    run_id = run_ingest(wh, cfg, model=lm)
    titles = [t for t, _ in demo_tables(wh, run_id)]
    assert len(titles) == 3
    (_, par), (_, corr) = benchmark_tables(wh, lm, run_id)
    assert set(par["lang"]) == {"en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi"}
    assert np.isfinite(par["parity"]).all() and (par["parity"] > 0).all()
    assert float(par.loc[par["lang"] == "en", "parity"].iloc[0]) == 1.0
    stored = wh.sql("SELECT lang, value FROM benchmarks WHERE task = 'parity' ORDER BY lang")
    assert np.allclose(stored["value"], par.sort_values("lang")["parity"])
    assert corr["layer"].tolist() == [0] and int(corr["n"].iloc[0]) == 9
