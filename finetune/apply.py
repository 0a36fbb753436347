"""The fine-tune round, and where applying a fine-tune went.

finetune_round(wh, ...)            base run -> aligned LoRA -> tuned run (the demo's round)

Applying an adapter or a steering recipe to a loaded model is part of loading it, so it lives
in ingest: `xling.ingest.models.ModelSpec.load()` (with `xling.ingest.adapters.apply_adapter`,
still importable from here, and `xling.ingest.steering`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xling.ingest.adapters import apply_adapter  # noqa: F401

if TYPE_CHECKING:
    from xling.finetune.align import StepCallback
    from xling.finetune.common import FinetuneResult
    from xling.ingest.runner import ProgressFn
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


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
