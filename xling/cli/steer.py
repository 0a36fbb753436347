"""`xling steer add|list|show|delete`: named steering interventions."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, open_warehouse, parse_layers, render

app = typer.Typer(help="Steering interventions applied through hooks.", no_args_is_help=True)


class Kind(enum.StrEnum):
    neurons = "neurons"
    residual = "residual"
    diffmean = "diffmean"  # the residual difference of means, by its other name


class Mode(enum.StrEnum):
    scale = "scale"
    replacement = "replacement"
    additive = "additive"
    diffmean = "diffmean"


NameArg = Annotated[str, typer.Argument(help="Intervention name.")]


@app.command("add")
def add(
    name: NameArg,
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind",
            help="neurons: a language's LAPE neurons; residual (alias diffmean): add "
            "α·(mean English residual − mean residual of the language) at one layer.",
        ),
    ],
    run: Annotated[
        int,
        typer.Option("--run", help="Run holding neuron stats (neurons) or residuals (residual)."),
    ],
    lang: Annotated[str, typer.Option("--lang", help="Language steered.")],
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            "--layer",
            help="neurons: layers to steer (default: every layer with LAPE neurons); "
            "residual: the one layer (required).",
        ),
    ] = None,
    mode: Annotated[
        Mode,
        typer.Option("--mode", help="Neuron mode: ×α, set to mean, +α·mean, +α·(mean − others)."),
    ] = Mode.additive,
    alpha: Annotated[float, typer.Option("--alpha", help="α.")] = 1.0,
    top_rate: Annotated[
        float, typer.Option("--top-rate", help="LAPE top rate selecting the neurons.")
    ] = 0.01,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite NAME if it exists.")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Build an intervention from a run's statistics and store it under NAME.

    The means are read now and stored with the recipe, so applying it (`ingest --steer NAME`,
    `bench run --steer NAME`) needs no warehouse statistics.
    """
    from xling.finetune.config import NeuronSteerConfig, ResidualSteerConfig
    from xling.finetune.steer import add_intervention
    from xling.warehouse.errors import XlingError

    layer_list = parse_layers(layers)
    if kind is Kind.neurons:
        cfg = NeuronSteerConfig(
            run=run, lang=lang, mode=mode.value, alpha=alpha, layers=layer_list, top_rate=top_rate
        )
    else:
        if not layer_list or len(layer_list) != 1:
            raise XlingError("a residual intervention needs exactly one --layer")
        cfg = ResidualSteerConfig(run=run, lang=lang, layer=layer_list[0], alpha=alpha)
    with open_warehouse(db, read_only=False) as wh:
        recipe = add_intervention(wh, name, cfg, replace=replace)
    units = sum(len(e.values) for e in recipe.edits)
    layers_done = ",".join(str(e.layer) for e in recipe.edits)
    typer.echo(
        f"stored intervention {name!r}: {recipe.kind}, {units} units at layers {layers_done}"
    )


@app.command("list")
def list_(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """One line per stored intervention."""
    from xling.finetune.steer import list_interventions

    with open_warehouse(db) as wh:
        render(list_interventions(wh), fmt, title="interventions", name="interventions")


@app.command("show")
def show(name: NameArg, db: DbOpt = None) -> None:
    """An intervention's full recipe (config, model, edits) as JSON."""
    import json

    from xling.finetune.steer import load_recipe

    with open_warehouse(db) as wh:
        recipe = load_recipe(wh, name)
    typer.echo(
        json.dumps({"name": name, "kind": recipe.kind, **json.loads(recipe.to_json())}, indent=2)
    )


@app.command("delete")
def delete(name: NameArg, db: DbOpt = None) -> None:
    """Delete a stored intervention."""
    from xling.finetune.steer import delete_intervention

    with open_warehouse(db, read_only=False) as wh:
        delete_intervention(wh, name)
    typer.echo(f"deleted intervention {name!r}")
