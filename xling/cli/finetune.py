"""`xling finetune`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Activation-aligned LoRA and language-subnetwork tuning.", no_args_is_help=True)
