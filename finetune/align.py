"""Activation-aligned LoRA (SPEC §6a): pull a language's SAE activations toward English.

For aligned pairs (English phrase, its translation in language l) the loss of one batch is

    mean over pairs of  ‖a_T(p_en) − a_T(p_l)‖²  +  λ ‖a_T(p_en) − a_T^orig(p_en)‖²

with a_T the SAE's pooled activations at target layer T (the sum over all d_sae features of
squared differences), computed through the model being tuned with the SAE frozen, and
a^orig the English activations the base run stored in `feature_acts` (densified; absent rows
are 0). Pooling is ingest's: real tokens, BOS excluded unless the run included it; the
statistic is `max` (act_max, every view's default) or `mean` (act_mean). Both sides of the
first term carry gradient — the λ term is what keeps English where it was.

LoRA (peft) wraps the q/k/v/o/gate/up/down projections of blocks 0..T only, and the forward
stops after block T, so blocks above T neither train nor run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xling.finetune.config import AlignLoraConfig
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from xling.finetune.common import FinetuneResult
    from xling.ingest.models import LoadedModel
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

STAT_COLUMNS = {"max": "act_max", "mean": "act_mean"}


@dataclass
class AlignPairs:
    """Training pairs read from a base run: texts and the stored English activations."""

    en_text: list[str]
    other_text: list[str]
    lang: list[str]
    en_row: list[int]
    """Row of `a_orig` holding the pair's English phrase."""
    a_orig: np.ndarray
    """[n English phrases, d_sae] pooled activations the base run stored (absent = 0)."""

    def __len__(self) -> int:
        return len(self.en_text)


def alignment_loss(
    a_en: torch.Tensor,
    a_other: torch.Tensor,
    a_en_orig: torch.Tensor,
    lam: float,
    normalize: str = "none",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, align, retain) for pooled activations [B, d_sae]: the two terms are means over
    the batch of squared Euclidean distances — each divided by ‖a_en_orig‖² of its pair with
    `normalize="en-norm"` (pairs whose English phrase has no active feature never get here)."""
    align = (a_en - a_other).pow(2).sum(-1)
    retain = (a_en - a_en_orig).pow(2).sum(-1)
    if normalize == "en-norm":
        scale = a_en_orig.pow(2).sum(-1)
        align, retain = align / scale, retain / scale
    align, retain = align.mean(), retain.mean()
    return align + lam * retain, align, retain


def pool(feats: torch.Tensor, mask: torch.Tensor, stat: str) -> torch.Tensor:
    """Pooled SAE activations [B, F] of feats [B, T, F] over `mask` [B, T], as ingest stores
    them (act_max / act_mean), but dense and differentiable."""
    from xling.ingest.pooling import mean_pool

    if stat == "mean":
        return mean_pool(feats, mask)
    # SAE activations are ≥ 0, so zeroing the unpooled tokens leaves every max unchanged.
    return feats.masked_fill(~mask.unsqueeze(-1), 0).amax(1)


def encode(sae: torch.nn.Module, x: torch.Tensor, gradient: str = "exact") -> torch.Tensor:
    """The SAE's feature activations of `x`; with `gradient="straight-through"` their value is
    unchanged but their gradient is that of the pre-activation x W_enc + b_enc, for every
    feature — so a feature below its (JumpReLU/ReLU) threshold still learns which way to go."""
    if gradient == "exact":
        return sae.encode(x)
    captured: dict[str, torch.Tensor] = {}
    # Every sae-lens encoder passes its pre-activation through this hook point.
    handle = sae.hook_sae_acts_pre.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("pre", out)
    )
    try:
        feats = sae.encode(x)
    finally:
        handle.remove()
    pre = captured["pre"]
    return feats.detach() + (pre - pre.detach())


def pooled_sae_acts(
    model: torch.nn.Module,
    sae: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    layer: int,
    stat: str,
    bos_id: int | None,
    include_bos: bool,
    gradient: str = "exact",
) -> torch.Tensor:
    """a_T for a batch: block `layer`'s output → SAE encode → pooled [B, d_sae], with grad."""
    from xling.ingest.hooks import base_model, capture_blocks, decoder_layers
    from xling.ingest.pooling import pool_mask

    with (
        capture_blocks(model, [layer], detach=False) as out,
        _stop_after_block(decoder_layers(model)[layer]),
        contextlib.suppress(_Stop),
    ):
        base_model(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    feats = encode(sae, out[layer].to(sae.dtype), gradient)
    return pool(feats, pool_mask(input_ids, attention_mask, bos_id, include_bos), stat)


class _Stop(Exception):
    """Raised after the target block: the blocks above it neither run nor enter the graph."""


@contextlib.contextmanager
def _stop_after_block(block: torch.nn.Module) -> Iterator[None]:
    # Registered after capture_blocks' hook on the same block, so it runs once that recorded.
    def stop(*_args):
        raise _Stop

    handle = block.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def add_lora(model: torch.nn.Module, cfg: AlignLoraConfig, n_layers: int):
    """Wrap `model` with LoRA on `cfg.target_modules` of blocks 0..T (a peft PeftModel)."""
    import torch
    from peft import LoraConfig, get_peft_model

    if cfg.target_layer >= n_layers:
        raise XlingError(
            f"target layer {cfg.target_layer} out of range: the model has layers 0-{n_layers - 1}"
        )
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=sorted(cfg.lora_layers or range(cfg.target_layer + 1)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        first = str(err).strip().splitlines()[0]
        raise XlingError(
            f"cannot put LoRA on {', '.join(cfg.target_modules)}: {first}; "
            "name the model's projection modules"
        ) from None


StepCallback = Callable[[dict[str, float]], None]


def train_alignment(
    peft_model,
    tokenizer,
    sae: torch.nn.Module,
    pairs: AlignPairs,
    cfg: AlignLoraConfig,
    *,
    include_bos: bool = False,
    on_step: StepCallback | None = None,
) -> list[dict[str, float]]:
    """Run `cfg.steps` AdamW steps on the LoRA weights; returns one loss record per step.

    Pairs are drawn in a seeded random order, epoch after epoch, `cfg.batch_size` at a time.
    """
    import torch

    from xling.finetune.common import encode, shuffled_batches

    model = peft_model.get_base_model()
    device = next(model.parameters()).device
    for p in sae.parameters():
        p.requires_grad_(False)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    a_orig = torch.as_tensor(pairs.a_orig, dtype=torch.float32, device=device)

    def acts(texts: list[str]) -> torch.Tensor:
        ids, mask = encode(tokenizer, texts, cfg.max_length, device)
        return pooled_sae_acts(
            model,
            sae,
            ids,
            mask,
            layer=cfg.target_layer,
            stat=cfg.stat,
            bos_id=tokenizer.bos_token_id,
            include_bos=include_bos,
            gradient=cfg.gradient,
        ).float()

    history: list[dict[str, float]] = []
    peft_model.train()
    batches = shuffled_batches(len(pairs), cfg.batch_size, cfg.seed)
    for step, idx in zip(range(1, cfg.steps + 1), batches, strict=False):
        a_en = acts([pairs.en_text[i] for i in idx])
        a_other = acts([pairs.other_text[i] for i in idx])
        total, align, retain = alignment_loss(
            a_en, a_other, a_orig[[pairs.en_row[i] for i in idx]], cfg.lam, cfg.normalize
        )
        if not torch.isfinite(total):
            raise XlingError(
                f"alignment loss is {total.item()} at step {step}; lower --lr or check the SAE"
            )
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        record = {
            "step": step,
            "loss": total.item(),
            "align": align.item(),
            "retain": retain.item(),
        }
        history.append(record)
        if on_step is not None:
            on_step(record)
    peft_model.eval()
    return history


# -- from the warehouse ------------------------------------------------------------------

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def aligned_pairs(
    wh: Warehouse,
    run_id: int,
    layer: int,
    langs: list[str] | None,
    stat: str,
    d_sae: int,
    groups: list[str] | None = None,
) -> AlignPairs:
    """Every (English, l) pair of one group, both phrases ingested by the run, l in `langs`
    (None: every other language), only groups in `groups` when given, and the run's English
    activations at `layer`, densified."""
    import numpy as np

    run_langs = sorted(
        wh.sql(
            "SELECT DISTINCT p.lang FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
            "WHERE t.run_id = ?",
            [run_id],
        )["lang"]
    )
    if "en" not in run_langs:
        raise XlingError(f"run {run_id} has no English phrases; alignment pairs need them")
    others = [lang for lang in run_langs if lang != "en"]
    if langs is not None:
        missing = [lang for lang in langs if lang not in others]
        if missing:
            raise XlingError(
                f"run {run_id} has no phrases in {missing[0]!r}; it has {', '.join(others)}"
            )
        others = langs
    pairs = wh.sql(
        "WITH done AS (SELECT phrase_id FROM phrase_tokens WHERE run_id = ?) "
        "SELECT e.phrase_id AS en_id, e.text AS en_text, p.text AS other_text, p.lang "
        "FROM phrases e JOIN phrases p ON p.group_id = e.group_id "
        "WHERE e.lang = 'en' AND list_contains(?, p.lang) "
        "AND e.phrase_id IN (SELECT phrase_id FROM done) "
        "AND p.phrase_id IN (SELECT phrase_id FROM done) "
        "AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(?, e.group_id)) "
        "ORDER BY e.phrase_id, p.lang",
        [run_id, others, groups, groups],
    )
    if pairs.empty:
        raise XlingError(
            f"run {run_id} holds no aligned groups with English and {', '.join(others)}"
        )
    en_ids = pairs["en_id"].drop_duplicates().to_numpy()
    row_of = {int(pid): i for i, pid in enumerate(en_ids)}
    # The column name comes from a fixed mapping, never from user text.
    stored = wh.sql(
        f"SELECT phrase_id, feature, {STAT_COLUMNS[stat]} AS act FROM feature_values "
        "WHERE run_id = ? AND layer = ? AND list_contains(?, phrase_id)",
        [run_id, layer, en_ids.tolist()],
    )
    a_orig = np.zeros((len(en_ids), d_sae), dtype=np.float32)
    rows = stored["phrase_id"].map(row_of).to_numpy()
    a_orig[rows, stored["feature"].to_numpy()] = stored["act"].to_numpy()
    return AlignPairs(
        en_text=pairs["en_text"].tolist(),
        other_text=pairs["other_text"].tolist(),
        lang=pairs["lang"].tolist(),
        en_row=[row_of[int(pid)] for pid in pairs["en_id"]],
        a_orig=a_orig,
    )


def _sae_entry(recorded: dict, layer: int, run_id: int) -> dict:
    """What the run recorded about its SAE at `layer` (release id or path, d_sae)."""
    entries = {e["layer"]: e for e in recorded.get("saes", [])}
    if layer not in entries:
        have = ", ".join(map(str, sorted(entries))) or "none"
        raise XlingError(
            f"run {run_id} has no SAE at layer {layer} (it has {have}); pick --target-layer "
            "among them"
        )
    return entries[layer]


def _load_sae(entry: dict, device: str):
    """The SAE a run used, loaded again from the same release id or path."""
    from xling.ingest.saes import SaeSource, load_saes

    source = (
        SaeSource(release=entry["release"], sae_id=entry["sae_name"])
        if entry["release"] is not None
        else SaeSource(sae_dir=entry["path"])
    )
    return load_saes(source, [entry["layer"]], device=device)[entry["layer"]].sae


def align_lora(
    wh: Warehouse,
    cfg: AlignLoraConfig,
    on_step: StepCallback | None = None,
    *,
    model: LoadedModel | None = None,
) -> FinetuneResult:
    """Train activation-aligned LoRA from `cfg.base_run`, save it (peft format) to `cfg.out`
    and record it in `finetunes`. Everything is checked before the model loads.

    `model`: the base run's model, already loaded (the round reuses one load); it leaves
    tuned, the LoRA merged into its weights and `model.adapter` set to the saved adapter.
    """
    from pathlib import Path

    from xling.finetune.common import (
        check_out,
        load_run_model,
        record_finetune,
        split_groups,
    )
    from xling.finetune.subnetwork import count_parameters

    out = Path(cfg.out)
    check_out(out, ADAPTER_FILES)
    entry = _sae_entry(wh.run(cfg.base_run)["config"], cfg.target_layer, cfg.base_run)
    groups = None if cfg.split is None else split_groups(wh, cfg.split, "train")
    pairs = aligned_pairs(
        wh, cfg.base_run, cfg.target_layer, cfg.langs, cfg.stat, entry["d_sae"], groups
    )
    if cfg.normalize == "en-norm":
        pairs = _with_active_english(pairs, cfg.target_layer)
    if model is None:
        lm, recorded = load_run_model(wh, cfg.base_run, cfg.device)
    else:
        lm, recorded = model, wh.run(cfg.base_run)["config"]
    sae = _load_sae(entry, str(lm.device))
    n_params = count_parameters(lm.model)
    peft_model = add_lora(lm.model, cfg, lm.n_layers)
    n_trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info(
        "aligning %d pairs (%s) at layer %d: %d LoRA parameters",
        len(pairs),
        ", ".join(sorted(set(pairs.lang))),
        cfg.target_layer,
        n_trainable,
    )
    losses = train_alignment(
        peft_model,
        lm.tokenizer,
        sae,
        pairs,
        cfg,
        include_bos=bool(recorded.get("include_bos", False)),
        on_step=on_step,
    )
    peft_model.save_pretrained(str(out))
    if model is not None:
        # The same weights apply_adapter would produce from the saved files.
        lm.model = peft_model.merge_and_unload().eval()
        lm.adapter = str(out.resolve())
    return record_finetune(
        wh,
        kind="align",
        base_run=cfg.base_run,
        config=cfg.to_json(),
        losses=losses,
        adapter=out,
        n_trainable=n_trainable,
        n_params=n_params,
        extra={"n_pairs": len(pairs)},
    )


def _with_active_english(pairs: AlignPairs, layer: int) -> AlignPairs:
    """Only the pairs whose English phrase has an active feature: `en-norm` divides by its
    squared norm."""
    norms = (pairs.a_orig.astype("float64") ** 2).sum(axis=1)
    keep = [i for i, row in enumerate(pairs.en_row) if norms[row] > 0]
    if not keep:
        raise XlingError(
            f"no English phrase has an active feature at layer {layer}; en-norm needs some"
        )
    if len(keep) < len(pairs):
        log.info("en-norm: dropped %d pairs with silent English", len(pairs) - len(keep))
    return AlignPairs(
        en_text=[pairs.en_text[i] for i in keep],
        other_text=[pairs.other_text[i] for i in keep],
        lang=[pairs.lang[i] for i in keep],
        en_row=[pairs.en_row[i] for i in keep],
        a_orig=pairs.a_orig,
    )
