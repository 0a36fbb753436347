"""The ingest runner: a model and its SAEs over the warehouse corpus, into sparse rows, resumable.

    IngestConfig(model=..., layers=..., sae_release=..., ...)   one run's settings (stored as JSON)
    run_ingest(wh, config, progress=fn) -> run_id
    resume_ingest(wh, run_id, progress=fn) -> run_id    finishes a killed or failed run

How a run goes (SPEC §4): everything is validated and the SAEs are checked against the model
before the first write. Phrases are read in windows of phrase ids, tokenised, sorted by token
length and batched with right padding (causal attention then makes every real token's
residual independent of the padding). The decoder stack runs without the LM head and stops
after the last needed block; hooks read each block's output (layer L = `blocks.L.hook_resid_post`).
Pooling runs over real tokens, BOS excluded unless `include_bos` (see pooling.py). Rows are
built with tensor ops, moved as Arrow and appended in chunks of at least `chunk_rows` rows,
each chunk in one transaction together with its ledger: `phrase_tokens` (one row per phrase
done) and `run_chunks`. A killed run therefore holds whole phrases only, and `resume_ingest`
redoes exactly the phrases missing from `phrase_tokens`.

`--neurons` statistics are additive: each chunk appends its per-language partial counts to
`neuron_stats`, and finishing the run folds them into one row per (lang, layer, neuron).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from xling.ingest.models import DTYPES, LoadedModel, find_model, load_model, register_model
from xling.ingest.saes import LoadedSae, SaeSource, check_saes, load_saes, register_saes
from xling.warehouse.errors import XlingError
from xling.warehouse.layout import order_run_rows
from xling.warehouse.writer import append_arrow

if TYPE_CHECKING:
    import torch

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

_FEATURES_RE = re.compile(r"^(all|origin|topk:(\d+))$")
_SHARD_RE = re.compile(r"^(\d+)/(\d+)$")
# Residual rows are wide (d_model floats each): a chunk also closes at this many Arrow bytes.
_MAX_CHUNK_BYTES = 256 * 2**20
# Phrases tokenised and length-sorted together; larger windows waste less padding.
_WINDOW_BATCHES = 64


@dataclass
class IngestConfig:
    """One ingest run. Stored (with what was resolved at run time) as the run's config JSON."""

    model: str  # hub id, local directory, .gguf file or built-in name (gemma3-270m)
    revision: str | None = None  # hub revision (branch, tag or commit)
    dtype: str = "float32"  # model weights dtype: float32 | bfloat16 | float16
    device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto
    trust_remote_code: bool = False
    allow_pickle: bool = False  # allow .bin (pickle) checkpoints; safetensors only otherwise
    layers: list[int] | None = None  # None: every layer with an SAE (all layers if none and
    # only residuals/neurons are asked for)
    sae_release: str | None = None  # sae-lens pretrained release
    sae_id: str | None = None  # sae-lens id template with {layer}
    sae_dir: str | None = None  # sae-lens directory / parent / {layer} template
    features: str = "all"  # all | origin | topk:K (which feature rows are kept)
    include_bos: bool = False  # pool the BOS token too
    residuals: bool = False  # store mean-pooled residuals per phrase and layer
    neurons: bool = False  # store per-language MLP neuron firing counts (LAPE)
    langs: list[str] | None = None  # only these languages (None: all)
    limit: int | None = None  # only the first N phrases (by phrase_id, after --langs)
    shard: str | None = None  # "i/n": only phrases with phrase_id % n == i (0 <= i < n)
    batch_size: int = 32
    max_tokens: int = 256  # longer phrases are truncated (the count is logged)
    chunk_rows: int = 500_000  # rows per committed chunk (also closed at 256 MiB)
    adapter: str | None = None  # fine-tune merged in first: a LoRA dir or a subnetwork delta
    steer: str | None = None  # stored intervention (`xling steer add`) hooked in throughout

    def __post_init__(self) -> None:
        if not self.model:
            raise XlingError(
                "no model given; pass --model (hub id, directory, .gguf or gemma3-270m)"
            )
        if self.dtype not in DTYPES:
            raise XlingError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if not _FEATURES_RE.match(self.features) or self.features == "topk:0":
            raise XlingError(
                f"bad --features {self.features!r}; use all, origin or topk:K (K >= 1)"
            )
        if self.shard is not None:
            m = _SHARD_RE.match(self.shard)
            if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
                raise XlingError(f"bad --shard {self.shard!r}; use i/n with 0 <= i < n, e.g. 0/4")
        for name in ("batch_size", "max_tokens", "chunk_rows"):
            if getattr(self, name) < 1:
                raise XlingError(f"--{name.replace('_', '-')} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise XlingError("--limit must be at least 1")
        if self.layers is not None:
            if not self.layers or any(layer < 0 for layer in self.layers):
                raise XlingError(f"bad layer list {self.layers}; layers are 0-based")
            self.layers = sorted(set(self.layers))
        SaeSource(self.sae_release, self.sae_id, self.sae_dir)  # validates the combination

    @property
    def sae_source(self) -> SaeSource:
        return SaeSource(self.sae_release, self.sae_id, self.sae_dir)

    @property
    def topk(self) -> int | None:
        m = _FEATURES_RE.match(self.features)
        return int(m.group(2)) if m and m.group(2) else None

    @property
    def shard_of(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        i, n = self.shard.split("/")
        return int(i), int(n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class IngestProgress:
    """Handed to the progress callback after every batch."""

    run_id: int
    done: int  # phrases processed (committed or buffered), including earlier sessions
    total: int  # phrases in the run
    chunks: int  # chunks committed so far
    rows: int  # feature rows committed so far
    started: float = field(default_factory=time.monotonic)


ProgressFn = Callable[[IngestProgress], None]


@dataclass
class _Plan:
    """Everything resolved before the first write."""

    lm: LoadedModel
    saes: dict[int, LoadedSae]
    layers: list[int]  # layers whose residual stream is read
    todo: np.ndarray  # phrase ids still to ingest, sorted
    total: int  # phrases in the run (done before + todo)
    langs: list[str]  # language slots for neuron counts
    steer: Any = None  # the stored intervention (SteeringRecipe), read before any write


# -- public entry points -----------------------------------------------------------------


def run_ingest(
    wh: Warehouse,
    config: IngestConfig,
    progress: ProgressFn | None = None,
    *,
    model: LoadedModel | None = None,
) -> int:
    """Run one ingest and return its run id. `model` reuses an already loaded model."""
    lm = _load(config, model)
    _check_layer_range(config.layers, lm)
    # A fine-tune is read with its base model's SAEs: look them up without the adapter.
    model_id = find_model(wh.con, dataclasses.replace(lm, adapter=None))
    saes = load_saes(
        config.sae_source, config.layers, device=str(lm.device), con=wh.con, model_id=model_id
    )
    plan = _plan(wh, config, lm, saes, done=set())
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        register_saes(con, model_id, saes)
        run_id = int(
            con.execute(
                "INSERT INTO runs (model_id, status, config, n_phrases, n_rows) "
                "VALUES (?, 'running', ?, 0, 0) RETURNING run_id",
                [model_id, json.dumps(_run_config(config, lm, plan, model_id))],
            ).fetchone()[0]
        )
    log.info("run %d: %d phrases, layers %s", run_id, plan.total, plan.layers)
    _execute(wh, run_id, config, plan, progress, first_chunk=0)
    return run_id


def resume_ingest(
    wh: Warehouse,
    run_id: int,
    progress: ProgressFn | None = None,
    *,
    model: LoadedModel | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> int:
    """Finish run `run_id` (killed or failed): ingest the phrases it has no ledger rows for.

    Only the device and batch size may differ from the original run; they do not change
    the rows.
    """
    run = wh.run(run_id)
    if run["status"] == "finished":
        raise XlingError(f"run {run_id} already finished; nothing to resume")
    recorded = run["config"]
    overrides = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    config = dataclasses.replace(IngestConfig.from_dict(recorded), **overrides)
    lm = _load(config, model)
    if lm.name != recorded["model_name"]:
        raise XlingError(
            f"run {run_id} used model {recorded['model_name']}, not {lm.name}; resume with that model"
        )
    saes = _recorded_saes(recorded["saes"], str(lm.device))
    done = {
        int(r[0])
        for r in wh.con.execute(
            "SELECT phrase_id FROM phrase_tokens WHERE run_id = ?", [run_id]
        ).fetchall()
    }
    plan = _plan(wh, config, lm, saes, done=done)
    first_chunk = int(
        wh.scalar("SELECT coalesce(max(chunk) + 1, 0) FROM run_chunks WHERE run_id = ?", [run_id])
    )
    wh.con.execute("UPDATE runs SET status = 'running', note = NULL WHERE run_id = ?", [run_id])
    log.info("resuming run %d: %d of %d phrases left", run_id, len(plan.todo), plan.total)
    _execute(wh, run_id, config, plan, progress, first_chunk=first_chunk)
    return run_id


# -- planning ----------------------------------------------------------------------------


def _load(config: IngestConfig, model: LoadedModel | None) -> LoadedModel:
    """The model to run: `model` or a fresh load, with the config's adapter merged in."""
    lm = model or load_model(
        config.model,
        revision=config.revision,
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
    )
    if config.adapter is not None and lm.adapter is None:
        from xling.finetune.apply import apply_adapter

        apply_adapter(lm, config.adapter)
    return lm


def _check_layer_range(layers: list[int] | None, lm: LoadedModel) -> None:
    bad = [layer for layer in layers or [] if layer >= lm.n_layers]
    if bad:
        raise XlingError(f"layer {bad[0]} out of range: {lm.name} has layers 0-{lm.n_layers - 1}")


def _recorded_saes(entries: list[dict[str, Any]], device: str) -> dict[int, LoadedSae]:
    """The SAEs a run recorded, loaded again from the same release ids or paths."""
    out: dict[int, LoadedSae] = {}
    for e in entries:
        if e["release"] is not None:
            source = SaeSource(release=e["release"], sae_id=e["sae_name"])
        else:
            source = SaeSource(sae_dir=e["path"])
        s = load_saes(source, [e["layer"]], device=device)[e["layer"]]
        s.sae_id = e["sae_id"]
        out[e["layer"]] = s
    return out


def _plan(
    wh: Warehouse, config: IngestConfig, lm: LoadedModel, saes: dict[int, LoadedSae], done: set[int]
) -> _Plan:
    check_saes(saes, lm.d_model, lm.n_layers)
    wants_dense = config.residuals or config.neurons
    if config.layers is not None:
        layers = config.layers
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
    langs = _check_langs(wh, config.langs)
    selected = _select_phrases(wh, config, langs)
    if selected.size == 0:
        raise XlingError("no phrases to ingest; load a corpus first (`xling corpus load ...`)")
    if config.features == "origin":
        _check_origins(wh, selected, [layer for layer in layers if layer in saes])
    todo = selected[~np.isin(selected, np.fromiter(done, np.int64, len(done)))]
    all_langs = langs or [
        r[0] for r in wh.con.execute("SELECT DISTINCT lang FROM phrases ORDER BY lang").fetchall()
    ]
    steer = None
    if config.steer is not None:
        from xling.finetune.steer import load_recipe

        steer = load_recipe(wh, config.steer)
    return _Plan(
        lm=lm,
        saes=saes,
        layers=layers,
        todo=todo,
        total=int(selected.size),
        langs=all_langs,
        steer=steer,
    )


def _check_langs(wh: Warehouse, langs: list[str] | None) -> list[str] | None:
    if langs is None:
        return None
    known = {r[0] for r in wh.con.execute("SELECT lang FROM languages").fetchall()}
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise XlingError(f"unknown language code {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return sorted(set(langs))


def _select_phrases(wh: Warehouse, config: IngestConfig, langs: list[str] | None) -> np.ndarray:
    """The run's phrase ids: language filter, then --limit, then --shard."""
    where, params = "", []
    if langs is not None:
        where, params = "WHERE lang IN (SELECT unnest(?::VARCHAR[]))", [langs]
    limit = ""
    if config.limit is not None:
        limit, params = "LIMIT ?", [*params, config.limit]
    ids = wh.con.execute(
        f"SELECT phrase_id FROM phrases {where} ORDER BY phrase_id {limit}", params
    ).fetchnumpy()["phrase_id"]
    if config.shard_of is not None:
        i, n = config.shard_of
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


def _run_config(
    config: IngestConfig, lm: LoadedModel, plan: _Plan, model_id: int
) -> dict[str, Any]:
    """The stored config: the IngestConfig plus what was resolved, enough to reproduce the run."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {
        **config.to_dict(),
        "model_name": lm.name,
        "model_revision": lm.revision,
        "model_id": model_id,
        "model_source": lm.source,
        "arch": lm.arch,
        "n_layers": lm.n_layers,
        "d_model": lm.d_model,
        "resolved_layers": plan.layers,
        "pooling": {
            "hook": "blocks.{layer}.hook_resid_post",
            "over": "real tokens (attention mask)",
            "bos": "included" if config.include_bos else "excluded",
            "padding": "right",
            "feature_stats": {
                "act_mean": "mean over pooled tokens, zeros included",
                "act_max": "max over pooled tokens",
                "n_active": "pooled tokens with activation > 0",
            },
            "residuals": "mean over pooled tokens" if config.residuals else None,
            "neurons": "act_fn(gate_proj(x)) > 0 over pooled tokens" if config.neurons else None,
        },
        "saes": [s.describe() for s in plan.saes.values()],
        "steering": json.loads(plan.steer.to_json()) if plan.steer is not None else None,
        "n_selected": plan.total,
        "versions": {p: ver(p) for p in ("xling", "torch", "transformers", "sae-lens", "duckdb")},
    }


# -- execution ---------------------------------------------------------------------------


class _NonFinite(Exception):
    def __init__(self, phrase_id: int, layer: int, where: str) -> None:
        super().__init__(phrase_id, layer, where)
        self.phrase_id, self.layer, self.where = phrase_id, layer, where


def _execute(
    wh: Warehouse,
    run_id: int,
    config: IngestConfig,
    plan: _Plan,
    progress: ProgressFn | None,
    first_chunk: int,
) -> None:
    state = IngestProgress(
        run_id=run_id,
        done=plan.total - len(plan.todo),
        total=plan.total,
        chunks=first_chunk,
        rows=0,
    )
    buffer = _ChunkBuffer(run_id, config, plan)
    steer = contextlib.nullcontext()
    if plan.steer is not None:
        from xling.finetune.steer import steering

        steer = steering(plan.lm.model, plan.steer)
    try:
        with steer:
            for batch in _batches(wh, config, plan):
                buffer.add(_process(batch, config, plan))
                state.done += len(batch.phrase_ids)
                if buffer.full():
                    state.rows += buffer.commit(wh, state.chunks)
                    state.chunks += 1
                if progress is not None:
                    progress(state)
        if not buffer.empty():
            state.rows += buffer.commit(wh, state.chunks)
            state.chunks += 1
        _finish(wh, run_id, config)
    except _NonFinite as err:
        text = wh.scalar("SELECT text FROM phrases WHERE phrase_id = ?", [err.phrase_id])
        message = (
            f"non-finite {err.where} at layer {err.layer} on phrase {err.phrase_id} "
            f"({text[:40]!r}); run {run_id} marked failed — check the model's dtype"
        )
        _mark_failed(wh, run_id, message)
        raise XlingError(message) from None
    except BaseException as err:
        _mark_failed(wh, run_id, f"interrupted: {type(err).__name__}: {err}".strip()[:300])
        raise
    if progress is not None:
        progress(state)


def _mark_failed(wh: Warehouse, run_id: int, note: str) -> None:
    wh.con.execute("UPDATE runs SET status = 'failed', note = ? WHERE run_id = ?", [note, run_id])


def _finish(wh: Warehouse, run_id: int, config: IngestConfig) -> None:
    with wh.transaction() as con:
        if config.neurons:
            # Fold the chunks' partial counts into one row per (lang, layer, neuron).
            con.execute(
                "CREATE TEMP TABLE _xling_neurons AS SELECT run_id, lang, layer, neuron, "
                "sum(n_tokens)::BIGINT AS n_tokens, sum(n_positive)::BIGINT AS n_positive, "
                "sum(act_sum) AS act_sum FROM neuron_stats WHERE run_id = ? "
                "GROUP BY ALL ORDER BY layer, lang, neuron",
                [run_id],
            )
            con.execute("DELETE FROM neuron_stats WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO neuron_stats BY NAME SELECT * FROM _xling_neurons")
            con.execute("DROP TABLE _xling_neurons")
        # Layer-contiguous row groups let a one-layer query skip the other layers' data.
        order_run_rows(con, run_id)
        con.execute(
            "UPDATE runs SET status = 'finished', finished_at = current_timestamp, note = NULL "
            "WHERE run_id = ?",
            [run_id],
        )


@dataclass
class _Batch:
    phrase_ids: np.ndarray  # [B]
    lang_slots: np.ndarray  # [B] index into plan.langs
    input_ids: list[list[int]]
    origins: dict[int, list[tuple[int, int]]]  # batch row -> [(layer, feature)]


def _batches(wh: Warehouse, config: IngestConfig, plan: _Plan) -> Iterator[_Batch]:
    """Length-sorted batches over windows of phrase ids; one short read per window."""
    tok = plan.lm.tokenizer
    slot = {lang: i for i, lang in enumerate(plan.langs)}
    window = config.batch_size * _WINDOW_BATCHES
    for start in range(0, len(plan.todo), window):
        ids = plan.todo[start : start + window]
        rows = wh.con.execute(
            "SELECT phrase_id, lang, text FROM phrases WHERE phrase_id IN "
            "(SELECT unnest(?::BIGINT[])) ORDER BY phrase_id",
            [ids.tolist()],
        ).fetchall()
        origins: dict[int, list[tuple[int, int]]] = {}
        if config.features == "origin":
            for pid, layer, feature in wh.con.execute(
                "SELECT DISTINCT q.phrase_id, o.origin_layer, o.origin_feature FROM phrases q "
                "JOIN phrases o USING (group_id) WHERE q.phrase_id IN "
                "(SELECT unnest(?::BIGINT[])) AND o.origin_layer IS NOT NULL "
                "AND o.origin_feature IS NOT NULL",
                [ids.tolist()],
            ).fetchall():
                origins.setdefault(int(pid), []).append((int(layer), int(feature)))
        enc = tok(
            [r[2] for r in rows],
            add_special_tokens=True,
            truncation=True,
            max_length=config.max_tokens,
        )["input_ids"]
        n_trunc = sum(len(e) >= config.max_tokens for e in enc)
        if n_trunc:
            log.info(
                "%d phrases reached max_tokens=%d and were truncated", n_trunc, config.max_tokens
            )
        order = sorted(range(len(rows)), key=lambda i: len(enc[i]))
        for b in range(0, len(order), config.batch_size):
            idx = order[b : b + config.batch_size]
            pids = np.array([rows[i][0] for i in idx], dtype=np.int64)
            yield _Batch(
                phrase_ids=pids,
                lang_slots=np.array([slot[rows[i][1]] for i in idx], dtype=np.int64),
                input_ids=[enc[i] for i in idx],
                origins={j: origins[int(p)] for j, p in enumerate(pids) if int(p) in origins},
            )


@dataclass
class _BatchRows:
    features: pa.Table | None
    residuals: pa.Table | None
    tokens: pa.Table
    neurons: dict[int, tuple[Any, Any, Any]]  # layer -> (n_tok [L], n_pos [L, N], act_sum [L, N])


def _process(batch: _Batch, config: IngestConfig, plan: _Plan) -> _BatchRows:
    """One batch: forward, SAE encode, pooling; rows as Arrow (nothing written here)."""
    import torch

    from xling.ingest.hooks import capture_blocks, capture_mlp_acts, forward_blocks, pad_right
    from xling.ingest.pooling import mean_pool, neuron_counts, pool_mask, sparse_feature_rows

    lm = plan.lm
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids, attn = pad_right(batch.input_ids, pad_id, lm.device)
    neuron_layers = plan.layers if config.neurons else []
    with (
        torch.inference_mode(),
        capture_blocks(lm.model, plan.layers) as hidden,
        capture_mlp_acts(lm.model, neuron_layers) as mlp_acts,
    ):
        forward_blocks(lm.model, ids, attn, last_layer=max(plan.layers))
        mask = pool_mask(ids, attn, tok.bos_token_id, config.include_bos)
        real = attn.bool()
        pids = torch.from_numpy(batch.phrase_ids).to(lm.device)
        feats_parts: list[tuple[torch.Tensor, ...]] = []
        resid_parts: list[torch.Tensor] = []
        neurons: dict[int, tuple[Any, Any, Any]] = {}
        for layer in plan.layers:
            h = hidden[layer]
            _check_finite(h, real, batch, layer, "residual stream")
            if layer in plan.saes:
                s = plan.saes[layer]
                feats = s.sae.encode(h.to(s.sae.dtype))
                b, f, act_mean, act_max, n_active = sparse_feature_rows(feats, mask)
                # With a finite residual only an overflowing (half-precision) SAE gives
                # non-finite activations, and those reach the pooled rows.
                bad = ~torch.isfinite(act_mean + act_max)
                if bool(bad.any()):
                    raise _NonFinite(
                        int(batch.phrase_ids[int(b[bad][0])]), layer, "SAE activations"
                    )
                keep = _feature_filter(config, batch, layer, b, f, act_max, s.d_sae)
                if keep is not None:
                    b, f, act_mean, act_max, n_active = (
                        t[keep] for t in (b, f, act_mean, act_max, n_active)
                    )
                feats_parts.append(
                    (pids[b], torch.full_like(f, layer), f, act_mean, act_max, n_active)
                )
            if config.residuals:
                resid_parts.append(mean_pool(h.float(), mask))
            if config.neurons:
                acts = mlp_acts[layer]
                lang_index = torch.from_numpy(batch.lang_slots).to(lm.device)
                neurons[layer] = neuron_counts(acts.float(), mask, lang_index, len(plan.langs))
        n_tokens = mask.sum(1)
    return _BatchRows(
        features=_feature_table(feats_parts) if feats_parts else None,
        residuals=_residual_table(batch.phrase_ids, plan.layers, resid_parts)
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
    t: torch.Tensor, real: torch.Tensor, batch: _Batch, layer: int, where: str
) -> None:
    import torch

    # A sum over d_model is non-finite exactly when some element is: one cheap reduction.
    bad = ~torch.isfinite(t.sum(-1)) & real
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0, 0])
        raise _NonFinite(int(batch.phrase_ids[row]), layer, where)


def _feature_filter(config: IngestConfig, batch: _Batch, layer: int, b, f, act_max, d_sae: int):
    """Boolean mask over the batch's sparse rows for --features origin / topk:K; None keeps all."""
    import torch

    if config.features == "origin":
        allowed = [
            row * d_sae + feat
            for row, pairs in batch.origins.items()
            for (lay, feat) in pairs
            if lay == layer
        ]
        keys = b * d_sae + f
        return torch.isin(keys, torch.tensor(allowed, dtype=keys.dtype, device=keys.device))
    k = config.topk
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


class _ChunkBuffer:
    """Rows of the batches since the last commit; one commit writes them with their ledger."""

    def __init__(self, run_id: int, config: IngestConfig, plan: _Plan) -> None:
        self.run_id, self.config, self.plan = run_id, config, plan
        self.reset()

    def reset(self) -> None:
        self.features: list[pa.Table] = []
        self.residuals: list[pa.Table] = []
        self.tokens: list[pa.Table] = []
        self.neurons: dict[int, list] = {}
        self.n_rows = 0
        self.n_bytes = 0

    def add(self, rows: _BatchRows) -> None:
        self.tokens.append(rows.tokens)
        for table, dest in ((rows.features, self.features), (rows.residuals, self.residuals)):
            if table is not None:
                dest.append(table)
                self.n_rows += table.num_rows
                self.n_bytes += table.nbytes
        for layer, (n_tok, n_pos, act_sum) in rows.neurons.items():
            acc = self.neurons.get(layer)
            self.neurons[layer] = (
                [n_tok, n_pos, act_sum]
                if acc is None
                else [acc[0] + n_tok, acc[1] + n_pos, acc[2] + act_sum]
            )

    def full(self) -> bool:
        return self.n_rows >= self.config.chunk_rows or self.n_bytes >= _MAX_CHUNK_BYTES

    def empty(self) -> bool:
        return not self.tokens

    def commit(self, wh: Warehouse, chunk: int) -> int:
        """Write the buffered rows, their ledger and the chunk record in one transaction."""
        run = pa.scalar(self.run_id, pa.int32())
        tables = {
            "phrase_tokens": self.tokens,
            "feature_acts": self.features,
            "residuals": self.residuals,
        }
        prepared = {}
        for name, parts in tables.items():
            if parts:
                t = pa.concat_tables(parts)
                if name != "phrase_tokens":
                    # Layer-ordered chunks let DuckDB's zone maps skip other layers' rows.
                    t = t.sort_by([("layer", "ascending"), ("phrase_id", "ascending")])
                prepared[name] = t.append_column("run_id", pa.repeat(run, t.num_rows))
        if self.neurons:
            prepared["neuron_stats"] = self._neuron_table(run)
        n_phrases = prepared["phrase_tokens"].num_rows
        n_features = prepared["feature_acts"].num_rows if "feature_acts" in prepared else 0
        with wh.transaction() as con:
            for name, table in prepared.items():
                append_arrow(con, name, table)
            con.execute(
                "INSERT INTO run_chunks (run_id, chunk, n_phrases, n_rows) VALUES (?, ?, ?, ?)",
                [self.run_id, chunk, n_phrases, n_features],
            )
            con.execute(
                "UPDATE runs SET n_phrases = n_phrases + ?, n_rows = n_rows + ? WHERE run_id = ?",
                [n_phrases, n_features, self.run_id],
            )
        log.debug(
            "run %d chunk %d: %d phrases, %d feature rows",
            self.run_id,
            chunk,
            n_phrases,
            n_features,
        )
        self.reset()
        return n_features

    def _neuron_table(self, run: pa.Scalar) -> pa.Table:
        parts = []
        for layer, (n_tok, n_pos, act_sum) in sorted(self.neurons.items()):
            n_tok, n_pos, act_sum = n_tok.cpu().numpy(), n_pos.cpu().numpy(), act_sum.cpu().numpy()
            n_neurons = n_pos.shape[1]
            for slot in np.flatnonzero(n_tok):
                parts.append(
                    pa.table(
                        {
                            "lang": pa.repeat(pa.scalar(self.plan.langs[slot]), n_neurons),
                            "layer": pa.array(np.full(n_neurons, layer, np.int16)),
                            "neuron": pa.array(np.arange(n_neurons, dtype=np.int32)),
                            "n_tokens": pa.array(np.full(n_neurons, n_tok[slot], np.int64)),
                            "n_positive": pa.array(n_pos[slot]),
                            "act_sum": pa.array(act_sum[slot]),
                        }
                    )
                )
        t = pa.concat_tables(parts) if parts else pa.table({})
        return t.append_column("run_id", pa.repeat(run, t.num_rows))
