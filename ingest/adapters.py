"""Fine-tunes applied to a loaded model: a peft LoRA directory or an xling subnetwork delta.

    apply_adapter(lm, path) -> lm      merged in place; lm.adapter = the artifact's absolute path
    save_delta / load_delta / apply_delta / is_delta   the subnetwork delta file format

A LoRA is merged into the weights (`merge_and_unload`), so the model keeps its plain structure
and every hook works unchanged. A subnetwork delta (written by `xling finetune subnetwork`) is
a safetensors file holding, per layer, the tuned rows of `gate_proj`/`up_proj` and columns of
`down_proj` with their neuron indices; applying it copies them into the MLP weights. Both live
here, under the runner, because loading a model for a run means applying its adapter.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.ingest.hooks import decoder_layers
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.ingest.models import LoadedModel

log = logging.getLogger(__name__)

DELTA_FORMAT = "xling-subnetwork-delta"
DELTA_VERSION = "1"
DELTA_FILE = "subnetwork.safetensors"
# (projection, dimension of its weight that indexes neurons): nn.Linear weights are [out, in].
NEURON_SLICES = (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1))


def apply_adapter(lm: LoadedModel, path: str | Path) -> LoadedModel:
    """Load a fine-tune into `lm` in place and return it.

    `path` is a peft LoRA directory (`finetune align`) or a subnetwork delta (`finetune
    subnetwork`). `lm.adapter` becomes the artifact's absolute path, which the catalog stores
    in `models.adapter`.
    """
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


def gated_mlp(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """Block `layer`'s MLP, refused unless it is gated (gate_proj/up_proj/down_proj)."""
    mlp = getattr(decoder_layers(model)[layer], "mlp", None)
    if mlp is None or not all(hasattr(mlp, name) for name, _ in NEURON_SLICES):
        raise XlingError(
            f"block {layer} of {type(model).__name__} has no gated MLP "
            "(gate_proj/up_proj/down_proj); subnetwork tuning needs one"
        )
    return mlp


def _layers_in(tensors: dict[str, torch.Tensor]) -> list[int]:
    return sorted({int(key.split(".")[1]) for key in tensors})


def write_delta(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy the delta's rows/columns into the model's MLP weights, in place (cast to the
    weights' dtype: exact when the model is loaded in the dtype it was tuned in)."""
    import torch

    with torch.no_grad():
        for layer in _layers_in(tensors):
            mlp = gated_mlp(model, layer)
            for name, dim in NEURON_SLICES:
                weight = getattr(mlp, name).weight
                index = tensors[f"layer.{layer}.index"].to(weight.device)
                part = tensors[f"layer.{layer}.{name}"]
                want = list(weight.shape)
                want[dim] = index.numel()
                if list(part.shape) != want:
                    raise XlingError(
                        f"subnetwork delta does not fit layer {layer} {name}: slices "
                        f"{tuple(part.shape)}, weight {tuple(weight.shape)}"
                    )
                weight.index_copy_(dim, index, part.to(weight.device, weight.dtype))


def save_delta(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write the delta as safetensors; `metadata` values are stored as JSON strings."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": DELTA_FORMAT, "version": DELTA_VERSION}
    meta.update({key: json.dumps(value) for key, value in metadata.items()})
    save_file(tensors, str(path), metadata=meta)
    return path


def delta_path(path: str | Path) -> Path:
    """The delta file for `path`: the file itself, or `DELTA_FILE` inside a directory."""
    p = Path(path)
    return p / DELTA_FILE if p.is_dir() or not p.suffix else p


def is_delta(path: str | Path) -> bool:
    p = delta_path(path)
    if not p.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return (f.metadata() or {}).get("format") == DELTA_FORMAT
    except Exception:
        return False


def load_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a delta file written by `save_delta`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = delta_path(path)
    if not is_delta(p):
        raise XlingError(
            f"{p} is not an xling subnetwork delta; pass the file `finetune subnetwork` wrote"
        )
    with safe_open(str(p), framework="pt") as f:
        raw = f.metadata() or {}
    meta = {k: json.loads(v) for k, v in raw.items() if k not in ("format", "version")}
    return load_file(str(p)), meta


def apply_delta(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Write a saved delta into `model` (checked against its shape); returns the metadata."""
    tensors, meta = load_delta(path)
    gate = gated_mlp(model, 0).gate_proj
    shape = (len(decoder_layers(model)), gate.in_features, gate.out_features)
    made_for = (meta.get("n_layers"), meta.get("d_model"), meta.get("d_mlp"))
    if made_for != shape:
        raise XlingError(
            f"delta {path} was made for {meta.get('model')} (layers, d_model, d_mlp = "
            f"{made_for}), not this model {shape}"
        )
    write_delta(model, tensors)
    return meta
