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
    str | None, typer.Option("--device", help="cpu | cuda | auto (default: the run's).")
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


@app.command("round")
def round_(
    run: Annotated[int, typer.Option("--run", help="Base run (finished, base model).")],
    method: Annotated[str, typer.Option("--method", help="align | subnetwork | steer.")],
    langs: Annotated[
        str,
        typer.Option(
            "--langs", help="Languages ('all' = every non-English one; one for subnetwork/steer)."
        ),
    ] = "all",
    target_layer: Annotated[
        int | None,
        typer.Option("--target-layer", help="T: layer aligned (align), block steered (residual)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Adapter path (default: beside the warehouse).")
    ] = None,
    steps: StepsOpt = 60,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Learning rate (default: align 2e-4, subnetwork 1e-4)."),
    ] = None,
    lam: Annotated[float, typer.Option("--lambda", help="align: λ, English retention.")] = 1.0,
    batch_size: BatchOpt = 8,
    normalize: Annotated[
        str, typer.Option("--normalize", help="align loss: none (the paper's) | en-norm.")
    ] = "none",
    lora_layers: Annotated[
        str | None, typer.Option("--lora-layers", help="align: blocks with LoRA (default: 0-T).")
    ] = None,
    rank: Annotated[int, typer.Option("--rank", help="align: LoRA rank.")] = 8,
    top_rate: Annotated[
        float, typer.Option("--top-rate", help="subnetwork, neuron steering: LAPE top rate.")
    ] = 0.01,
    steer_kind: Annotated[
        str, typer.Option("--steer-kind", help="steer: residual | neurons.")
    ] = "residual",
    steer_mode: Annotated[
        str,
        typer.Option("--steer-mode", help="steer neurons: scale|replacement|additive|diffmean."),
    ] = "additive",
    alpha: Annotated[float, typer.Option("--alpha", help="steer: α.")] = 1.0,
    layers: Annotated[
        str | None,
        typer.Option("--layers", help="Layers the tuned run ingests (default: the base run's)."),
    ] = None,
    eval_frac: Annotated[
        float, typer.Option("--eval-frac", help="Share of aligned groups held apart.")
    ] = 0.2,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seeds the split.")] = 0,
    capability: Annotated[
        bool,
        typer.Option("--capability/--no-capability", help="Score NLL and parity before/after."),
    ] = True,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """One round: base run -> artifact from the train groups -> ingest with it -> compare and
    capability on the held-apart groups, all recorded (`finetune rounds`).

    The tuned run is the newest run; `query compare --base RUN --tuned TUNED` reports on the
    held-apart groups.
    """
    from xling.cli.common import parse_layers
    from xling.cli.ingest import progress_bar
    from xling.pipeline.round import RoundConfig, round_tables, run_round

    cfg = RoundConfig(
        base_run=run,
        method=method,
        out=None if out is None else str(out),
        langs=None if langs.strip() == "all" else parse_list(langs),
        target_layer=target_layer,
        eval_frac=eval_frac,
        split_seed=split_seed,
        layers=parse_layers(layers),
        steps=steps,
        lr=lr,
        lam=lam,
        batch_size=batch_size,
        normalize=normalize,
        lora_layers=parse_layers(lora_layers),
        rank=rank,
        top_rate=top_rate,
        steer_kind=steer_kind,
        steer_mode=steer_mode,
        alpha=alpha,
        capability=capability,
        seed=seed,
        device=device,
    )
    fields = ("align", "retain") if method == "align" else ("loss",)
    with (
        open_warehouse(db, read_only=False) as wh,
        _progress(steps if method != "steer" else 0, fields) as cb,
        progress_bar("ingest") as update,
    ):
        result = run_round(wh, cfg, on_step=cb, progress=update)
    typer.echo(
        f"round {result.round_id}: run {result.base_run} -> run {result.tuned_run} "
        f"({method}, {result.artifact}); split {result.split_id}; {result.seconds:.0f} s"
    )
    for title, df in round_tables(result):
        render(df, fmt, title=title, name="round")


@app.command("rounds")
def rounds(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """One line per round: base and tuned run, split, method, artifact, wall time."""
    from xling.pipeline.round import list_rounds

    with open_warehouse(db) as wh:
        render(list_rounds(wh), fmt, title="rounds", name="rounds")
