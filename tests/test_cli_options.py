"""The shared option groups of xling.cli.options: the options stand where the command names
the group, and the command receives one value built from them."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from xling.cli.options import Scoring, scoring_options


def _app() -> tuple[typer.Typer, list]:
    app = typer.Typer()
    seen: list = []

    @app.command()
    @scoring_options
    def show(
        first: int = typer.Option(1, "--first"),
        scoring: Scoring | None = None,
        last: int = typer.Option(2, "--last"),
    ) -> None:
        seen.append((first, scoring, last))

    return app, seen


def test_the_command_receives_the_group_as_one_value():
    app, seen = _app()
    result = CliRunner().invoke(app, ["--mode", "group-topk", "--k", "4", "--last", "7"])
    assert result.exit_code == 0, result.output
    assert seen == [(1, {"mode": "group-topk", "stat": "max", "k": 4}, 7)]
    CliRunner().invoke(app, [])
    assert seen[-1] == (1, {"mode": None, "stat": "max", "k": 16}, 2)


def test_the_options_stand_where_the_group_is_named():
    app, _ = _app()
    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    order = [text.index(o) for o in ("--first", "--mode", "--stat", "--k", "--last")]
    assert order == sorted(order)


def test_a_group_needs_its_parameter():
    with pytest.raises(TypeError, match="no parameter 'scoring'"):

        @scoring_options
        def bare(first: int = 1) -> None: ...
