"""Capability across scripts without benchmark data (SPEC §3): token premium and information
parity, per language.

- token premium(l) = Σ tokens(l) / Σ tokens(ref) over the aligned groups holding both, BOS
  excluded (view token_premium, from phrase_tokens: no model pass);
- information parity(l) = mean over those groups of NLL(p_{g,ref}) / NLL(p_{g,l}) (Tsvetkov &
  Kipnis 2024), NLL in nats summed over every real token of the phrase, each read after BOS
  (`xling.analysis.bpb.phrase_nll`). `bench_parity` scores the phrases once on a run's model
  (its adapter merged in, its steering hooked in, as `bench` does), keeps the per-phrase NLL in
  `phrase_nll` (view information_parity) and the per-language parity in `benchmarks` (task and
  metric `parity`), so `xling query correlate --task parity` and the view gap_vs_benchmark
  use it like any benchmark.

Unlike bits per byte, neither depends on how many UTF-8 bytes a script spends per character:
both compare the same content in two languages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.ingest.models import LoadedModel, ModelSpec
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

TASK = "parity"
METRIC = "parity"


@dataclass
class ParityConfig:
    """`xling bench parity`: information parity of a run's model on the corpus."""

    run: int | None = None
    """The run whose model (adapter and steering included) and phrases are scored; None = the
    latest finished run, unless `model` is given."""
    model: str | None = None
    """Load this model instead of the run's (then the whole corpus is scored unless `run`)."""
    groups: int | None = None
    """Only the first N aligned groups (by group_id): a bounded cost."""
    ref: str = "en"
    """The language every other is compared with."""
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise XlingError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.groups is not None and self.groups < 1:
            raise XlingError(f"--groups must be ≥ 1, got {self.groups}")


def _model_of(wh: Warehouse, run: int) -> tuple[int, str | None]:
    info = wh.run(run)
    return int(info["model_id"]), info["config"].get("steer")


def parity(wh: Warehouse, model_id: int, steer: str | None, ref: str = "en") -> pd.DataFrame:
    """lang, parity, n_groups of one model under one steering (view information_parity)."""
    return wh.sql(
        "SELECT lang, parity, n_groups FROM information_parity(ref := ?) "
        "WHERE model_id = ? AND steer IS NOT DISTINCT FROM ? ORDER BY lang",
        [ref, model_id, steer],
    )


def premium(wh: Warehouse, run: int, ref: str = "en") -> pd.DataFrame:
    """lang, premium, n_tokens, ref_tokens, n_groups of one run (view token_premium)."""
    return wh.sql(
        "SELECT lang, premium, n_tokens, ref_tokens, n_groups FROM token_premium(ref := ?) "
        "WHERE run_id = ? ORDER BY lang",
        [ref, run],
    )


def capability(wh: Warehouse, run: int | None = None, ref: str = "en") -> pd.DataFrame:
    """Per language of `run`: resource_group, premium (against `ref`) and parity of the run's
    model under its steering (NaN until `xling bench parity` has scored it), n_groups of each."""
    run_id = wh.resolve_run(run)
    langs = set(
        wh.sql(
            "SELECT DISTINCT p.lang FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
            "WHERE t.run_id = ?",
            [run_id],
        )["lang"]
    )
    if ref not in langs:
        raise XlingError(
            f"run {run_id} has no phrases in {ref!r}; its languages are {', '.join(sorted(langs))}"
        )
    model_id, steer = _model_of(wh, run_id)
    prem = premium(wh, run_id, ref).rename(columns={"n_groups": "premium_groups"})
    par = parity(wh, model_id, steer, ref).rename(columns={"n_groups": "parity_groups"})
    if par.empty:
        log.warning(
            "no parity for run %d's model yet; run `xling bench parity --run %d`", *[run_id] * 2
        )
    groups = wh.sql("SELECT lang, resource_group FROM languages")
    df = prem[["lang", "premium", "premium_groups"]].merge(par, on="lang", how="left")
    df = df.merge(groups, on="lang", how="left")
    df.insert(0, "run_id", run_id)
    order = {"high": 0, "low": 1}
    df = df.assign(_g=df["resource_group"].map(order).fillna(2)).sort_values(["_g", "lang"])
    cols = ["run_id", "lang", "resource_group", "premium", "parity", "premium_groups"]
    return df[[*cols, "parity_groups"]].reset_index(drop=True)


def parity_by_language(phrases: pd.DataFrame, nll: np.ndarray, ref: str = "en") -> pd.DataFrame:
    """lang, parity, n_groups from per-phrase NLL (phrases: phrase_id, group_id, lang)."""
    df = phrases.assign(nll=nll)
    df = df[df["nll"] > 0]
    base = df[df["lang"] == ref].set_index("group_id")["nll"]
    df = df[df["group_id"].isin(base.index)]
    ratio = base.loc[df["group_id"]].to_numpy() / df["nll"].to_numpy()
    out = (
        df.assign(ratio=ratio)
        .groupby("lang", sort=True)
        .agg(parity=("ratio", "mean"), n_groups=("ratio", "size"))
        .reset_index()
    )
    return out


def bench_parity(
    wh: Warehouse, cfg: ParityConfig, *, model: LoadedModel | None = None
) -> pd.DataFrame:
    """Score every phrase of the run (or the corpus) with its model, store the per-phrase NLL
    (`phrase_nll`, replacing earlier rows of the same model and steering) and the parity per
    language (`benchmarks`, task and metric `parity`, n_samples = groups); returns lang, parity,
    n_groups, model_id."""
    import pyarrow as pa

    from xling.analysis.benchmarks import Score, scores_table, store_scores
    from xling.analysis.bpb import corpus_phrases, phrase_nll
    from xling.analysis.lmeval_run import prepared_model
    from xling.ingest.models import register_model
    from xling.warehouse.writer import append_arrow

    run = cfg.run
    if cfg.model is None and model is None:
        run = wh.resolve_run(run)  # the run's model, on the run's phrases
    elif run is not None:
        run = wh.resolve_run(run)
    spec = _model_spec(wh, cfg, run, model)
    steer = spec.steering.name if spec.steering is not None else None
    phrases = corpus_phrases(wh, run=run, groups=cfg.groups)
    groups = wh.sql(
        "SELECT phrase_id, group_id FROM phrases WHERE phrase_id IN (SELECT unnest(?))",
        [phrases["phrase_id"].tolist()],
    )
    phrases = phrases.merge(groups, on="phrase_id")
    if cfg.ref not in set(phrases["lang"]):
        raise XlingError(f"no phrases in {cfg.ref!r} to compare with; load them or pick --ref")
    with prepared_model(spec, model=model) as lm:
        nll, n_tokens = phrase_nll(
            lm.model, lm.tokenizer, phrases["text"].tolist(), batch_size=cfg.batch_size
        )
    table = parity_by_language(phrases, nll, cfg.ref)
    where = (f"run {run}" if run is not None else "corpus") + (
        f", first {cfg.groups} groups" if cfg.groups else ""
    )
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        con.execute(
            "DELETE FROM phrase_nll WHERE model_id = ? AND steer IS NOT DISTINCT FROM ? "
            "AND phrase_id IN (SELECT unnest(?))",
            [model_id, steer, phrases["phrase_id"].tolist()],
        )
        append_arrow(
            con,
            "phrase_nll",
            pa.table(
                {
                    "model_id": pa.array([model_id] * len(phrases), pa.int32()),
                    "steer": pa.array([steer] * len(phrases), pa.string()),
                    "phrase_id": pa.array(phrases["phrase_id"].tolist(), pa.int64()),
                    "nll_nats": pa.array(nll, pa.float64()),
                    "n_tokens": pa.array(n_tokens, pa.int32()),
                }
            ),
        )
        scores = [
            Score(TASK, row.lang, METRIC, float(row.parity), n_samples=int(row.n_groups))
            for row in table.itertuples(index=False)
        ]
        store_scores(
            con, scores_table(model_id, scores, source=f"xling bench parity ({where})", steer=steer)
        )
    log.info("information parity of %s on %d languages stored", lm.name, len(table))
    return table.assign(model_id=model_id)


def _model_spec(
    wh: Warehouse, cfg: ParityConfig, run: int | None, model: LoadedModel | None
) -> ModelSpec:
    """The model to score: the one `run` read (its loading fields, adapter and steering
    recipe; --dtype and --device replace its own), or the config's (or the loaded one's)
    under the run's steering, if a run is given."""
    from xling.ingest.models import ModelSpec, run_spec
    from xling.ingest.steering import load_recipe

    if cfg.model is None and model is None:
        return run_spec(wh, run, dtype=cfg.dtype, device=cfg.device)
    steer = wh.run(run).steer if run is not None else None
    return ModelSpec(
        source=cfg.model or model.name,
        dtype=cfg.dtype,
        device=cfg.device,
        steering=load_recipe(wh, steer) if steer else None,
    )
