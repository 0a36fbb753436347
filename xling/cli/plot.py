"""`xling plot`: the paper's figures (PNG, PDF or SVG, from --out's extension)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from xling.cli.common import DbOpt, RunOpt, open_warehouse
from xling.cli.options import LayerOpt, OutOpt, Scoring, figure_options, scoring_options

if TYPE_CHECKING:
    from xling.analysis.plots import Look

app = typer.Typer(help="The paper's figures (PNG, PDF or SVG).", no_args_is_help=True)


@app.command()
@scoring_options
@figure_options
def gap(
    out: OutOpt,
    run: RunOpt = None,
    scoring: Scoring | None = None,
    look: Look | None = None,
    db: DbOpt = None,
) -> None:
    """Activation and gap by layer: resource groups, and each language against English."""
    from xling.analysis.plots import plot_gap

    with open_warehouse(db) as wh:
        path = plot_gap(wh, out, run, **scoring, look=look)
    typer.echo(f"wrote {path}")


@app.command()
@figure_options
def similarity(out: OutOpt, run: RunOpt = None, look: Look | None = None, db: DbOpt = None) -> None:
    """Residual similarity of each language to English by layer (a --residuals run)."""
    from xling.analysis.plots import plot_similarity

    with open_warehouse(db) as wh:
        path = plot_similarity(wh, out, run, look=look)
    typer.echo(f"wrote {path}")


@app.command()
@scoring_options
@figure_options
def languages(
    out: OutOpt,
    layer: LayerOpt = None,
    run: RunOpt = None,
    scoring: Scoring | None = None,
    look: Look | None = None,
    db: DbOpt = None,
) -> None:
    """Each language's gap against English: mean ± std across layers, or at --layer."""
    from xling.analysis.plots import plot_languages

    with open_warehouse(db) as wh:
        path = plot_languages(wh, out, run, layer, **scoring, look=look)
    typer.echo(f"wrote {path}")


@app.command()
@scoring_options
@figure_options
def compare(
    base: Annotated[int, typer.Option("--base", help="Run of the base model.")],
    tuned: Annotated[int, typer.Option("--tuned", help="Run of the tuned (or steered) model.")],
    out: OutOpt,
    layer: Annotated[
        int | None,
        typer.Option("--layer", "-l", min=0, help="Layer (default: the last one both runs hold)."),
    ] = None,
    scoring: Scoring | None = None,
    look: Look | None = None,
    db: DbOpt = None,
) -> None:
    """Activation improvement per language after a fine-tune or steering, English retention."""
    from xling.analysis.plots import plot_compare

    with open_warehouse(db) as wh:
        path = plot_compare(wh, base, tuned, out, layer, **scoring, look=look)
    typer.echo(f"wrote {path}")
