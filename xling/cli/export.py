"""`xling export`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the top-level commands of this module to the main app."""
