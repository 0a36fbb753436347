"""Every help text of the CLI reads as written.

Typer renders option help and command docstrings as rich markup, so a bracketed phrase such
as "[default: 32]" is taken for a style tag and dropped ("Phrases per forward pass ."). The
check walks every command and compares each text with what rich makes of it.
"""

from __future__ import annotations

import click
import typer
from rich.markup import render

from xling.cli import app


def _commands() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    out: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: str) -> None:
        out.append((path, cmd))
        if hasattr(cmd, "list_commands"):  # a group (the root one loads its sub-apps lazily)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}".strip())

    walk(root, "")
    return out


def _texts() -> list[tuple[str, str]]:
    texts = []
    for path, cmd in _commands():
        texts.append((f"xling {path}", cmd.help or ""))
        for param in cmd.params:
            texts.append((f"xling {path} {param.name}", getattr(param, "help", None) or ""))
    return texts


def test_the_walk_reaches_the_commands():
    paths = {path for path, _ in _commands()}
    assert {"finetune round", "ingest", "sae train", "steer", "plot gap"} <= paths


def test_no_help_text_loses_words_to_rich_markup():
    lost = [f"{where}: {text!r}" for where, text in _texts() if render(text).plain != text]
    assert not lost, "\n".join(lost)


def test_the_check_sees_a_bracketed_default():
    assert render("Phrases per forward pass [default: 32].").plain != (
        "Phrases per forward pass [default: 32]."
    )
