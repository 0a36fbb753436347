"""`xling query`: the paper's metrics as tables (definitions: docs/analysis.md)."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, RunOpt, open_warehouse, render
from xling.cli.options import LayerOpt, Scoring, Stat, StatOpt, scoring_options

app = typer.Typer(help="The paper's metrics from the SQL views.", no_args_is_help=True)


class Kind(enum.StrEnum):
    features = "features"
    neurons = "neurons"


RefOpt = Annotated[
    str,
    typer.Option(
        "--ref",
        help="Reference language: picks english-topk's features, is the baseline of the gap "
        "against it and is left out of H in gap_pct.",
    ),
]
CiOpt = Annotated[
    bool,
    typer.Option("--ci", help="Add *_lo/*_hi: 95 % percentile bootstrap over aligned groups."),
]
NBootOpt = Annotated[int, typer.Option("--n-boot", min=10, help="Bootstrap resamples (--ci).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed (--ci).")]


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
    if rec.status != "finished":
        # An ingest still writing it (or one that stopped): the numbers cover what it committed.
        total = f" of {rec.n_selected:,}" if rec.n_selected else ""
        parts.append(f"{rec.status}: {rec.n_phrases:,}{total} phrases committed")
    parts += [p for p in (mode, stat) if p]
    if layer is not None:
        parts.append(f"layer {layer}")
    return f"{what} — " + ", ".join(parts)


@app.command()
@scoring_options
def gap(
    layer: LayerOpt = None,
    run: RunOpt = None,
    scoring: Scoring | None = None,
    ref: RefOpt = "en",
    include_ref: Annotated[
        bool, typer.Option("--include-ref", help="Count the reference language in H (or W).")
    ] = False,
    ci: CiOpt = False,
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Activation gap between high- and low-resource languages per layer.

    gap_pct = 100·(H − W)/H, H and W the mean A(L, l) of each group's languages, the reference
    language left out (--include-ref puts it back); high_langs and low_langs say which entered.
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.gap(
            wh,
            run,
            layer,
            **scoring,
            ref=ref,
            include_ref=include_ref,
            ci=ci,
            n_boot=n_boot,
            seed=seed,
        )
        title = _title(
            wh,
            "activation gap",
            run,
            f"{df['mode'].iloc[0]}, ref {ref}" if len(df) else None,
            scoring["stat"],
            layer,
        )
    render(df, fmt, title=title, name="gap_by_layer")


@app.command()
@scoring_options
def languages(
    layer: LayerOpt = None,
    run: RunOpt = None,
    scoring: Scoring | None = None,
    ref: RefOpt = "en",
    ci: CiOpt = False,
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Each language's activation gap against the reference, English by default (the paper's
    Appendix D).

    Mean and sample standard deviation of gap_vs_en_pct across the run's layers, or at --layer.
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.languages(wh, run, layer, **scoring, ref=ref, ci=ci, n_boot=n_boot, seed=seed)
        title = _title(
            wh,
            f"gap against {ref}",
            run,
            f"{df['mode'].iloc[0]}, ref {ref}" if len(df) else None,
            scoring["stat"],
            layer,
        )
    render(df, fmt, title=title, name="gap_by_lang_summary")


class SimMetric(enum.StrEnum):
    sim = "sim"
    baseline = "baseline"
    centred = "centred"
    retrieval = "retrieval"


@app.command()
def similarity(
    layer: LayerOpt = None,
    matrix: Annotated[
        bool, typer.Option("--matrix", help="All language pairs instead of each against --ref.")
    ] = False,
    metric: Annotated[
        SimMetric, typer.Option("--metric", help="--matrix: the value in each cell.")
    ] = SimMetric.sim,
    ref: Annotated[str, typer.Option("--ref", help="Reference language.")] = "en",
    ci: CiOpt = False,
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Residual similarity of translations per layer, with its controls (a --residuals run).

    sim: mean cosine of each group's --ref and l residuals; baseline: the same over mismatched
    groups (g ≠ g'); centred: after removing each language's mean residual; retrieval: share of
    groups whose own l phrase is the nearest to the --ref phrase. sim near baseline is the
    residual stream's shared direction, not alignment.
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        if matrix:
            df = queries.similarity_matrix(
                wh,
                run,
                layer,
                wide=fmt == Format.table,
                metric=metric.value,
                ci=ci,
                n_boot=n_boot,
                seed=seed,
            )
            what = f"residual similarity matrix ({metric.value})"
        else:
            df = queries.similarity(wh, run, layer, ref=ref, ci=ci, n_boot=n_boot, seed=seed)
            what = f"residual similarity to {ref}"
        title = _title(wh, what, run, layer=layer)
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
    entropy across languages; each belongs to the languages where it is above that bar, all
    listed in `langs` (with --lang too).
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.lape(wh, kind.value, lang, top_rate, run=run, layer=layer)
        title = _title(wh, f"LAPE {kind.value}, top rate {top_rate:g}", run, layer=layer)
    render(df, fmt, title=title, name=f"lape_{kind.value}")


@app.command()
@scoring_options
def compare(
    base: Annotated[int, typer.Option("--base", help="Run of the base model.")],
    tuned: Annotated[int, typer.Option("--tuned", help="Run of the tuned (or steered) model.")],
    layer: LayerOpt = None,
    scoring: Scoring | None = None,
    ci: CiOpt = False,
    n_boot: NBootOpt = 1000,
    seed: SeedOpt = 0,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A tuned run against its base run over the same phrases.

    Activation improvement per language, English retention and the cosine of English SAE
    vectors before and after (on a round's held-apart groups when the tuned run has a split;
    --ci resamples those groups in both runs together).
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.compare(wh, base, tuned, layer, **scoring, ci=ci, n_boot=n_boot, seed=seed)
        from xling.analysis.plots import effect_kind

        what = f"{effect_kind(wh, tuned)} effect"
        title = f"{_title(wh, what, tuned, stat=scoring['stat'], layer=layer)} vs base run {base}"
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
    min_support: Annotated[
        int,
        typer.Option(
            "--min-support",
            min=1,
            help="Only features that fired on at least this many phrases (of --lang; of "
            "English with --under). The default drops features seen once.",
        ),
    ] = 2,
    stat: StatOpt = Stat.max,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The SAE features most specific to a language, or most under-activated against English.

    Specific: the language's share of the feature's firing probability. --under: the largest
    en_mean − lang_mean. `xling query feature` shows a feature's phrases.
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.features(
            wh, lang, layer, run, under=under, limit=limit, stat=stat.value, min_support=min_support
        )
        what = "under-activated" if under else "language-specific"
        title = _title(wh, f"{what} features of {lang}", run, stat=stat.value, layer=layer)
    render(df, fmt, title=title, name=f"features_{lang}")


@app.command()
def feature(
    feature: Annotated[int, typer.Option("--feature", min=0, help="SAE feature index.")],
    layer: Annotated[int, typer.Option("--layer", "-l", min=0, help="Layer.")],
    top: Annotated[int, typer.Option("--top", min=1, help="Phrases per language.")] = 5,
    stat: StatOpt = Stat.max,
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """One SAE feature's top phrases in each language, with their activations.

    n_lang_active counts the language's phrases on which the feature fired at all.
    """
    from xling.analysis import queries

    with open_warehouse(db) as wh:
        df = queries.feature_phrases(wh, layer, feature, run, top=top, stat=stat.value)
        title = _title(wh, f"feature {feature}", run, stat=stat.value, layer=layer)
    render(df, fmt, title=title, name=f"feature_{layer}_{feature}")


@app.command()
def capability(
    ref: Annotated[str, typer.Option("--ref", help="Reference language.")] = "en",
    run: RunOpt = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Per language: token premium (tokens against --ref's over the same groups, BOS excluded)
    and information parity (NLL of --ref / NLL of the language; `xling bench parity` first).

    Both compare the same content across scripts, unlike bits per byte: a premium above 1 and a
    parity below 1 mean the language costs the model more.
    """
    from xling.analysis.capability import capability as capability_table

    with open_warehouse(db) as wh:
        df = capability_table(wh, run, ref=ref)
        title = _title(wh, f"capability against {ref}", run)
    render(df, fmt, title=title, name="capability")
