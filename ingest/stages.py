"""The ingest stages that every engine shares: plan -> batches -> a batch processor -> a sink.

    plan = plan_run(wh, selection, lm, saes, done=set())   layers, phrase ids to do, languages
    for batch in batches(wh, plan, tokenizer, rows, batch_size=, max_tokens=): ...
    processor = BatchProcessor(lm, saes, plan.layers, plan.langs, rows)   owns model, SAEs, hooks
    sink.write(batch, processor(batch))                  xling.ingest.sinks: warehouse or Parquet

`ProcessorSpec` is the picklable recipe of a processor (the model spec, the SAEs a run recorded,
its layers, languages and row settings): `spec.open()` loads everything, which is how a Ray
actor builds the same processor as the local engine.

Phrases are read in windows of phrase ids, tokenised, sorted by token length and batched with
right padding (causal attention makes every real token's residual independent of the padding).
The decoder stack runs without the LM head and stops after the last needed block; hooks read
each block's output (layer L = `blocks.L.hook_resid_post`). Pooling runs over real tokens, BOS
excluded unless `include_bos` (see pooling.py). Rows are built with tensor ops and returned as
Arrow; nothing is written here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from xling.ingest.models import LoadedModel, ModelSpec
from xling.ingest.saes import LoadedSae, check_saes, load_recorded_saes
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

FEATURE_MODES = ("all", "origin", "topk")
# Phrases tokenised and length-sorted together; larger windows waste less padding.
WINDOW_BATCHES = 64


@dataclass(frozen=True)
class RowSpec:
    """Which rows a batch yields: part of what defines a run."""

    features: str = "all"  # all | origin | topk: which feature rows are kept
    topk: int | None = None  # with features="topk": rows per phrase and layer (K >= 1)
    include_bos: bool = False  # pool the BOS token too
    residuals: bool = False  # mean-pooled residuals per phrase and layer
    neurons: bool = False  # per-language MLP neuron firing counts (LAPE)

    def __post_init__(self) -> None:
        if self.features not in FEATURE_MODES:
            raise XlingError(
                f"bad features mode {self.features!r}; use all, origin or topk (with K >= 1)"
            )
        if (self.features == "topk") != (self.topk is not None) or (
            self.topk is not None and self.topk < 1
        ):
            raise XlingError("features topk needs K >= 1 (--features topk:K), and only it")


@dataclass(frozen=True)
class Selection:
    """Which phrases and layers a run covers: part of what defines a run."""

    layers: list[int] | None = None  # None: every layer with an SAE (all with dense rows only)
    langs: list[str] | None = None  # only these languages (None: all)
    limit: int | None = None  # only the first N phrases (by phrase_id, after langs)
    shard: tuple[int, int] | None = None  # (i, n): only phrases with phrase_id % n == i


@dataclass
class RunPlan:
    """Everything resolved before the first write."""

    layers: list[int]  # layers whose residual stream is read
    todo: np.ndarray  # phrase ids still to ingest, sorted
    total: int  # phrases in the run (done before + todo)
    langs: list[str]  # language slots for neuron counts


@dataclass
class Batch:
    """One forward pass worth of phrases, tokenised."""

    phrase_ids: np.ndarray  # [B]
    lang_slots: np.ndarray  # [B] index into plan.langs
    input_ids: list[list[int]]
    origins: dict[int, list[tuple[int, int]]]  # batch row -> [(layer, feature)]


@dataclass
class BatchRows:
    """A batch's rows as Arrow tables; neuron counts as tensors (a sink sums them)."""

    features: pa.Table | None
    residuals: pa.Table | None
    tokens: pa.Table
    neurons: dict[int, tuple[Any, Any, Any]]  # layer -> (n_tok [L], n_pos [L, N], act_sum [L, N])


class NonFinite(Exception):
    """A NaN or infinity in the residual stream or the SAE activations of one phrase."""

    def __init__(self, phrase_id: int, layer: int, where: str) -> None:
        super().__init__(phrase_id, layer, where)
        self.phrase_id, self.layer, self.where = phrase_id, layer, where


# -- planning ----------------------------------------------------------------------------


def check_layer_range(layers: list[int] | None, lm: LoadedModel) -> None:
    """Refuse a requested layer the model does not have."""
    bad = [layer for layer in layers or [] if layer >= lm.n_layers]
    if bad:
        raise XlingError(f"layer {bad[0]} out of range: {lm.name} has layers 0-{lm.n_layers - 1}")


def plan_run(
    wh: Warehouse,
    selection: Selection,
    rows: RowSpec,
    lm: LoadedModel,
    saes: dict[int, LoadedSae],
    done: set[int],
) -> RunPlan:
    """Check the SAEs against the model and resolve the layers, phrases and languages."""
    check_saes(saes, lm.d_model, lm.n_layers)
    wants_dense = rows.residuals or rows.neurons
    if selection.layers is not None:
        layers = selection.layers
        missing = [layer for layer in layers if layer not in saes]
        if missing and not wants_dense:
            raise XlingError(
                f"no SAE for layer(s) {', '.join(map(str, missing))} of {lm.name}; pass "
                "--sae-release/--sae-id or --sae-dir, train them with `xling sae train`, "
                "or ask only for --residuals/--neurons there"
            )
    elif saes:
        layers = sorted(saes)
    elif wants_dense:
        layers = list(range(lm.n_layers))
    else:
        raise XlingError(
            f"no SAEs for {lm.name}: pass --sae-release/--sae-id or --sae-dir, train some with "
            "`xling sae train`, or ask for --residuals/--neurons only"
        )
    langs = _check_langs(wh, selection.langs)
    selected = _select_phrases(wh, selection, langs)
    if selected.size == 0:
        raise XlingError("no phrases to ingest; load a corpus first (`xling corpus load ...`)")
    if rows.features == "origin":
        _check_origins(wh, selected, [layer for layer in layers if layer in saes])
    todo = selected[~np.isin(selected, np.fromiter(done, np.int64, len(done)))]
    all_langs = langs or [
        r[0] for r in wh.con.execute("SELECT DISTINCT lang FROM phrases ORDER BY lang").fetchall()
    ]
    return RunPlan(layers=layers, todo=todo, total=int(selected.size), langs=all_langs)


def _check_langs(wh: Warehouse, langs: list[str] | None) -> list[str] | None:
    if langs is None:
        return None
    known = {r[0] for r in wh.con.execute("SELECT lang FROM languages").fetchall()}
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise XlingError(f"unknown language code {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return sorted(set(langs))


def _select_phrases(wh: Warehouse, selection: Selection, langs: list[str] | None) -> np.ndarray:
    """The run's phrase ids: language filter, then --limit, then --shard."""
    where, params = "", []
    if langs is not None:
        where, params = "WHERE lang IN (SELECT unnest(?::VARCHAR[]))", [langs]
    limit = ""
    if selection.limit is not None:
        limit, params = "LIMIT ?", [*params, selection.limit]
    ids = wh.con.execute(
        f"SELECT phrase_id FROM phrases {where} ORDER BY phrase_id {limit}", params
    ).fetchnumpy()["phrase_id"]
    if selection.shard is not None:
        i, n = selection.shard
        ids = ids[ids % n == i]
    return ids.astype(np.int64)


def _check_origins(wh: Warehouse, ids: np.ndarray, sae_layers: list[int]) -> None:
    n = wh.scalar(
        "SELECT count(*) FROM phrases q JOIN phrases o USING (group_id) "
        "WHERE q.phrase_id IN (SELECT unnest(?::BIGINT[])) AND o.origin_layer IN "
        "(SELECT unnest(?::INTEGER[])) AND o.origin_feature IS NOT NULL",
        [ids.tolist(), sae_layers],
    )
    if not n:
        raise XlingError(
            "--features origin needs phrases whose group has an origin feature at an ingested "
            "SAE layer (origin_layer/origin_feature); use --features all or topk:K"
        )


# -- batches ------------------------------------------------------------------------------


def batches(
    wh: Warehouse,
    plan: RunPlan,
    tokenizer: Any,
    spec: RowSpec,
    *,
    batch_size: int,
    max_tokens: int,
) -> Iterator[Batch]:
    """Length-sorted batches over windows of phrase ids; one short read per window."""
    tok = tokenizer
    slot = {lang: i for i, lang in enumerate(plan.langs)}
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(plan.todo), window):
        ids = plan.todo[start : start + window]
        # A short session per window: an ingest between commits holds the file only here.
        with wh.session() as con:
            rows = con.execute(
                "SELECT phrase_id, lang, text FROM phrases WHERE phrase_id IN "
                "(SELECT unnest(?::BIGINT[])) ORDER BY phrase_id",
                [ids.tolist()],
            ).fetchall()
            origin_rows = (
                con.execute(
                    "SELECT DISTINCT q.phrase_id, o.origin_layer, o.origin_feature "
                    "FROM phrases q JOIN phrases o USING (group_id) WHERE q.phrase_id IN "
                    "(SELECT unnest(?::BIGINT[])) AND o.origin_layer IS NOT NULL "
                    "AND o.origin_feature IS NOT NULL",
                    [ids.tolist()],
                ).fetchall()
                if spec.features == "origin"
                else []
            )
        origins: dict[int, list[tuple[int, int]]] = {}
        for pid, layer, feature in origin_rows:
            origins.setdefault(int(pid), []).append((int(layer), int(feature)))
        enc = tok(
            [r[2] for r in rows],
            add_special_tokens=True,
            truncation=True,
            max_length=max_tokens,
        )["input_ids"]
        n_trunc = sum(len(e) >= max_tokens for e in enc)
        if n_trunc:
            log.info("%d phrases reached max_tokens=%d and were truncated", n_trunc, max_tokens)
        order = sorted(range(len(rows)), key=lambda i: len(enc[i]))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            pids = np.array([rows[i][0] for i in idx], dtype=np.int64)
            yield Batch(
                phrase_ids=pids,
                lang_slots=np.array([slot[rows[i][1]] for i in idx], dtype=np.int64),
                input_ids=[enc[i] for i in idx],
                origins={j: origins[int(p)] for j, p in enumerate(pids) if int(p) in origins},
            )


# -- processing ---------------------------------------------------------------------------


class BatchProcessor:
    """The loaded model, its SAEs and hooks: turns a batch into rows (forward, SAE encode,
    pooling). Nothing is written here; the model's adapter and steering come with `lm`."""

    def __init__(
        self,
        lm: LoadedModel,
        saes: dict[int, LoadedSae],
        layers: list[int],
        langs: list[str],
        rows: RowSpec,
    ) -> None:
        self.lm, self.saes, self.layers, self.langs, self.rows = lm, saes, layers, langs, rows

    def __call__(self, batch: Batch) -> BatchRows:
        import torch

        from xling.ingest.hooks import capture_blocks, capture_mlp_acts, forward_blocks, pad_right
        from xling.ingest.pooling import mean_pool, neuron_counts, pool_mask, sparse_feature_rows

        lm = self.lm
        tok = lm.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids, attn = pad_right(batch.input_ids, pad_id, lm.device)
        neuron_layers = self.layers if self.rows.neurons else []
        with (
            torch.inference_mode(),
            capture_blocks(lm.model, self.layers) as hidden,
            capture_mlp_acts(lm.model, neuron_layers) as mlp_acts,
        ):
            forward_blocks(lm.model, ids, attn, last_layer=max(self.layers))
            mask = pool_mask(ids, attn, tok.bos_token_id, self.rows.include_bos)
            real = attn.bool()
            pids = torch.from_numpy(batch.phrase_ids).to(lm.device)
            feats_parts: list[tuple[torch.Tensor, ...]] = []
            resid_parts: list[torch.Tensor] = []
            neurons: dict[int, tuple[Any, Any, Any]] = {}
            for layer in self.layers:
                h = hidden[layer]
                _check_finite(h, real, batch, layer, "residual stream")
                if layer in self.saes:
                    s = self.saes[layer]
                    feats = s.sae.encode(h.to(s.sae.dtype))
                    b, f, act_mean, act_max, n_active = sparse_feature_rows(feats, mask)
                    # With a finite residual only an overflowing (half-precision) SAE gives
                    # non-finite activations, and those reach the pooled rows.
                    bad = ~torch.isfinite(act_mean + act_max)
                    if bool(bad.any()):
                        raise NonFinite(
                            int(batch.phrase_ids[int(b[bad][0])]), layer, "SAE activations"
                        )
                    keep = _feature_filter(self.rows, batch, layer, b, f, act_max, s.d_sae)
                    if keep is not None:
                        b, f, act_mean, act_max, n_active = (
                            t[keep] for t in (b, f, act_mean, act_max, n_active)
                        )
                    feats_parts.append(
                        (pids[b], torch.full_like(f, layer), f, act_mean, act_max, n_active)
                    )
                if self.rows.residuals:
                    resid_parts.append(mean_pool(h.float(), mask))
                if self.rows.neurons:
                    acts = mlp_acts[layer]
                    lang_index = torch.from_numpy(batch.lang_slots).to(lm.device)
                    neurons[layer] = neuron_counts(acts.float(), mask, lang_index, len(self.langs))
            n_tokens = mask.sum(1)
        return BatchRows(
            features=_feature_table(feats_parts) if feats_parts else None,
            residuals=_residual_table(batch.phrase_ids, self.layers, resid_parts)
            if resid_parts
            else None,
            tokens=pa.table(
                {
                    "phrase_id": pa.array(batch.phrase_ids),
                    "n_tokens": pa.array(n_tokens.cpu().numpy().astype(np.int32)),
                }
            ),
            neurons=neurons,
        )


def _check_finite(
    t: torch.Tensor, real: torch.Tensor, batch: Batch, layer: int, where: str
) -> None:
    import torch

    # A sum over d_model is non-finite exactly when some element is: one cheap reduction.
    bad = ~torch.isfinite(t.sum(-1)) & real
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0, 0])
        raise NonFinite(int(batch.phrase_ids[row]), layer, where)


def _feature_filter(rows: RowSpec, batch: Batch, layer: int, b, f, act_max, d_sae: int):
    """Boolean mask over the batch's sparse rows for --features origin / topk:K; None keeps all."""
    import torch

    if rows.features == "origin":
        allowed = [
            row * d_sae + feat
            for row, pairs in batch.origins.items()
            for (lay, feat) in pairs
            if lay == layer
        ]
        keys = b * d_sae + f
        return torch.isin(keys, torch.tensor(allowed, dtype=keys.dtype, device=keys.device))
    k = rows.topk
    if k is None:
        return None
    # Rank each phrase's rows by act_max (ties: lower feature first) and keep ranks < k.
    order = torch.argsort(f, stable=True)
    order = order[torch.argsort(-act_max[order], stable=True)]
    order = order[torch.argsort(b[order], stable=True)]
    sorted_b = b[order]
    starts = torch.searchsorted(sorted_b, sorted_b, right=False)
    rank = torch.arange(len(order), device=b.device) - starts
    keep = torch.zeros_like(b, dtype=torch.bool)
    keep[order] = rank < k
    return keep


def _feature_table(parts: list[tuple[torch.Tensor, ...]]) -> pa.Table:
    import torch

    cols = [torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(6)]
    return pa.table(
        {
            "phrase_id": pa.array(cols[0].astype(np.int64)),
            "layer": pa.array(cols[1].astype(np.int16)),
            "feature": pa.array(cols[2].astype(np.int32)),
            "act_mean": pa.array(cols[3].astype(np.float32)),
            "act_max": pa.array(cols[4].astype(np.float32)),
            "n_active": pa.array(cols[5].astype(np.int16)),
        }
    )


def _residual_table(
    phrase_ids: np.ndarray, layers: list[int], parts: list[torch.Tensor]
) -> pa.Table:
    import torch

    vecs = torch.stack(parts).cpu().numpy().astype(np.float32)  # [L, B, D]
    n_layers, n, d = vecs.shape
    return pa.table(
        {
            "phrase_id": pa.array(np.tile(phrase_ids, n_layers)),
            "layer": pa.array(np.repeat(np.asarray(layers, dtype=np.int16), n)),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), d),
        }
    )


@dataclass(frozen=True)
class ProcessorSpec:
    """A BatchProcessor as plain data (picklable): what an engine's worker needs to build it."""

    model: ModelSpec  # with the run's adapter and steering
    saes: list[dict[str, Any]]  # the run's recorded SAEs (LoadedSae.describe())
    layers: list[int]
    langs: list[str]
    rows: RowSpec

    def open(self) -> BatchProcessor:
        """Load the model (adapter merged, steering attached) and the SAEs."""
        lm = self.model.load()
        saes = load_recorded_saes(self.saes, str(lm.device))
        return BatchProcessor(lm, saes, self.layers, self.langs, self.rows)
