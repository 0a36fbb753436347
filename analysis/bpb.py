"""Bits per byte of a model on the warehouse corpus, per language: a capability measure that
needs no benchmark data (SPEC §6).

    bpb(lang) = Σ_p NLL(p) / ln 2 / Σ_p bytes(p)   over the phrases p of `lang`

NLL(p) is the summed next-token negative log-likelihood (nats) of every token of the phrase's
text, each phrase scored on its own: the model reads [BOS] + tokens and predicts each token
from the ones before it, so the first token's loss given BOS counts and BOS itself is never
predicted. A tokenizer without BOS gets EOS as the prefix, as lm-eval does. bytes(p) is the
UTF-8 length of the text. Lower is better; unlike per-token perplexity it does not depend on
how finely the tokenizer cuts a script.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xling.analysis.benchmarks import Score, scores_table, store_scores
from xling.ingest.models import ModelSpec, run_spec, spec_from
from xling.ingest.steering import load_recipe
from xling.warehouse import catalog
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.ingest.models import LoadedModel
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

TASK = "bpb"
METRIC = "bpb"


@dataclass
class BpbConfig:
    """`xling bench bpb`: bits per byte of one model on the corpus."""

    model: str | None = None
    """What to load (as for ingest); None = the model of `run`."""
    run: int | None = None
    """Score only the phrases this run ingested; None with no model = the latest run."""
    langs: list[str] | None = None
    """Languages to score; None = every language with phrases."""
    groups: int | None = None
    """Score only the first N aligned groups (by group_id): the same content in every
    language, and a bounded cost (a 262k-token vocabulary makes each token expensive)."""
    adapter: str | None = None
    steer: str | None = None
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise XlingError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.groups is not None and self.groups < 1:
            raise XlingError(f"--groups must be ≥ 1, got {self.groups}")


def phrase_nll(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL in nats [n], tokens predicted [n]) of each text, scored independently.

    Texts are batched by token length and right-padded, so padding never precedes a real
    token and positions match an unpadded forward pass.
    """
    import torch

    prefix = (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )
    if prefix is None:
        raise XlingError("the tokenizer has neither a BOS nor an EOS token to condition on")
    ids = [
        [prefix, *tokens]
        for tokens in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ]
    nll = np.zeros(len(ids), dtype=np.float64)
    n_tokens = np.array([len(x) - 1 for x in ids], dtype=np.int64)
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        # (positions, vocab) rows: log-softmax over contiguous memory, ~2x faster than over
        # the vocab axis of a transposed [B, V, T] view.
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            input_ids[:, 1:].reshape(-1),
            reduction="none",
        ).view(len(batch), width - 1)
        losses = (losses * mask[:, 1:]).double().sum(dim=1).cpu().numpy()
        nll[batch] = losses
    return nll, n_tokens


def corpus_phrases(
    wh: Warehouse,
    *,
    langs: Sequence[str] | None = None,
    run: int | None = None,
    groups: int | None = None,
) -> pd.DataFrame:
    """(phrase_id, lang, text) of the corpus, or of the phrases `run` ingested; with
    `groups`, only the first that many aligned groups (by group_id), so that every language
    is scored on the same content."""
    if langs:
        unknown = sorted(set(langs) - set(wh.sql("SELECT lang FROM languages")["lang"]))
        if unknown:
            raise XlingError(
                f"unknown language {unknown[0]!r}; `xling corpus languages list` shows the "
                "known ones"
            )
    df = wh.sql(
        "WITH sel AS (SELECT p.phrase_id, p.group_id, p.lang, p.text FROM phrases p "
        "  WHERE (CAST(? AS INTEGER) IS NULL OR p.phrase_id IN "
        "         (SELECT phrase_id FROM phrase_tokens WHERE run_id = ?)) "
        "  AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(?, p.lang))) "
        "SELECT phrase_id, lang, text FROM sel "
        "WHERE CAST(? AS BIGINT) IS NULL OR group_id IN "
        "  (SELECT DISTINCT group_id FROM sel ORDER BY group_id LIMIT coalesce(?, 0)) "
        "ORDER BY phrase_id",
        [run, run, langs or None, langs or None, groups, groups],
    )
    if df.empty:
        where = f" of run {run}" if run is not None else ""
        raise XlingError(f"no phrases{where} to score; load a corpus with `xling corpus load`")
    return df


def bpb_by_language(phrases: pd.DataFrame, nll: np.ndarray) -> pd.DataFrame:
    """Per language: bpb, summed NLL (nats), UTF-8 bytes, phrases, from per-phrase NLL."""
    df = phrases.assign(nll_nats=nll, n_bytes=[len(t.encode("utf-8")) for t in phrases["text"]])
    out = (
        df.groupby("lang", sort=True)
        .agg(nll_nats=("nll_nats", "sum"), n_bytes=("n_bytes", "sum"), n_phrases=("text", "size"))
        .reset_index()
    )
    out.insert(1, "bpb", out["nll_nats"] / math.log(2) / out["n_bytes"])
    return out


def corpus_bpb(
    wh: Warehouse,
    model: Any,
    tokenizer: Any,
    *,
    langs: Sequence[str] | None = None,
    run: int | None = None,
    groups: int | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Bits per byte per language of an already-built model on the warehouse corpus."""
    phrases = corpus_phrases(wh, langs=langs, run=run, groups=groups)
    nll, n_tokens = phrase_nll(model, tokenizer, phrases["text"].tolist(), batch_size=batch_size)
    out = bpb_by_language(phrases, nll)
    tokens = pd.Series(n_tokens).groupby(phrases["lang"].to_numpy()).sum()
    out["n_tokens"] = out["lang"].map(tokens).astype("int64")
    return out


def bench_bpb(wh: Warehouse, cfg: BpbConfig, *, model: LoadedModel | None = None) -> pd.DataFrame:
    """Compute bits per byte per language and store it in `benchmarks` (task and metric
    `bpb`, n_samples = phrases); returns the per-language table with model_id.

    `model` reuses an already loaded model as it is (see `prepared_model`).
    """
    from xling.analysis.lmeval_run import prepared_model
    from xling.ingest.models import register_model

    run = cfg.run if cfg.run is None else wh.resolve_run(cfg.run)
    if cfg.model is None and model is None:
        run = wh.resolve_run(run)  # the run's model, on the run's phrases
    with prepared_model(_model_spec(wh, cfg, run, model), model=model) as lm:
        table = corpus_bpb(
            wh,
            lm.model,
            lm.tokenizer,
            langs=cfg.langs,
            run=run,
            groups=cfg.groups,
            batch_size=cfg.batch_size,
        )
    scores = [
        Score(TASK, row.lang, METRIC, float(row.bpb), n_samples=int(row.n_phrases))
        for row in table.itertuples(index=False)
    ]
    where = (f"run {run}" if run is not None else "corpus") + (
        f", first {cfg.groups} groups" if cfg.groups else ""
    )
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        catalog.record_job(con, "bench-bpb", {**asdict(cfg), "run": run}, model_id)
        store_scores(
            con,
            scores_table(model_id, scores, source=f"xling bench bpb ({where})", steer=cfg.steer),
        )
    log.info("bits per byte of %s on %d languages stored", lm.name, len(table))
    return table.assign(model_id=model_id)


def _model_spec(
    wh: Warehouse, cfg: BpbConfig, run: int | None, model: LoadedModel | None
) -> ModelSpec:
    """The model to score: the config's, or (no --model) the one `run` (default: the latest)
    read, every loading field of its recorded config kept; --adapter and --steer replace the
    run's adapter and steering, --dtype and --device its own."""
    steering = load_recipe(wh, cfg.steer) if cfg.steer else None
    if cfg.model is not None or model is not None:
        return spec_from(cfg, source=cfg.model or model.name, steering=steering)
    spec = run_spec(wh, run, dtype=cfg.dtype, device=cfg.device, steering=steering)
    return dataclasses.replace(spec, adapter=cfg.adapter or spec.adapter)
