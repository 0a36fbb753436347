"""`xling report`: every table and figure of the paper, plus one self-contained report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, ForceOpt, RunOpt, open_warehouse
from xling.cli.options import KOpt, ModeOpt, Stat, StatOpt, Style, StyleOpt


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the report into.")],
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    style: StyleOpt = Style.paper,
    force: ForceOpt = False,
    db: DbOpt = None,
) -> None:
    """Write every item a paper needs: figures (PDF + PNG), tables (LaTeX + CSV), report.html.

    Items the warehouse cannot answer are skipped with the command that would produce them.
    The base run defaults to the newest finished run without adapter or steering; fine-tuned
    and steered runs are compared against it.
    """
    from xling.pipeline.report import build_report

    with open_warehouse(db) as wh:
        result = build_report(
            wh,
            out,
            run=run,
            mode=mode.value if mode else None,
            stat=stat.value,
            k=k,
            style=style.value,
            force=force,
        )
    for item in result.items:
        if item.skipped:
            typer.echo(f"skipped {item.key}: {item.skipped}")
    typer.echo(
        f"wrote {len(result.written)} items and {result.out / 'report.html'} "
        f"in {result.seconds:.1f} s"
    )


def register(app: typer.Typer) -> None:
    """Attach `report` to the main app."""
    app.command("report")(report)
