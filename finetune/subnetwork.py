"""Language-subnetwork tuning: train only the MLP weights of a language's LAPE neurons.

Neuron j of block L is row j of `gate_proj` and `up_proj` and column j of `down_proj`. Those
rows and columns are spliced out as the only trainable tensors (a parametrization writes them
into the frozen weight on every forward), so the optimiser — AdamW, weight decay included —
never touches any other weight: they stay bit-identical. The result is saved as a small delta
file (safetensors: the new rows and columns, their indices and metadata) that
`xling.ingest.adapters.apply_adapter` writes back into a freshly loaded model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xling.finetune.config import SubnetworkConfig

# The delta format lives with applying it, in ingest; apply_delta and load_delta stay
# importable from here.
from xling.ingest.adapters import (  # noqa: F401
    NEURON_SLICES,
    apply_delta,
    delta_path,
    load_delta,
    save_delta,
    write_delta,
)
from xling.ingest.adapters import gated_mlp as _mlp
from xling.ingest.hooks import decoder_layers as _layers
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.finetune.align import StepCallback
    from xling.finetune.common import FinetuneResult
    from xling.ingest.models import LoadedModel
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


def _splice_module():
    import torch

    class Splice(torch.nn.Module):
        """The frozen weight with the `index` slices along `dim` taken from a trainable part."""

        def __init__(self, weight: torch.Tensor, index: torch.Tensor, dim: int) -> None:
            super().__init__()
            self.dim = dim
            self.register_buffer("index", index)
            self.part = torch.nn.Parameter(weight.detach().index_select(dim, index).clone())

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight.index_copy(self.dim, self.index, self.part)

    return Splice


@contextlib.contextmanager
def spliced(
    model: torch.nn.Module, neurons: dict[int, list[int]]
) -> Iterator[dict[str, torch.Tensor]]:
    """Make only the selected neurons' rows/columns trainable, for the duration of the block.

    Yields {"layer.L.<proj>": part} — the trainable tensors, to hand to an optimiser. Every
    parameter of the model is frozen inside the block. On exit the parametrizations are
    removed, the original weights (never written to) come back, and — unless the block
    raised — the trained parts are written into them (`write_delta`): the model leaves tuned.
    """
    import torch
    from torch.nn.utils import parametrize

    Splice = _splice_module()
    for p in model.parameters():
        p.requires_grad_(False)
    parts: dict[str, torch.Tensor] = {}
    registered: list[torch.nn.Module] = []
    try:
        for layer, idx in sorted(neurons.items()):
            mlp = _mlp(model, layer)
            for name, dim in NEURON_SLICES:
                proj = getattr(mlp, name)
                index = torch.tensor(sorted(idx), dtype=torch.long, device=proj.weight.device)
                splice = Splice(proj.weight, index, dim)
                parametrize.register_parametrization(proj, "weight", splice)
                registered.append(proj)
                parts[f"layer.{layer}.{name}"] = splice.part
        yield parts
        trained = {key: part.detach().clone() for key, part in parts.items()}
    finally:
        for proj in registered:
            parametrize.remove_parametrizations(proj, "weight", leave_parametrized=False)
    write_delta(model, delta_tensors(neurons, trained))


def delta_tensors(
    neurons: dict[int, list[int]], parts: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The delta file's tensors: per layer the sorted neuron indices and the new slices."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for layer, idx in sorted(neurons.items()):
        out[f"layer.{layer}.index"] = torch.tensor(sorted(idx), dtype=torch.long)
        for name, _ in NEURON_SLICES:
            out[f"layer.{layer}.{name}"] = (
                parts[f"layer.{layer}.{name}"].detach().cpu().contiguous()
            )
    return out


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- from the warehouse ------------------------------------------------------------------


def language_texts(
    wh: Warehouse, run_id: int, lang: str, groups: list[str] | None = None
) -> list[str]:
    """The run's phrases in `lang` (only those of `groups` when given), in phrase order: the
    training text."""
    texts = wh.sql(
        "SELECT p.text FROM phrases p JOIN phrase_tokens t USING (phrase_id) "
        "WHERE t.run_id = ? AND p.lang = ? "
        "AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(?, p.group_id)) "
        "ORDER BY p.phrase_id",
        [run_id, lang, groups, groups],
    )["text"].tolist()
    if not texts:
        raise XlingError(f"run {run_id} has no phrases in {lang!r} to train on")
    return texts


def train_subnetwork(
    wh: Warehouse,
    cfg: SubnetworkConfig,
    on_step: StepCallback | None = None,
    *,
    model: LoadedModel | None = None,
) -> FinetuneResult:
    """Tune `cfg.lang`'s LAPE neurons on its phrases (causal-LM loss), save the delta file
    and record the fine-tune. Everything is checked before the model loads.

    `model`: the run's model, already loaded; it leaves tuned (the delta written into its
    weights) with `model.adapter` set to the saved delta."""
    import torch

    from xling.finetune.common import (
        check_out,
        encode,
        lape_neurons,
        load_run_model,
        record_finetune,
        shuffled_batches,
        split_groups,
    )

    out = delta_path(cfg.out)
    check_out(out, (out.name,))
    neurons = lape_neurons(wh, cfg.run, cfg.lang, cfg.top_rate)
    groups = None if cfg.split is None else split_groups(wh, cfg.split, "train")
    texts = language_texts(wh, cfg.run, cfg.lang, groups)
    given = model is not None
    lm = model if model is not None else load_run_model(wh, cfg.run, cfg.device)[0]
    model, tok = lm.model, lm.tokenizer
    n_layers = len(_layers(model))
    if max(neurons) >= n_layers:
        raise XlingError(
            f"run {cfg.run}'s neurons reach layer {max(neurons)}; the model has {n_layers}"
        )
    n_params = count_parameters(model)
    losses: list[dict[str, float]] = []
    model.train()
    with spliced(model, neurons) as parts:
        params = list(parts.values())
        n_trainable = sum(p.numel() for p in params)
        log.info(
            "training %d neurons of %r over %d layers: %d of %d parameters (%.4f%%)",
            sum(map(len, neurons.values())),
            cfg.lang,
            len(neurons),
            n_trainable,
            n_params,
            100 * n_trainable / n_params,
        )
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        batches = shuffled_batches(len(texts), cfg.batch_size, cfg.seed)
        for step, idx in zip(range(1, cfg.steps + 1), batches, strict=False):
            ids, mask = encode(tok, [texts[i] for i in idx], cfg.max_length, lm.device)
            loss = model(
                input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
            ).loss
            if not torch.isfinite(loss):
                raise XlingError(f"loss is {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            record = {"step": step, "loss": loss.item(), "grad_norm": float(grad_norm)}
            losses.append(record)
            if on_step is not None:
                on_step(record)
    model.eval()
    tensors = delta_tensors(neurons, parts)
    save_delta(
        out,
        tensors,
        {
            "model": lm.name,
            "n_layers": n_layers,
            "d_model": lm.d_model,
            "d_mlp": lm.d_mlp,
            "dtype": str(lm.dtype).removeprefix("torch."),
            "lang": cfg.lang,
            "run": cfg.run,
            "top_rate": cfg.top_rate,
            "neurons": {str(layer): len(ids) for layer, ids in neurons.items()},
        },
    )
    if given:
        # spliced() left the trained slices in the weights: the model is the tuned one.
        lm.adapter = str(out.resolve())
    return record_finetune(
        wh,
        kind="subnetwork",
        base_run=cfg.run,
        config=cfg.to_json(),
        losses=losses,
        adapter=out,
        n_trainable=n_trainable,
        n_params=n_params,
        extra={"neurons": {layer: len(ids) for layer, ids in neurons.items()}},
    )
