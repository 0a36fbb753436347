"""Steering interventions: named recipes built from the warehouse, applied through hooks.

A recipe is self-contained data (stored as JSON in `interventions.config`): a list of edits,
each naming a site in the model, a layer, the indices it touches and the values it uses.
Building it reads the warehouse once (`steer add`); applying it needs only the model.

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

from xling.finetune.config import NeuronSteerConfig, ResidualSteerConfig
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
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

    from xling.ingest.hooks import decoder_layers

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
    from xling.ingest.hooks import decoder_layers

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
    from xling.ingest.hooks import edit_block

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


# -- building and storing recipes ----------------------------------------------------------


def _neuron_means(wh: Warehouse, run: int, layer: int, neurons: list[int]) -> pd.DataFrame:
    """Mean act_fn(gate_proj(x)) per (lang, neuron) at `layer`: act_sum / n_tokens."""
    return wh.sql(
        "SELECT lang, neuron, act_sum / n_tokens AS mean FROM neuron_stats "
        "WHERE run_id = ? AND layer = ? AND n_tokens > 0 AND list_contains(?, neuron)",
        [run, layer, neurons],
    )


def neuron_recipe(wh: Warehouse, name: str, cfg: NeuronSteerConfig) -> SteeringRecipe:
    """The edits of a neuron intervention, with every mean read from the warehouse now."""
    from xling.finetune.common import lape_neurons

    selected = lape_neurons(wh, cfg.run, cfg.lang, cfg.top_rate)
    if cfg.layers is not None:
        missing = sorted(set(cfg.layers) - set(selected))
        if missing:
            raise XlingError(
                f"{cfg.lang!r} has no LAPE neurons at layers {missing}; it has some at "
                f"{sorted(selected)}"
            )
        selected = {layer: selected[layer] for layer in cfg.layers}
    edits = []
    for layer, neurons in selected.items():
        if cfg.mode == "scale":
            edits.append(Edit("mlp_act", layer, "mul", [cfg.alpha] * len(neurons), neurons))
            continue
        means = _neuron_means(wh, cfg.run, layer, neurons).pivot(
            index="neuron", columns="lang", values="mean"
        )
        target = means[cfg.lang].reindex(neurons).fillna(0.0)
        if cfg.mode == "replacement":
            edits.append(Edit("mlp_act", layer, "set", target.tolist(), neurons))
        elif cfg.mode == "additive":
            edits.append(Edit("mlp_act", layer, "add", (cfg.alpha * target).tolist(), neurons))
        else:
            others = means.drop(columns=cfg.lang).reindex(neurons)
            if others.shape[1] == 0:
                raise XlingError(
                    f"run {cfg.run} has neuron stats for {cfg.lang!r} only; "
                    "diffmean needs other languages"
                )
            # Each other language weighs the same, however much text it has.
            diff = target - others.mean(axis=1).fillna(0.0)
            edits.append(Edit("mlp_act", layer, "add", (cfg.alpha * diff).tolist(), neurons))
    return SteeringRecipe(name, "neurons", cfg.to_dict(), _run_model(wh, cfg.run), edits)


def mean_residuals(wh: Warehouse, run: int, layer: int, langs: list[str]) -> dict[str, np.ndarray]:
    """{lang: mean pooled residual at `layer` over the language's phrases in `run`}."""
    import numpy as np

    out = {}
    for lang in langs:
        vecs = wh.sql(
            "SELECT r.vec FROM residuals r JOIN phrases p USING (phrase_id) "
            "WHERE r.run_id = ? AND r.layer = ? AND p.lang = ?",
            [run, layer, lang],
        )["vec"]
        if vecs.empty:
            raise XlingError(
                f"run {run} has no residuals for {lang!r} at layer {layer}; "
                "ingest with --residuals (and that layer and language)"
            )
        out[lang] = np.stack(vecs.to_list()).astype(np.float64).mean(axis=0)
    return out


def residual_recipe(wh: Warehouse, name: str, cfg: ResidualSteerConfig) -> SteeringRecipe:
    """One `resid_post` edit adding α · (mean English residual − mean `lang` residual)."""
    wh.run(cfg.run)
    means = mean_residuals(wh, cfg.run, cfg.layer, ["en", cfg.lang])
    vector = cfg.alpha * (means["en"] - means[cfg.lang])
    edit = Edit("resid_post", cfg.layer, "add", vector.tolist())
    return SteeringRecipe(name, "residual", cfg.to_dict(), _run_model(wh, cfg.run), [edit])


def _run_model(wh: Warehouse, run: int) -> str:
    return str(wh.run(run)["model"])


def add_intervention(
    wh: Warehouse, name: str, cfg: NeuronSteerConfig | ResidualSteerConfig, *, replace: bool = False
) -> SteeringRecipe:
    """Build a recipe from the warehouse and store it in `interventions` under `name`."""
    if not name or not name.strip() or name != name.strip():
        raise XlingError(
            f"bad intervention name {name!r}; use a non-empty name without spaces at the ends"
        )
    exists = wh.scalar("SELECT count(*) FROM interventions WHERE name = ?", [name])
    if exists and not replace:
        raise XlingError(f"intervention {name!r} exists; pick another name or pass --replace")
    if isinstance(cfg, NeuronSteerConfig):
        recipe = neuron_recipe(wh, name, cfg)
    else:
        recipe = residual_recipe(wh, name, cfg)
    with wh.transaction() as con:
        con.execute("DELETE FROM interventions WHERE name = ?", [name])
        con.execute(
            "INSERT INTO interventions (name, kind, config) VALUES (?, ?, ?)",
            [name, recipe.kind, recipe.to_json()],
        )
    log.info("stored intervention %r (%d edits)", name, len(recipe.edits))
    return recipe


def load_recipe(wh: Warehouse, name: str) -> SteeringRecipe:
    row = wh.con.execute("SELECT kind, config FROM interventions WHERE name = ?", [name]).fetchone()
    if row is None:
        raise XlingError(f"no intervention {name!r}; `xling steer list` shows them")
    return SteeringRecipe.from_row(name, row[0], row[1])


def list_interventions(wh: Warehouse) -> pd.DataFrame:
    """One row per stored intervention, with what it was built from and what it touches."""
    import pandas as pd

    rows = []
    for name, kind, created in wh.con.execute(
        "SELECT name, kind, created_at FROM interventions ORDER BY name"
    ).fetchall():
        recipe = load_recipe(wh, name)
        cfg = recipe.config
        rows.append(
            {
                "name": name,
                "kind": kind,
                "lang": cfg["lang"],
                "mode": cfg.get("mode", "add"),
                "alpha": cfg["alpha"],
                "run": cfg["run"],
                "layers": ",".join(str(e.layer) for e in recipe.edits),
                "n_units": sum(len(e.values) for e in recipe.edits),
                "created_at": created,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["name", "kind", "lang", "mode", "alpha", "run", "layers", "n_units", "created_at"],
    )


def delete_intervention(wh: Warehouse, name: str) -> None:
    load_recipe(wh, name)
    with wh.transaction() as con:
        con.execute("DELETE FROM interventions WHERE name = ?", [name])
