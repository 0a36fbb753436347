"""`xling query correlate` and `xling plot correlate`: the activation gap against benchmarks."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, RunOpt, open_warehouse, render
from xling.cli.options import LayerOpt, OutOpt, Scoring, figure_options, scoring_options

if TYPE_CHECKING:
    from xling.analysis.plots import Look


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


@scoring_options
def correlate(
    task: TaskOpt,
    layer: LayerOpt = None,
    metric: MetricOpt = None,
    against: AgainstOpt = Against.gap,
    run: RunOpt = None,
    scoring: Scoring | None = None,
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
            **scoring,
        )
    render(df, fmt, title=f"{task} vs activation {against.value}", name="correlate")


@scoring_options
@figure_options
def plot_correlate(
    task: TaskOpt,
    layer: Annotated[int, typer.Option("--layer", "-l", min=0, help="Layer of the gap.")],
    out: OutOpt,
    metric: MetricOpt = None,
    against: AgainstOpt = Against.gap,
    run: RunOpt = None,
    scoring: Scoring | None = None,
    look: Look | None = None,
    db: DbOpt = None,
) -> None:
    """Benchmark score against the activation gap at one layer, one point per language.

    Points are labelled and coloured by resource group; r and ρ are in the title.
    """
    from xling.analysis.plots import plot_correlation

    with open_warehouse(db) as wh:
        path = plot_correlation(
            wh,
            task,
            layer,
            out,
            metric=metric,
            against=against.value,
            run=run,
            **scoring,
            look=look,
        )
    typer.echo(f"wrote {path}")


def register(query_app: typer.Typer, plot_app: typer.Typer) -> None:
    """Add `correlate` to the `query` and `plot` sub-apps."""
    query_app.command("correlate")(correlate)
    plot_app.command("correlate")(plot_correlate)
