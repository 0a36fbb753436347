"""Steering recipes applied to a loaded model: forward hooks that edit activations.

    SteeringRecipe / Edit          the data (stored as JSON in `interventions.config`)
    steering(model, recipe)        context manager: the recipe's hooks, removed on exit
    check_recipe(model, recipe)    refuses layers or indices the model lacks
    load_recipe(wh, name)          a stored recipe (an unknown name is one error line)

Sites:
- `mlp_act`: the output of `act_fn(gate_proj(x))` in block L's MLP — the quantity LAPE counts
  (> 0) and `neuron_stats.act_sum` sums — before it is multiplied by `up_proj(x)`.
- `resid_post`: the output of decoder block L, i.e. the residual stream at layer L.

Ops on the selected indices of every position: `mul` (× value), `set` (= value), `add`
(+ value).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xling.ingest.hooks import decoder_layers, edit_block
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

SITES = ("mlp_act", "resid_post")
OPS = ("mul", "set", "add")


@dataclass
class Edit:
    """One hook's worth of steering: at `site` of block `layer`, `op` the `index` positions
    of the last dimension with `values` (one per index). `index` None = every dimension."""

    site: str
    layer: int
    op: str
    values: list[float]
    index: list[int] | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES or self.op not in OPS:
            raise XlingError(f"bad steering edit: site {self.site!r}, op {self.op!r}")
        if self.index is not None and len(self.index) != len(self.values):
            raise XlingError("bad steering edit: index and values differ in length")


@dataclass
class SteeringRecipe:
    """A named intervention: what it was built from (`config`) and the edits it makes."""

    name: str
    kind: str
    config: dict[str, Any]
    model: str
    """Name of the model the recipe was built for (from the source run)."""
    edits: list[Edit] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "config": self.config,
                "model": self.model,
                "edits": [e.__dict__ for e in self.edits],
            }
        )

    @classmethod
    def from_row(cls, name: str, kind: str, config_json: str) -> SteeringRecipe:
        data = json.loads(config_json)
        return cls(
            name=name,
            kind=kind,
            config=data["config"],
            model=data["model"],
            edits=[Edit(**e) for e in data["edits"]],
        )


# -- applying ----------------------------------------------------------------------------


def _act_fn(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    import torch

    act = getattr(getattr(decoder_layers(model)[layer], "mlp", None), "act_fn", None)
    if not isinstance(act, torch.nn.Module):
        raise XlingError(
            f"block {layer} of {type(model).__name__} has no mlp.act_fn module; neuron "
            "steering needs a gated MLP (Gemma, Llama style)"
        )
    return act


def _edit_fn(edit: Edit) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x with the edit applied on its last dimension (a new tensor; x is not written)."""
    import torch

    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def tensors(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (like.device, like.dtype)
        if key not in cache:
            values = torch.tensor(edit.values, dtype=like.dtype, device=like.device)
            index = None if edit.index is None else torch.tensor(edit.index, device=like.device)
            cache[key] = (values, index)
        return cache[key]

    def apply(x: torch.Tensor) -> torch.Tensor:
        values, index = tensors(x)
        selected = x if index is None else x.index_select(-1, index)
        if edit.op == "add":
            selected = selected + values
        elif edit.op == "mul":
            selected = selected * values
        else:
            selected = values.expand_as(selected)
        return selected.clone() if index is None else x.index_copy(-1, index, selected)

    return apply


@contextlib.contextmanager
def _edit_output(module: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
    handle = module.register_forward_hook(lambda _m, _i, output: fn(output))
    try:
        yield
    finally:
        handle.remove()


def check_recipe(model: torch.nn.Module, recipe: SteeringRecipe) -> None:
    """Refuse a recipe whose layers or indices do not exist in `model`."""
    layers = decoder_layers(model)
    for edit in recipe.edits:
        if not 0 <= edit.layer < len(layers):
            raise XlingError(
                f"intervention {recipe.name!r} steers layer {edit.layer} but the model has "
                f"{len(layers)} layers; it was built for {recipe.model}"
            )
        size = _site_width(layers[edit.layer], edit.site)
        width = len(edit.values) if edit.index is None else max(edit.index, default=-1) + 1
        if width > size or (edit.index is None and width != size):
            raise XlingError(
                f"intervention {recipe.name!r} does not fit this model at layer {edit.layer} "
                f"({edit.site} has {size} dimensions); it was built for {recipe.model}"
            )


def _site_width(block: torch.nn.Module, site: str) -> int:
    if site == "resid_post":
        return int(block.mlp.down_proj.out_features)
    return int(block.mlp.gate_proj.out_features)


@contextlib.contextmanager
def steering(model: torch.nn.Module, recipe: SteeringRecipe) -> Iterator[None]:
    """Register the recipe's forward hooks on `model`; remove them on exit, whatever happens."""
    check_recipe(model, recipe)
    with contextlib.ExitStack() as stack:
        for edit in recipe.edits:
            fn = _edit_fn(edit)
            if edit.site == "resid_post":
                stack.enter_context(edit_block(model, edit.layer, fn))
            else:
                stack.enter_context(_edit_output(_act_fn(model, edit.layer), fn))
        log.info("steering with %r: %d hooks", recipe.name, len(recipe.edits))
        yield


def load_recipe(wh: Warehouse, name: str) -> SteeringRecipe:
    row = wh.con.execute("SELECT kind, config FROM interventions WHERE name = ?", [name]).fetchone()
    if row is None:
        raise XlingError(f"no intervention {name!r}; `xling steer list` shows them")
    return SteeringRecipe.from_row(name, row[0], row[1])
