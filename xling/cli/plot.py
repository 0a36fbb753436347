"""`xling plot`: the paper's figures (PNG, PDF or SVG, from --out's extension)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, ForceOpt, RunOpt, open_warehouse
from xling.cli.query import KOpt, LayerOpt, ModeOpt, Stat, StatOpt

app = typer.Typer(help="The paper's figures (PNG, PDF or SVG).", no_args_is_help=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .pdf or .svg.")]


class Style(enum.StrEnum):
    screen = "screen"
    paper = "paper"


StyleOpt = Annotated[
    Style,
    typer.Option(
        "--style",
        help="paper: one column (3.3 in; two-panel figures 6.9 in) with print-size fonts.",
    ),
]
WidthOpt = Annotated[float | None, typer.Option("--width", help="Figure width in inches.")]
HeightOpt = Annotated[float | None, typer.Option("--height", help="Figure height in inches.")]


def look(style: Style, width: float | None, height: float | None, force: bool):
    """The figure options as analysis.plots.Look."""
    from xling.analysis.plots import Look

    return Look(style.value, width, height, force)


def _mode(mode) -> str | None:
    return mode.value if mode else None


@app.command()
def gap(
    out: OutOpt,
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    style: StyleOpt = Style.screen,
    width: WidthOpt = None,
    height: HeightOpt = None,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Activation and gap by layer: resource groups, and each language against English."""
    from xling.analysis.plots import plot_gap

    with open_warehouse(db) as wh:
        path = plot_gap(
            wh, out, run, _mode(mode), stat.value, k, look=look(style, width, height, force)
        )
    typer.echo(f"wrote {path}")


@app.command()
def similarity(
    out: OutOpt,
    run: RunOpt = None,
    style: StyleOpt = Style.screen,
    width: WidthOpt = None,
    height: HeightOpt = None,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Residual similarity of each language to English by layer (a --residuals run)."""
    from xling.analysis.plots import plot_similarity

    with open_warehouse(db) as wh:
        path = plot_similarity(wh, out, run, look=look(style, width, height, force))
    typer.echo(f"wrote {path}")


@app.command()
def languages(
    out: OutOpt,
    layer: LayerOpt = None,
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    style: StyleOpt = Style.screen,
    width: WidthOpt = None,
    height: HeightOpt = None,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Each language's gap against English: mean ± std across layers, or at --layer."""
    from xling.analysis.plots import plot_languages

    with open_warehouse(db) as wh:
        path = plot_languages(
            wh, out, run, layer, _mode(mode), stat.value, k, look=look(style, width, height, force)
        )
    typer.echo(f"wrote {path}")


@app.command()
def compare(
    base: Annotated[int, typer.Option("--base", help="Run of the base model.")],
    tuned: Annotated[int, typer.Option("--tuned", help="Run of the tuned (or steered) model.")],
    out: OutOpt,
    layer: Annotated[
        int | None,
        typer.Option("--layer", "-l", min=0, help="Layer (default: the last one both runs hold)."),
    ] = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    style: StyleOpt = Style.screen,
    width: WidthOpt = None,
    height: HeightOpt = None,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Activation improvement per language after a fine-tune or steering, English retention."""
    from xling.analysis.plots import plot_compare

    with open_warehouse(db) as wh:
        path = plot_compare(
            wh,
            base,
            tuned,
            out,
            layer,
            _mode(mode),
            stat.value,
            k,
            look=look(style, width, height, force),
        )
    typer.echo(f"wrote {path}")
