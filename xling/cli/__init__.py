"""The `xling` command: a thin layer that parses options, calls the library, renders."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperGroup


class _XlingGroup(TyperGroup):
    """Turns user errors (`XlingError`) raised anywhere below into one line and exit 1."""

    def invoke(self, ctx):
        from xling.warehouse.connection import new_warehouses_removed_on_error
        from xling.warehouse.errors import XlingError

        try:
            with new_warehouses_removed_on_error():  # a refused command leaves no empty file
                return super().invoke(ctx)
        except XlingError as err:
            # one line whatever the message embeds (file names, cell values)
            typer.echo("Error: " + " ".join(str(err).splitlines()), err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_XlingGroup,
    help="xling — a cross-lingual activation warehouse (model + SAE activations in DuckDB).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global_options(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Also show xling's progress notes (-vv: debug, and other libraries' info).",
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show errors only.")] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="Seconds a command that reads the warehouse waits for a writer to release it "
            "(default 5, or $XLING_WAIT).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Options for every command; they go before the command: `xling -v ingest ...`."""
    from xling.cli.logs import setup_logging
    from xling.warehouse.connection import set_read_wait

    if verbose and quiet:
        raise typer.BadParameter("use --verbose or --quiet, not both", param_hint="-v/-q")
    setup_logging(verbose, quiet)
    set_read_wait(wait)


def _register() -> None:
    from xling.cli import (
        bench,
        corpus,
        correlate,
        demo,
        export,
        finetune,
        ingest,
        plot,
        query,
        report,
        runs,
        sae,
        scale,
        steer,
    )
    from xling.cli import sql as sql_cmd

    app.command("init")(runs.init)
    app.command("sql")(sql_cmd.sql)
    app.add_typer(corpus.app, name="corpus")
    ingest.register(app)
    app.command("demo")(demo.demo)
    app.add_typer(sae.app, name="sae")
    correlate.register(query.app, plot.app)
    app.add_typer(query.app, name="query")
    export.register(app)
    report.register(app)
    scale.register(app)
    app.add_typer(plot.app, name="plot")
    app.add_typer(bench.app, name="bench")
    app.add_typer(finetune.app, name="finetune")
    app.add_typer(steer.app, name="steer")
    app.add_typer(runs.app, name="runs")


_register()


def main() -> None:
    app()
