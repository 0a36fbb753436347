"""Applying what `xling finetune` and `xling steer` made to a loaded model (ingest, bench).

apply_adapter(lm, path)            LoRA directory or subnetwork delta, merged into lm.model;
                                   sets lm.adapter (recorded in `models.adapter`)
apply_steering(model, wh, name)    context manager: the stored intervention's hooks
finetune_round(wh, ...)            base run -> aligned LoRA -> tuned run (the demo's round)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.finetune.align import StepCallback
    from xling.finetune.common import FinetuneResult
    from xling.ingest.models import LoadedModel
    from xling.ingest.runner import ProgressFn
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


def apply_adapter(lm: LoadedModel, path: str | Path) -> LoadedModel:
    """Load a fine-tune into `lm` in place and return it.

    `path` is a peft LoRA directory (`finetune align`; merged into the weights, so the model
    keeps its plain structure and every hook works unchanged) or a subnetwork delta
    (`finetune subnetwork`; rows and columns written into the MLP weights). `lm.adapter`
    becomes the artifact's absolute path, which `register_model` stores in `models.adapter`.
    """
    from xling.finetune.subnetwork import apply_delta, is_delta

    p = Path(path)
    if is_delta(p):
        meta = apply_delta(lm.model, p)
        log.info(
            "applied subnetwork delta %s (%s, lang %s)", p, meta.get("model"), meta.get("lang")
        )
    elif (p / "adapter_config.json").is_file():
        lm.model = _merge_lora(lm.model, p)
    else:
        raise XlingError(
            f"{p} is neither a peft LoRA directory (adapter_config.json) nor an xling "
            "subnetwork delta; pass what `xling finetune` wrote"
        )
    lm.adapter = str(p.resolve())
    return lm


def _merge_lora(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(path))
    except (ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XlingError(f"LoRA {path} does not fit this model: {first}") from None
    log.info("merged LoRA %s", path)
    return peft_model.merge_and_unload().eval()


def apply_steering(
    model: torch.nn.Module, wh: Warehouse, name: str
) -> contextlib.AbstractContextManager[None]:
    """The stored intervention `name` as a context manager over `model`'s forward passes.

    The recipe is read (and an unknown name refused) when this is called; the hooks are
    registered on entering the `with` block and removed on leaving it.
    """
    from xling.finetune.steer import load_recipe, steering

    return steering(model, load_recipe(wh, name))


@dataclass
class RoundResult:
    """One fine-tune round: the fine-tune, the base run and the run made with its adapter."""

    finetune: FinetuneResult
    base_run: int
    tuned_run: int


def finetune_round(
    wh: Warehouse,
    *,
    base_run: int,
    lang: str,
    target_layer: int,
    out: str | Path,
    steps: int = 20,
    lr: float = 1e-3,
    lam: float = 1.0,
    layers: list[int] | None = None,
    on_step: StepCallback | None = None,
    progress: ProgressFn | None = None,
) -> RoundResult:
    """Aligned LoRA for one language from `base_run`, then the base run's ingest again with
    the adapter (over `layers` only, when given: a comparison needs only the layers both
    runs share).

    `query compare --base BASE --tuned TUNED` (analysis `compare`) then shows the effect.
    """
    from xling.finetune.align import align_lora
    from xling.finetune.config import AlignLoraConfig
    from xling.ingest.runner import IngestConfig, run_ingest

    cfg = AlignLoraConfig(
        base_run=base_run,
        target_layer=target_layer,
        out=str(out),
        langs=[lang],
        steps=steps,
        lr=lr,
        lam=lam,
    )
    result = align_lora(wh, cfg, on_step=on_step)
    changes: dict = {"adapter": result.adapter}
    if layers is not None:
        changes["layers"] = layers
    base_cfg = IngestConfig.from_dict(wh.run(base_run)["config"])
    tuned_run = run_ingest(wh, dataclasses.replace(base_cfg, **changes), progress)
    return RoundResult(finetune=result, base_run=base_run, tuned_run=tuned_run)
