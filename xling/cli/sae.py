"""`xling sae`."""

from __future__ import annotations

from typing import Annotated

import typer

from xling.cli.common import (
    DbOpt,
    Format,
    FormatOpt,
    console,
    open_warehouse,
    parse_layers,
    parse_list,
    render,
)

app = typer.Typer(help="Train and list sparse autoencoders.", no_args_is_help=True)


@app.command("train")
def train(
    model: Annotated[
        str,
        typer.Option(
            help="HF hub id, local directory, .gguf file, or gemma3-270m (offline built-in)."
        ),
    ],
    layers: Annotated[str, typer.Option(help="Layers to train an SAE for, e.g. 0,4,8 or 0-5.")],
    d_sae: Annotated[int | None, typer.Option(help="SAE width (default: 8 x d_model).")] = None,
    k: Annotated[
        int | None,
        typer.Option(
            help="BatchTopK SAE with k active features per token on average (default: 32)."
        ),
    ] = None,
    l1: Annotated[
        float | None,
        typer.Option(help="Train a standard (ReLU + L1) SAE with this L1 coefficient instead."),
    ] = None,
    tokens: Annotated[
        int, typer.Option(help="Training tokens; the corpus is replayed as often as needed.")
    ] = 200_000,
    batch_tokens: Annotated[int, typer.Option(help="Tokens per optimiser step.")] = 512,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    langs: Annotated[
        str | None, typer.Option(help="Train on these languages only, e.g. en,hi.")
    ] = None,
    holdout_every: Annotated[
        int,
        typer.Option(
            help="Every n-th phrase group is held out to measure explained variance and L0."
        ),
    ] = 10,
    out: Annotated[
        str | None,
        typer.Option(help="Directory for the SAEs (default: XLING_HOME/saes/<model>/<time>)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Phrases per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    dtype: Annotated[
        str, typer.Option(help="Model dtype: float32, bfloat16 or float16.")
    ] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "cpu",
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option("--trust-remote-code", help="Run the model repository's own Python code."),
    ] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow .bin (pickle) checkpoints.")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Train per-layer SAEs (sae-lens) on the model's residual stream over the corpus; register them."""
    import pandas as pd

    from xling.cli.ingest import progress_bar
    from xling.ingest.sae_train import SaeTrainConfig, train_saes
    from xling.warehouse.errors import XlingError

    parsed = parse_layers(layers)
    if not parsed:
        raise XlingError("pass --layers, e.g. 0,4,8")
    config = SaeTrainConfig(
        model=model,
        layers=parsed,
        d_sae=d_sae,
        k=k,
        l1=l1,
        tokens=tokens,
        batch_tokens=batch_tokens,
        lr=lr,
        holdout_every=holdout_every,
        langs=parse_list(langs),
        batch_size=batch_size,
        seed=seed,
        out=out,
        revision=revision,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    with open_warehouse(db, read_only=False) as wh, progress_bar("training", "tokens") as update:
        trained = train_saes(wh, config, update)
    render(
        pd.DataFrame(
            [
                {
                    "sae_id": t.sae_id,
                    "layer": t.layer,
                    "architecture": t.architecture,
                    "d_sae": t.d_sae,
                    "explained_variance": t.explained_variance,
                    "l0": t.l0,
                    "path": t.path,
                }
                for t in trained
            ]
        ),
        title="trained SAEs (explained variance and L0 on held-out phrases)",
    )
    console().print(f"registered {len(trained)} SAEs; `xling ingest --model {model}` uses them")


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Only models whose name contains this.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The SAEs registered in the warehouse, with explained variance and L0 where measured."""
    from xling.ingest.saes import list_saes

    with open_warehouse(db) as wh:
        render(list_saes(wh, model), fmt, title="SAEs", name="saes")
