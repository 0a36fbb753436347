"""Option groups that several commands share, declared once.

`--mode/--stat/--k` (how A(L, l) is scored), `--style/--width/--height/--force` (a figure's
look) and the model-loading flags of `bench` recur across `query`, `plot` and `bench`. Each
group is a decorator: it puts the group's options into the command's signature where the
command names the group's parameter, and calls the command with one value built from them:

    @app.command()
    @scoring_options
    def gap(run: RunOpt = None, scoring: Scoring = None, db: DbOpt = None) -> None:
        queries.gap(wh, run, **scoring)

Typer reads the options from the signature, so `--help` lists them in that place.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xling.cli.common import ForceOpt

if TYPE_CHECKING:
    from xling.analysis.plots import Look

# What a group hands its command: the keyword arguments the library functions take.
Scoring = dict[str, Any]  # mode, stat, k
Loading = dict[str, Any]  # dtype, device, revision, trust_remote_code, allow_pickle


class Mode(enum.StrEnum):
    origin = "origin"
    english_topk = "english-topk"
    group_topk = "group-topk"


class Stat(enum.StrEnum):
    max = "max"
    mean = "mean"


class Style(enum.StrEnum):
    screen = "screen"
    paper = "paper"


LayerOpt = Annotated[
    int | None,
    typer.Option("--layer", "-l", min=0, help="Only this layer (default: every layer of the run)."),
]
ModeOpt = Annotated[
    Mode | None,
    typer.Option(
        "--mode",
        help="Feature selection for A(L, l): origin (the phrases' origin features), "
        "english-topk (each group's top-k on its --ref phrase, which favours --ref) or "
        "group-topk (top-k of the mean over the group's languages; no language favoured). "
        "Default: origin when the run's phrases carry origins, else english-topk.",
    ),
]
StatOpt = Annotated[
    Stat, typer.Option("--stat", help="Pooled activation: max (act_max) or mean (act_mean).")
]
KOpt = Annotated[int, typer.Option("--k", min=1, help="topk modes: features per group.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .pdf or .svg.")]
StyleOpt = Annotated[
    Style,
    typer.Option(
        "--style",
        help="paper: one column (3.3 in; two-panel figures 6.9 in) with print-size fonts.",
    ),
]
WidthOpt = Annotated[float | None, typer.Option("--width", help="Figure width in inches.")]
HeightOpt = Annotated[float | None, typer.Option("--height", help="Figure height in inches.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run the model repository's own Python code.")
]
PickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle", help="Allow .bin (pickle) checkpoints; only safetensors otherwise."
    ),
]


def option_group(
    name: str, build: Callable[..., Any], options: dict[str, tuple[Any, Any]]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator for a Typer command with a parameter `name`: the parameter is replaced by
    `options` (option name -> (Annotated type, default)), and the command is called with
    `name` = build(**their values)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name not in inspect.signature(fn).parameters:
            raise TypeError(f"{fn.__name__} has no parameter {name!r} for its options")
        # The command's annotations are strings (`from __future__ import annotations`): Typer
        # needs them evaluated in the command's module, all but the group's own, which may
        # name a type-checking-only import. A command another group decorated already has
        # them evaluated.
        own = {
            p.name: p.annotation
            for p in inspect.signature(fn).parameters.values()
            if p.name != name and p.annotation is not inspect.Parameter.empty
        }
        hints = typing.get_type_hints(
            types.SimpleNamespace(__annotations__=own),
            globalns=inspect.unwrap(fn).__globals__,
            include_extras=True,
        )
        params: list[inspect.Parameter] = []
        for p in inspect.signature(fn).parameters.values():
            if p.name == name:
                params += [
                    inspect.Parameter(o, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d)
                    for o, (t, d) in options.items()
                ]
                continue
            hint = hints.get(p.name, p.annotation)
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {o: kwargs.pop(o) for o in options}
            return fn(**kwargs, **{name: build(**values)})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {}  # the signature carries them, evaluated
        return command

    return decorate


def _scoring(mode: Mode | None, stat: Stat, k: int) -> Scoring:
    return {"mode": mode.value if mode else None, "stat": stat.value, "k": k}


def _look(style: Style, width: float | None, height: float | None, force: bool) -> Look:
    from xling.analysis.plots import Look

    return Look(style.value, width, height, force)


def _loading(
    dtype: str, device: str, revision: str | None, trust_remote_code: bool, allow_pickle: bool
) -> Loading:
    return {
        "dtype": dtype,
        "device": device,
        "revision": revision,
        "trust_remote_code": trust_remote_code,
        "allow_pickle": allow_pickle,
    }


scoring_options = option_group(
    "scoring",
    _scoring,
    {"mode": (ModeOpt, None), "stat": (StatOpt, Stat.max), "k": (KOpt, 16)},
)
"""--mode, --stat and --k as `scoring`: {"mode", "stat", "k"} for the query functions."""

figure_options = option_group(
    "look",
    _look,
    {
        "style": (StyleOpt, Style.screen),
        "width": (WidthOpt, None),
        "height": (HeightOpt, None),
        "force": (ForceOpt, False),
    },
)
"""--style, --width, --height and --force as `look` (analysis.plots.Look)."""

loading_options = option_group(
    "loading",
    _loading,
    {
        "dtype": (DtypeOpt, "float32"),
        "device": (DeviceOpt, "auto"),
        "revision": (RevisionOpt, None),
        "trust_remote_code": (TrustOpt, False),
        "allow_pickle": (PickleOpt, False),
    },
)
"""--dtype, --device, --revision, --trust-remote-code and --allow-pickle as `loading`: the
loading fields of a bench config."""
