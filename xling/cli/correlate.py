"""`xling query correlate` and `xling plot correlate`: the activation gap against benchmarks."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, ForceOpt, Format, FormatOpt, RunOpt, open_warehouse, render
from xling.cli.plot import HeightOpt, Style, StyleOpt, WidthOpt
from xling.cli.query import KOpt, LayerOpt, ModeOpt, Stat, StatOpt


class Against(enum.StrEnum):
    gap = "gap"
    score = "score"


TaskOpt = Annotated[
    str, typer.Option("--task", help="Benchmark task as stored, e.g. arc, mmlu, xling_mc, parity.")
]
MetricOpt = Annotated[
    str | None,
    typer.Option("--metric", help="Metric (default: acc, or the task's only metric)."),
]
AgainstOpt = Annotated[
    Against,
    typer.Option(
        "--against",
        help="gap: gap_vs_en_pct(L, l), English left out (0 by definition); score: A(L, l).",
    ),
]


def correlate(
    task: TaskOpt,
    layer: LayerOpt = None,
    metric: MetricOpt = None,
    against: AgainstOpt = Against.gap,
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Correlation across languages of the activation gap with a benchmark, per layer.

    Pearson r (with a 95 % Fisher-z interval) and Spearman ρ with n and two-sided p-values,
    between gap_vs_en_pct (or A) and the scores of the run's model.
    A positive r against the gap means languages with weaker activations score higher; for
    accuracy or information parity (`bench parity`) a negative r is the expected sign. Bits
    per byte is not comparable across scripts (UTF-8 bytes per character differ), so its
    correlation with the gap is mostly a script effect.
    """
    from xling.analysis.correlation import correlate as run_correlate

    with open_warehouse(db) as wh:
        df = run_correlate(
            wh,
            task,
            layer=layer,
            metric=metric,
            against=against.value,
            run=run,
            mode=mode.value if mode else None,
            stat=stat.value,
            k=k,
        )
    render(df, fmt, title=f"{task} vs activation {against.value}", name="correlate")


def plot_correlate(
    task: TaskOpt,
    layer: Annotated[int, typer.Option("--layer", "-l", min=0, help="Layer of the gap.")],
    out: Annotated[Path, typer.Option("--out", help="Figure file: .png, .pdf or .svg.")],
    metric: MetricOpt = None,
    against: AgainstOpt = Against.gap,
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
    """Benchmark score against the activation gap at one layer, one point per language.

    Points are labelled and coloured by resource group; r and ρ are in the title.
    """
    from xling.analysis.plots import plot_correlation
    from xling.cli.plot import look

    with open_warehouse(db) as wh:
        path = plot_correlation(
            wh,
            task,
            layer,
            out,
            metric=metric,
            against=against.value,
            run=run,
            mode=mode.value if mode else None,
            stat=stat.value,
            k=k,
            look=look(style, width, height, force),
        )
    typer.echo(f"wrote {path}")


def register(query_app: typer.Typer, plot_app: typer.Typer) -> None:
    """Add `correlate` to the `query` and `plot` sub-apps."""
    query_app.command("correlate")(correlate)
    plot_app.command("correlate")(plot_correlate)
