"""`xling finetune align|subnetwork|list`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, console, open_warehouse, parse_list, render

app = typer.Typer(
    help="Activation-aligned LoRA and language-subnetwork tuning.", no_args_is_help=True
)

OutOpt = Annotated[Path, typer.Option("--out", help="Where the adapter is saved.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Optimisation steps.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Phrases (pairs) per step.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu | cuda | auto [default: the run's].")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seeds initialisation and data order.")]


@contextlib.contextmanager
def _progress(total: int, fields: tuple[str, ...]) -> Iterator:
    """A rich progress bar over steps, showing the latest value of each loss field."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    shown = "  ".join(f"{f} {{task.fields[{f}]:.4g}}" for f in fields)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(shown),
        TimeRemainingColumn(),
        console=console(stderr=True),
    ) as bar:
        task = bar.add_task("training", total=total, **dict.fromkeys(fields, float("nan")))

        def on_step(record: dict[str, float]) -> None:
            bar.update(task, advance=1, **{f: record[f] for f in fields})

        yield on_step


def _report(result, what: str) -> None:
    first, last = result.losses[0]["loss"], result.losses[-1]["loss"]
    typer.echo(
        f"finetune {result.finetune_id} ({what}): loss {first:.4g} -> {last:.4g} over "
        f"{len(result.losses)} steps; {result.n_trainable:,} of {result.n_params:,} parameters "
        f"trained ({result.trainable_pct:.4f}%); saved {result.adapter}"
    )


@app.command("align")
def align(
    run: Annotated[int, typer.Option("--run", help="Base run (model, SAE, stored activations).")],
    target_layer: Annotated[int, typer.Option("--target-layer", help="T: the layer aligned.")],
    out: OutOpt,
    langs: Annotated[
        str, typer.Option("--langs", help="Languages paired with English, or 'all'.")
    ] = "all",
    lam: Annotated[float, typer.Option("--lambda", help="λ: weight of English retention.")] = 1.0,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha.")] = 16.0,
    steps: StepsOpt = 100,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-4,
    batch_size: BatchOpt = 8,
    stat: Annotated[str, typer.Option("--stat", help="Pooled statistic: max | mean.")] = "max",
    gradient: Annotated[
        str,
        typer.Option(
            "--gradient",
            help="Through the SAE activation: straight-through (features that are off still "
            "get a gradient) | exact.",
        ),
    ] = "straight-through",
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    db: DbOpt = None,
) -> None:
    """LoRA on layers ≤ T pulling each language's pooled SAE activations at T toward English.

    Loss per pair: ‖a_T(en) − a_T(l)‖² + λ‖a_T(en) − a_T^orig(en)‖², a^orig from the base run.
    The adapter is saved in peft's format; `xling ingest --adapter OUT` measures its effect.
    """
    from xling.finetune.align import align_lora
    from xling.finetune.config import AlignLoraConfig

    cfg = AlignLoraConfig(
        base_run=run,
        target_layer=target_layer,
        out=str(out),
        langs=None if langs.strip() == "all" else parse_list(langs),
        lam=lam,
        rank=rank,
        alpha=alpha,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        stat=stat,
        gradient=gradient,
        device=device,
        seed=seed,
    )
    with open_warehouse(db, read_only=False) as wh, _progress(steps, ("align", "retain")) as cb:
        result = align_lora(wh, cfg, on_step=cb)
    _report(result, f"{result.extra['n_pairs']} pairs")


@app.command("subnetwork")
def subnetwork(
    run: Annotated[int, typer.Option("--run", help="Run made with --neurons.")],
    lang: Annotated[str, typer.Option("--lang", help="Language whose neurons train.")],
    out: OutOpt,
    top_rate: Annotated[
        float, typer.Option("--top-rate", help="LAPE top rate selecting the neurons.")
    ] = 0.01,
    steps: StepsOpt = 100,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-4,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay (selected weights only).")
    ] = 0.01,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    db: DbOpt = None,
) -> None:
    """Train only LANG's LAPE neurons (gate/up rows, down columns) on LANG's phrases.

    Every other weight stays bit-identical. Saves a small safetensors delta that
    `xling ingest --adapter OUT` applies.
    """
    from xling.finetune.config import SubnetworkConfig
    from xling.finetune.subnetwork import train_subnetwork

    cfg = SubnetworkConfig(
        run=run,
        lang=lang,
        out=str(out),
        top_rate=top_rate,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
    with open_warehouse(db, read_only=False) as wh, _progress(steps, ("loss",)) as cb:
        result = train_subnetwork(wh, cfg, on_step=cb)
    n = sum(result.extra["neurons"].values())
    _report(result, f"{n} neurons in {len(result.extra['neurons'])} layers")


@app.command("list")
def list_(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """One line per fine-tune: kind, base run, steps, first and last loss, adapter."""
    from xling.finetune.common import list_finetunes

    with open_warehouse(db) as wh:
        render(list_finetunes(wh), fmt, title="fine-tunes", name="finetunes")


@app.command("show")
def show(
    finetune_id: Annotated[int, typer.Argument(help="Fine-tune id.")],
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A fine-tune's record (config included) as JSON, then its loss at every step."""
    import json

    from xling.finetune.common import finetune_record

    with open_warehouse(db) as wh:
        row, losses = finetune_record(wh, finetune_id)
    typer.echo(json.dumps(row, indent=2, default=str))
    render(losses, fmt, title="losses", name="losses")
