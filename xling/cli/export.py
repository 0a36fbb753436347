"""`xling export`: a table or view to a file for papers and other tools."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, ForceOpt, RunOpt, open_warehouse
from xling.cli.options import ModeOpt, Stat


class ExportFormat(enum.StrEnum):
    parquet = "parquet"
    csv = "csv"
    json = "json"
    markdown = "markdown"
    latex = "latex"


def export(
    name: Annotated[
        str, typer.Argument(help="Table or view, e.g. gap_by_layer, gap_by_lang_summary, phrases.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            case_sensitive=False,
            help="File format (default: from --out's extension).",
        ),
    ] = None,
    run: RunOpt = None,
    all_runs: Annotated[
        bool, typer.Option("--all-runs", help="Every run's rows (views with a run_id column).")
    ] = False,
    caption: Annotated[
        str | None,
        typer.Option("--caption", help="LaTeX caption (default: name, run, model, options)."),
    ] = None,
    mode: ModeOpt = None,
    stat: Annotated[
        Stat | None,
        typer.Option("--stat", help="Metric views: pooled activation, max (default) or mean."),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option("--k", min=1, help="Metric views, english-topk: features per phrase (16)."),
    ] = None,
    ci: Annotated[
        bool,
        typer.Option(
            "--ci",
            help="Metrics (gap_by_layer, gap_by_lang, gap_by_lang_summary, activation_scores, "
            "similarity_by_layer): add *_lo/*_hi, a 95 % bootstrap interval over groups.",
        ),
    ] = False,
    n_boot: Annotated[int, typer.Option("--n-boot", min=10, help="Resamples (--ci).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed (--ci).")] = 0,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Write a table or view as Parquet, CSV, JSON, Markdown or a LaTeX booktabs table.

    Views and tables with a run_id column give one run's rows: --run, or the latest finished.
    The metric views (gap_by_layer, gap_by_lang, gap_by_lang_summary, activation_scores,
    similarity_by_layer) take the options of `xling query` and give the same table. Rows are
    ordered by run, layer, then language in catalogue order. An existing --out is kept
    unless --force.
    """
    from xling.analysis.export import export as export_view

    with open_warehouse(db) as wh:
        n = export_view(
            wh,
            name,
            out,
            fmt.value if fmt else None,
            run=run,
            all_runs=all_runs,
            caption=caption,
            force=force,
            mode=mode.value if mode else None,
            stat=stat.value if stat else None,
            k=k,
            ci=ci or None,
            n_boot=n_boot if ci else None,
            seed=seed if ci else None,
        )
    typer.echo(f"wrote {n} rows of {name} to {out}")


def register(app: typer.Typer) -> None:
    """Attach the top-level commands of this module to the main app."""
    app.command("export")(export)
