"""`xling init` and `xling runs list|show|delete`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, open_warehouse, render

app = typer.Typer(help="List, inspect and delete ingest runs.", no_args_is_help=True)


def init(
    db: DbOpt = None,
    adopt: Annotated[
        bool,
        typer.Option("--adopt", help="Add xling's tables to a DuckDB file that holds others."),
    ] = False,
) -> None:
    """Create the warehouse (or bring an existing one up to date)."""
    from xling.warehouse.connection import init_warehouse

    path, n = init_warehouse(db, adopt=adopt)
    typer.echo(f"warehouse {path} ready ({n} migrations applied)")


@app.command("list")
def list_runs(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """One line per run: model, adapter, steering, layers, status, phrases and rows."""
    from xling.analysis.queries import span

    with open_warehouse(db) as wh:
        df = wh.runs()
        configs = {
            int(r): wh.run(int(r))["config"] for r in df["run_id"]
        }  # adapter/steering/layers live in the config until the runs table has columns
        if "steering" not in df.columns:
            df.insert(3, "steering", [configs[int(r)].get("steer") for r in df["run_id"]])
        if "layers" not in df.columns:
            df.insert(
                4,
                "layers",
                [
                    span(
                        configs[int(r)].get("resolved_layers")
                        or configs[int(r)].get("layers")
                        or []
                    )
                    for r in df["run_id"]
                ],
            )
        df["adapter"] = [
            a if isinstance(a, str) and a else configs[int(r)].get("adapter")
            for a, r in zip(df["adapter"], df["run_id"], strict=True)
        ]
        render(df, fmt, title="runs", name="runs")


@app.command("show")
def show(run_id: Annotated[int, typer.Argument(help="Run id.")], db: DbOpt = None) -> None:
    """A run's full record, config included, as JSON."""
    with open_warehouse(db) as wh:
        typer.echo(json.dumps(wh.run(run_id).to_dict(), indent=2, default=str))


@app.command("delete")
def delete(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    db: DbOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a run and every row it wrote."""
    with open_warehouse(db, read_only=False) as wh:
        run = wh.run(run_id)
        if not yes:
            typer.confirm(
                f"delete run {run_id} ({run['model']}, {run['n_rows']} rows)?", abort=True
            )
        wh.delete_run(run_id)
    typer.echo(f"deleted run {run_id}")
