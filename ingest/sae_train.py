"""Training per-layer SAEs on a model's residual stream over the warehouse corpus (`xling sae train`).

    SaeTrainConfig(model=..., layers=[0, 4], d_sae=2048, k=32 | l1=5.0, tokens=200_000)
    train_saes(wh, config, progress=fn) -> [TrainedSae]   saved, evaluated, registered in `saes`

Training is sae-lens's own: one `MultiSAETrainer` drives a BatchTopK (`k`, saved as JumpReLU)
or Standard L1 (`l1`) training SAE per layer in lockstep, fed through sae-lens's
`multi_hook_concat_split_iter` mixing buffer. sae-lens's runners expect a TransformerLens
model and a HF dataset; xling reads a HF model and a DuckDB corpus instead, so it supplies the
activation stream itself: block outputs (`blocks.L.hook_resid_post`, the same hooks ingest
reads) at the real tokens of each phrase, BOS excluded like ingest's pooling. One forward
pass feeds every layer; the first pass over the corpus is kept in memory (up to a budget)
and replayed until `tokens` is reached.

Groups of aligned phrases are split deterministically: every n-th group (by group id) is
held out. After training, each SAE is saved with `save_inference_model` as a sae-lens
directory, loaded back, and measured on the held-out tokens: explained variance
1 - Σ‖x - x̂‖² / Σ‖x - x̄‖² and L0 (mean active features per token). Both go into `saes`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.ingest.models import (
    DTYPES,
    LoadedModel,
    ModelSpec,
    quiet_progress,
    spec_from,
    xling_home,
)
from xling.warehouse import catalog
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

# Residuals of the first corpus pass kept for replay; beyond it each epoch runs the model again.
_CACHE_BYTES = 2 * 2**30
# Fewer optimiser steps than this gave poor SAEs on Gemma 3 270M (48 steps: explained variance
# near 0 and L0 5x k at inference; 195 steps: 0.7-0.8 and L0 = k).
_MIN_STEPS = 150


@dataclass
class SaeTrainConfig:
    """One `xling sae train`: which model, layers, SAE shape, sparsity and token budget."""

    model: str  # as for ingest: hub id, directory, .gguf or gemma3-270m
    layers: list[int]
    d_sae: int | None = None  # SAE width [default: 8 x d_model]
    k: int | None = None  # BatchTopK: mean active features per token [default 32 unless l1]
    l1: float | None = None  # Standard SAE with this L1 coefficient instead of BatchTopK
    tokens: int = 200_000  # training tokens (the corpus is replayed as often as needed)
    batch_tokens: int = 512  # tokens per optimiser step
    lr: float = 1e-3
    holdout_every: int = 10  # every n-th group (by group id) is held out for evaluation
    langs: list[str] | None = None
    include_bos: bool = False
    batch_size: int = 32  # phrases per forward pass
    max_tokens: int = 256
    seed: int = 0
    out: str | None = None  # directory for the SAEs [default: XLING_HOME/saes/<model>/<time>]
    revision: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not self.layers or any(layer < 0 for layer in self.layers):
            raise XlingError("pass --layers, e.g. 0,4,8 (0-based)")
        self.layers = sorted(set(self.layers))
        if self.k is not None and self.l1 is not None:
            raise XlingError("pass --k (BatchTopK) or --l1 (standard SAE), not both")
        if self.l1 is None and self.k is None:
            self.k = 32
        if self.dtype not in DTYPES:
            raise XlingError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        for name in ("tokens", "batch_tokens", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise XlingError(f"--{name.replace('_', '-')} must be at least 1")
        if self.holdout_every < 2:
            raise XlingError("--holdout-every must be at least 2")
        if self.d_sae is not None and self.d_sae < 1:
            raise XlingError("--d-sae must be at least 1")
        if self.k is not None and self.k < 1:
            raise XlingError("--k must be at least 1")
        if self.l1 is not None and self.l1 <= 0:
            raise XlingError("--l1 must be positive")

    @property
    def architecture(self) -> str:
        return "standard" if self.l1 is not None else "batchtopk"

    @property
    def model_spec(self) -> ModelSpec:
        """The base model the SAEs are trained on (no adapter, no steering)."""
        return spec_from(self)


@dataclass
class TrainedSae:
    layer: int
    path: str
    sae_id: int
    architecture: str  # as saved for inference (BatchTopK saves as jumprelu)
    d_sae: int
    explained_variance: float
    l0: float


@dataclass
class TrainProgress:
    done: int  # training tokens consumed
    total: int


def train_saes(
    wh: Warehouse,
    config: SaeTrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
    *,
    model: LoadedModel | None = None,
) -> list[TrainedSae]:
    """Train one SAE per layer, save them as sae-lens directories, measure and register them."""
    import torch

    from xling.ingest.models import register_model

    # Bad input is refused before the model loads (minutes on a large one).
    _check_langs(wh, config.langs)
    if config.out:
        _check_out(Path(config.out))
    lm = model or config.model_spec.load()
    bad = [layer for layer in config.layers if layer >= lm.n_layers]
    if bad:
        raise XlingError(f"layer {bad[0]} out of range: {lm.name} has layers 0-{lm.n_layers - 1}")
    train_texts, held_texts = _split_corpus(wh, config)
    out = Path(config.out) if config.out else _default_out(lm.name)
    d_sae = config.d_sae or 8 * lm.d_model
    torch.manual_seed(config.seed)
    start = time.monotonic()
    saes = _fit(lm, config, d_sae, train_texts, progress)
    paths = {layer: out / f"layer_{layer}" for layer in saes}
    for layer, sae in saes.items():
        sae.save_inference_model(paths[layer])
    metrics = _evaluate(lm, config, paths, held_texts)
    results = [(layer, paths[layer], *metrics[layer]) for layer in saes]
    for layer, path, ev, l0 in results:
        log.info("layer %d: explained variance %.3f, L0 %.1f (%s)", layer, ev, l0, path)
    train_info = {
        **dataclasses.asdict(config),
        "model_name": lm.name,
        "d_sae": d_sae,
        "n_train_phrases": len(train_texts),
        "n_heldout_phrases": len(held_texts),
        "seconds": round(time.monotonic() - start, 1),
    }
    trained = []
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        catalog.record_job(con, "sae-train", train_info, model_id)
        for layer, path, ev, l0 in results:
            (path / "xling_train.json").write_text(
                json.dumps(
                    {**train_info, "layer": layer, "explained_variance": ev, "l0": l0}, indent=2
                )
            )
            cfg = json.loads((path / "cfg.json").read_text())
            # The same row an ingest that loads this directory later finds (by its path).
            sae_id = catalog.register_sae(
                con,
                model_id,
                catalog.SaeFacts(
                    layer=layer,
                    sae_name=f"{out.name}/layer_{layer}",
                    release=None,
                    path=str(path.resolve()),
                    d_in=cfg["d_in"],
                    d_sae=cfg["d_sae"],
                    architecture=cfg["architecture"],
                    hook_name=_hook(layer),
                    explained_variance=ev,
                    l0=l0,
                ),
            )
            trained.append(
                TrainedSae(
                    layer=layer,
                    path=str(path.resolve()),
                    sae_id=sae_id,
                    architecture=cfg["architecture"],
                    d_sae=cfg["d_sae"],
                    explained_variance=ev,
                    l0=l0,
                )
            )
    return trained


def _check_langs(wh: Warehouse, langs: list[str] | None) -> None:
    known = {r[0] for r in wh.con.execute("SELECT lang FROM languages").fetchall()}
    unknown = [lang for lang in langs or [] if lang not in known]
    if unknown:
        raise XlingError(
            f"unknown language code {unknown[0]!r} in --langs; known: {', '.join(sorted(known))}"
        )


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a directory, creating nothing."""
    if out.exists() and not out.is_dir():
        raise XlingError(f"--out {out} is a file; pass a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise XlingError(f"--out {out} cannot be created: {parent} is not a directory")


def _hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _default_out(model_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.strip("/"))[-60:]
    return xling_home() / "saes" / slug / time.strftime("%Y%m%d-%H%M%S")


def _split_corpus(wh: Warehouse, config: SaeTrainConfig) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): every `holdout_every`-th group, by group id, held out."""
    where, params = "", []
    if config.langs:
        where, params = "WHERE lang IN (SELECT unnest(?::VARCHAR[]))", [config.langs]
    rows = wh.con.execute(
        f"SELECT dense_rank() OVER (ORDER BY group_id) AS g, text FROM phrases {where} "
        "ORDER BY phrase_id",
        params,
    ).fetchall()
    train = [text for g, text in rows if g % config.holdout_every != 0]
    held = [text for g, text in rows if g % config.holdout_every == 0]
    if not train or not held:
        raise XlingError(
            f"sae train needs at least {config.holdout_every} phrase groups (one is held out for "
            "evaluation); load a corpus first (`xling corpus load ...`) or lower --holdout-every"
        )
    return train, held


def _residual_batches(
    lm: LoadedModel, config: SaeTrainConfig, texts: list[str]
) -> Iterator[dict[int, torch.Tensor]]:
    """{layer: residuals of the batch's pooled tokens [n_tokens, d_model]} per forward pass."""
    from xling.ingest.hooks import capture_blocks, forward_blocks, pad_right
    from xling.ingest.pooling import pool_mask

    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=config.max_tokens)[
        "input_ids"
    ]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    with capture_blocks(lm.model, config.layers) as hidden:
        for b in range(0, len(order), config.batch_size):
            ids, attn = pad_right(
                [enc[i] for i in order[b : b + config.batch_size]], pad_id, lm.device
            )
            forward_blocks(lm.model, ids, attn, last_layer=max(config.layers))
            mask = pool_mask(ids, attn, tok.bos_token_id, config.include_bos)
            yield {layer: hidden[layer][mask].float() for layer in config.layers}


def _first_pass(
    lm: LoadedModel, config: SaeTrainConfig, texts: list[str]
) -> tuple[list[dict[str, torch.Tensor]], bool]:
    """The corpus's activations, keyed by hook name, up to the cache budget; and whether that
    is the whole corpus."""
    items: list[dict[str, torch.Tensor]] = []
    size = 0
    for batch in _residual_batches(lm, config, texts):
        items.append({_hook(layer): h for layer, h in batch.items()})
        size += sum(h.numel() * h.element_size() for h in batch.values())
        if size > _CACHE_BYTES:
            return items, False
    if not any(len(h) for item in items for h in item.values()):
        raise XlingError("the training phrases hold no tokens to train on")
    return items, True


def _activation_stream(
    lm: LoadedModel,
    config: SaeTrainConfig,
    texts: list[str],
    first: list[dict[str, torch.Tensor]],
    complete: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless multi-hook stream, as sae-lens expects: the cached corpus in a new random order
    every epoch, or, when it did not fit, the cached part once and then fresh passes."""
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    if complete:
        while True:
            for i in torch.randperm(len(first), generator=gen).tolist():
                yield first[i]
    while first:
        yield first.pop()
    while True:
        for batch in _residual_batches(lm, config, texts):
            yield {_hook(layer): h for layer, h in batch.items()}


def _training_sae(config: SaeTrainConfig, d_in: int, d_sae: int, layer: int, model_name: str):
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(
        model_name=model_name, hook_name=_hook(layer), hook_head_index=None, prepend_bos=True
    )
    common: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "device": config.device if config.device != "auto" else "cpu",
        # Residual norms differ by orders of magnitude across layers (Gemma's are large);
        # sae-lens rescales inputs to norm sqrt(d_in) while training and folds it in after.
        "normalize_activations": "expected_average_only_in",
        "metadata": meta,
    }
    if config.l1 is not None:
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=config.l1, **common))
    # The inference threshold is a moving average of the smallest kept activation; a faster
    # average than sae-lens's default (0.01) settles within the short runs xling makes.
    return BatchTopKTrainingSAE(
        BatchTopKTrainingSAEConfig(k=config.k, topk_threshold_lr=0.05, **common)
    )


def _init_decoder_bias(sae, mean: torch.Tensor, mean_norm: float) -> None:
    """Start b_dec at the mean activation, in the units sae-lens trains in (inputs rescaled to
    mean norm sqrt(d_in)). Gemma's residuals sit far from the origin; starting at zero spends
    the short runs xling makes on learning that offset (Gemma 3 270M layer 4, 195 steps:
    held-out explained variance 0.72 with this, 0.39 without)."""
    import torch

    with torch.no_grad():
        sae.b_dec.copy_((mean * sae.cfg.d_in**0.5 / mean_norm).to(sae.b_dec.dtype))


def _fit(
    lm: LoadedModel,
    config: SaeTrainConfig,
    d_sae: int,
    texts: list[str],
    progress: Callable[[TrainProgress], None] | None,
) -> dict[int, Any]:
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.mixing_buffer import multi_hook_concat_split_iter
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    hooks = [_hook(layer) for layer in config.layers]
    steps = max(1, config.tokens // config.batch_tokens)
    if steps < _MIN_STEPS:
        log.warning(
            "only %d optimiser steps (--tokens / --batch-tokens); below ~%d the SAEs stay poor "
            "and a BatchTopK threshold does not settle: lower --batch-tokens or raise --tokens",
            steps,
            _MIN_STEPS,
        )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * config.batch_tokens,
        train_batch_size_samples=config.batch_tokens,
        lr=config.lr,
        lr_end=config.lr / 10,
        lr_warm_up_steps=min(100, steps // 10),
        lr_decay_steps=steps // 5,
        device=str(lm.device),
        dead_feature_window=max(1, min(1000, steps // 4)),
        feature_sampling_window=max(1, min(2000, steps // 2)),
        n_batches_for_norm_estimate=min(50, steps),
        logger=LoggingConfig(log_to_wandb=False),
    )
    first, complete = _first_pass(lm, config, texts)
    # Decoder biases start at the mean over the whole first pass: a phrase-ordered prefix
    # (short phrases first) is not representative.
    n_tokens = sum(len(b[hooks[0]]) for b in first)
    means = {
        layer: sum(b[_hook(layer)].sum(0) for b in first) / n_tokens for layer in config.layers
    }
    norms = {
        layer: sum(float(b[_hook(layer)].norm(dim=-1).sum()) for b in first) / n_tokens
        for layer in config.layers
    }
    stream = multi_hook_concat_split_iter(
        buffer_size=max(8 * config.batch_tokens, 16_384),
        batch_size=config.batch_tokens,
        activations_loader=_activation_stream(lm, config, texts, first, complete),
        hook_names=hooks,
    )

    def counted() -> Iterator[dict[str, torch.Tensor]]:
        done = 0
        for batch in stream:
            yield batch
            done += config.batch_tokens
            if progress is not None:
                progress(
                    TrainProgress(
                        done=min(done, trainer_cfg.total_training_samples),
                        total=trainer_cfg.total_training_samples,
                    )
                )

    saes = {
        f"layer_{layer}": _training_sae(config, lm.d_model, d_sae, layer, lm.name)
        for layer in config.layers
    }
    for layer in config.layers:
        _init_decoder_bias(saes[f"layer_{layer}"], means[layer], norms[layer])
    trainer = MultiSAETrainer(
        cfg=trainer_cfg,
        saes=saes,
        hook_names={f"layer_{layer}": _hook(layer) for layer in config.layers},
        data_provider=counted(),
    )
    with quiet_progress():
        trained = trainer.fit()
    return {layer: trained[f"layer_{layer}"] for layer in config.layers}


def _evaluate(
    lm: LoadedModel, config: SaeTrainConfig, paths: dict[int, Path], texts: list[str]
) -> dict[int, tuple[float, float]]:
    """{layer: (explained variance, L0)} of the saved SAEs on held-out tokens, in one pass.

    Total variance comes from float64 running sums: Σ‖x - x̄‖² = Σ‖x‖² - n‖x̄‖².
    """
    import torch
    from sae_lens import SAE

    saes = {
        layer: SAE.load_from_disk(str(p), device=str(lm.device)).eval()
        for layer, p in paths.items()
    }
    stats = {layer: {"err": 0.0, "sq": 0.0, "l0": 0.0, "sum": 0.0} for layer in paths}
    n = 0
    with torch.inference_mode():
        for batch in _residual_batches(lm, config, texts):
            n += next(iter(batch.values())).shape[0]
            for layer, x in batch.items():
                feats = saes[layer].encode(x)
                st = stats[layer]
                st["err"] += float(((x - saes[layer].decode(feats)) ** 2).double().sum())
                st["sq"] += float((x.double() ** 2).sum())
                st["sum"] = st["sum"] + x.double().sum(0)
                st["l0"] += float((feats > 0).sum())
    out = {}
    for layer, st in stats.items():
        total = st["sq"] - float((st["sum"] ** 2).sum()) / n
        out[layer] = (1.0 - st["err"] / total, st["l0"] / n)
    return out
