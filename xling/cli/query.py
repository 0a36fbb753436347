"""`xling query`: the paper's metrics as tables (definitions: docs/analysis.md)."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, RunOpt, open_warehouse, render

app = typer.Typer(help="The paper's metrics from the SQL views.", no_args_is_help=True)


class Mode(enum.StrEnum):
    origin = "origin"
    english_topk = "english-topk"


class Stat(enum.StrEnum):
    max = "max"
    mean = "mean"


class Kind(enum.StrEnum):
    features = "features"
    neurons = "neurons"


LayerOpt = Annotated[
    int | None,
    typer.Option("--layer", "-l", min=0, help="Only this layer (default: every layer of the run)."),
]
ModeOpt = Annotated[
    Mode | None,
    typer.Option(
        "--mode",
        help="Feature selection for A(L, l): origin (the phrases' origin features) or "
        "english-topk (default: origin when the run's phrases carry origins).",
    ),
]
StatOpt = Annotated[
    Stat, typer.Option("--stat", help="Pooled activation: max (act_max) or mean (act_mean).")
]
KOpt = Annotated[int, typer.Option("--k", min=1, help="english-topk: features per English phrase.")]


def _title(
    wh,
    what: str,
    run: int | None,
    mode: str | None = None,
    stat: str | None = None,
    layer: int | None = None,
) -> str:
    """'gap — run 3 (google/gemma-2-2b), origin, max, layer 0'."""
    run_id = wh.resolve_run(run)
    rec = wh.run(run_id)
    model = rec["model"] + (f" + {rec['adapter']}" if rec.get("adapter") else "")
    parts = [f"run {run_id} ({model})"]
    parts += [p for p in (mode, stat) if p]
    if layer is not None:
        parts.append(f"layer {layer}")
    return f"{what} — " + ", ".join(parts)


def _mode(mode: Mode | None) -> str | None:
    return mode.value if mode else None


@app.command()
def gap(
    layer: LayerOpt = None,
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Activation gap between high- and low-resource languages per layer.

    gap_pct = 100·(H − W)/H, H and W the mean A(L, l) of each group's languages.
    """
    with open_warehouse(db) as wh:
        df = wh.gap(run, layer, _mode(mode), stat.value, k)
        title = _title(
            wh, "activation gap", run, df["mode"].iloc[0] if len(df) else None, stat.value, layer
        )
    render(df, fmt, title=title, name="gap_by_layer")


@app.command()
def languages(
    layer: LayerOpt = None,
    run: RunOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Each language's activation gap against English (the paper's Appendix D).

    Mean and sample standard deviation of gap_vs_en_pct across the run's layers, or at --layer.
    """
    with open_warehouse(db) as wh:
        df = wh.language_summary(run, layer, _mode(mode), stat.value, k)
        title = _title(
            wh,
            "gap against English",
            run,
            df["mode"].iloc[0] if len(df) else None,
            stat.value,
            layer,
        )
    render(df, fmt, title=title, name="gap_by_lang_summary")


@app.command()
def similarity(
    layer: LayerOpt = None,
    matrix: Annotated[
        bool, typer.Option("--matrix", help="All language pairs instead of each against English.")
    ] = False,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Residual similarity of translations per layer (a run made with --residuals).

    Mean cosine of mean-pooled residuals against English, or of every language pair.
    """
    with open_warehouse(db) as wh:
        df = wh.similarity_matrix(run, layer, wide=True) if matrix else wh.similarity(run, layer)
        title = _title(
            wh, "residual similarity" + (" matrix" if matrix else " to English"), run, layer=layer
        )
    render(df, fmt, title=title, name="similarity_matrix" if matrix else "similarity_by_layer")


@app.command()
def lape(
    lang: Annotated[str | None, typer.Option("--lang", help="Only this language's units.")] = None,
    kind: Annotated[
        Kind, typer.Option("--kind", help="SAE features (n_active) or MLP neurons (--neurons run).")
    ] = Kind.features,
    top_rate: Annotated[
        float, typer.Option("--top-rate", help="Share of lowest-entropy units selected.")
    ] = 0.01,
    layer: LayerOpt = None,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Language-specific SAE features or MLP neurons by LAPE (Tang et al. 2024).

    Units whose activation probability is above the 95th percentile and has the lowest
    entropy across languages; each belongs to the languages where it is above that bar.
    """
    with open_warehouse(db) as wh:
        df = wh.lape(kind.value, lang, top_rate, run=run, layer=layer)
        title = _title(wh, f"LAPE {kind.value}, top rate {top_rate:g}", run, layer=layer)
    render(df, fmt, title=title, name=f"lape_{kind.value}")


@app.command()
def compare(
    base: Annotated[int, typer.Option("--base", help="Run of the base model.")],
    tuned: Annotated[int, typer.Option("--tuned", help="Run of the tuned (or steered) model.")],
    layer: LayerOpt = None,
    mode: ModeOpt = None,
    stat: StatOpt = Stat.max,
    k: KOpt = 16,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A tuned run against its base run over the same phrases.

    Activation improvement per language, English retention and the cosine of English SAE
    vectors before and after.
    """
    with open_warehouse(db) as wh:
        df = wh.compare(base, tuned, layer, _mode(mode), stat.value, k)
        from xling.analysis.plots import effect_kind

        what = f"{effect_kind(wh, tuned)} effect"
        title = f"{_title(wh, what, tuned, stat=stat.value, layer=layer)} vs base run {base}"
    render(df, fmt, title=title, name="compare_runs")


@app.command()
def features(
    lang: Annotated[str, typer.Option("--lang", help="Language code, e.g. hi.")],
    layer: Annotated[int, typer.Option("--layer", "-l", min=0, help="Layer.")],
    under: Annotated[
        bool,
        typer.Option(
            "--under",
            help="Most under-activated against English instead of most language-specific.",
        ),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to show.")] = 20,
    stat: StatOpt = Stat.max,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The SAE features most specific to a language, or most under-activated against English.

    Specific: the language's share of the feature's firing probability. --under: the largest
    en_mean − lang_mean.
    """
    with open_warehouse(db) as wh:
        df = wh.features(lang, layer, run, under=under, limit=limit, stat=stat.value)
        what = "under-activated" if under else "language-specific"
        title = _title(wh, f"{what} features of {lang}", run, stat=stat.value, layer=layer)
    render(df, fmt, title=title, name=f"features_{lang}")
