"""Steering interventions: named recipes built from the warehouse (`xling steer add`).

A recipe (xling.ingest.steering.SteeringRecipe) is self-contained data stored as JSON in
`interventions.config`: a list of edits, each naming a site in the model, a layer, the indices
it touches and the values it uses. Building it reads the warehouse once (here); applying it
needs only the model (xling.ingest.steering, which a model spec's `load()` uses).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from xling.finetune.config import NeuronSteerConfig, ResidualSteerConfig

# Recipes and their hooks live in ingest (a run applies them); these names stay importable here.
from xling.ingest.steering import (  # noqa: F401
    Edit,
    SteeringRecipe,
    check_recipe,
    load_recipe,
    steering,
)
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

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
