"""`xling corpus`: load, translate and inspect the parallel corpus."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, console, open_warehouse, parse_list, render

if TYPE_CHECKING:
    from xling.ingest.corpus import LoadResult

app = typer.Typer(
    help="Load and inspect the parallel corpus (CSV/TSV/JSONL/Parquet, Neuronpedia, CLDR, "
    "translation).",
    no_args_is_help=True,
)


class Layout(enum.StrEnum):
    auto = "auto"
    wide = "wide"
    long = "long"


languages_app = typer.Typer(help="List and add corpus languages.", no_args_is_help=True)
app.add_typer(languages_app, name="languages")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C during a load: the warehouse's transaction has rolled back by the time the
    interrupt gets here (DuckDB raises its own InterruptException when the signal lands
    inside a query), so say so in one line instead of a traceback."""
    import duckdb

    from xling.warehouse.errors import XlingError

    try:
        yield
    except (KeyboardInterrupt, duckdb.InterruptException):
        raise XlingError("interrupted; nothing was loaded") from None


def _report(result: LoadResult, what: str = "") -> None:
    langs = ", ".join(f"{lang} {n:,}" for lang, n in result.by_lang.items())
    line = (
        f"loaded {result.phrases:,} {what}{' ' if what else ''}phrases in "
        f"{result.groups:,} groups ({result.new_groups:,} new)"
    )
    if langs:
        line += f": {langs}"
    if result.skipped:
        line += f"; {result.skipped:,} already present, skipped"
    typer.echo(line)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)


@app.command("load")
def load(
    files: Annotated[list[Path], typer.Argument(help="CSV, TSV, JSONL or Parquet files (.gz ok).")],
    db: DbOpt = None,
    layout: Annotated[
        Layout, typer.Option("--layout", help="wide: a column per language; long: a lang column.")
    ] = Layout.auto,
    group_col: Annotated[
        str, typer.Option("--group-col", help="Column aligning translations.")
    ] = "group_id",
    lang_col: Annotated[str, typer.Option("--lang-col", help="Long files: language column.")] = (
        "lang"
    ),
    text_col: Annotated[str, typer.Option("--text-col", help="Long files: text column.")] = (
        "text"
    ),
    text_pattern: Annotated[
        str,
        typer.Option(
            "--text-pattern", help="Wide files: text column names, e.g. 'phraseWindow_{lang}'."
        ),
    ] = "{lang}",
    source: Annotated[
        str | None, typer.Option("--source", help="phrases.source (default: the file name).")
    ] = None,
    skip_empty: Annotated[
        bool,
        typer.Option("--skip-empty", help="Wide files: empty cells are missing translations."),
    ] = False,
    langs: Annotated[
        str | None,
        typer.Option(
            "--langs",
            help="Wide files: comma list of the language columns to read (default: every "
            "column named like a language code).",
        ),
    ] = None,
) -> None:
    """Load phrases from files, all in one transaction (nothing is written if any row is bad).

    Long files have a row per phrase (group_id, lang, text; optional phrase_id, source,
    origin_layer, origin_feature). Wide files have a row per group and a text column per
    language. Adding languages to groups already in the warehouse works; a (group, language)
    pair that exists is an error.
    """
    from xling.ingest.corpus import CorpusFormat, load_files

    fmt = CorpusFormat(
        layout=layout.value,
        group_col=group_col,
        lang_col=lang_col,
        text_col=text_col,
        text_pattern=text_pattern,
        source=source,
        skip_empty=skip_empty,
        langs=parse_list(langs),
    )
    with _interruptible(), open_warehouse(db, read_only=False) as wh:
        _report(load_files(wh, files, fmt))


@app.command("neuronpedia")
def neuronpedia(
    files: Annotated[
        list[str], typer.Argument(help="Activation exports: .jsonl or .jsonl.gz files or globs.")
    ],
    db: DbOpt = None,
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Keep records with maxValue >= this x the feature's top."),
    ] = 0.8,
    window: Annotated[
        int, typer.Option("--window", help="Tokens kept each side of the max token.")
    ] = 10,
) -> None:
    """Load English phrases from Neuronpedia activation exports (the paper's recipe).

    Each kept record becomes its own group with one English phrase whose origin_layer and
    origin_feature name the SAE feature; `corpus translate` adds the other languages.
    """
    from xling.ingest.neuronpedia import NeuronpediaConfig, load_neuronpedia

    cfg = NeuronpediaConfig(threshold=threshold, window=window)
    with _interruptible(), open_warehouse(db, read_only=False) as wh:
        _report(load_neuronpedia(wh, files, cfg), "Neuronpedia")


@app.command("cldr")
def cldr(
    db: DbOpt = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            help="Comma list of languages, territories, scripts, currencies, months, weekdays "
            "(default: all).",
        ),
    ] = None,
    langs: Annotated[
        str | None,
        typer.Option("--langs", help="Comma list of languages (default: all in the warehouse)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many groups per kind.")
    ] = None,
) -> None:
    """Load real aligned names from CLDR (Babel's locale data): an offline corpus.

    Names that a non-Latin-script locale only has in Latin script are dropped. Rerunning
    adds only what is missing.
    """
    from xling.ingest.cldr import load_cldr

    with _interruptible(), open_warehouse(db, read_only=False) as wh:
        _report(load_cldr(wh, parse_list(kinds), parse_list(langs), limit), "CLDR")


@app.command("translate")
def translate(
    db: DbOpt = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Comma list of target languages (default: all but English)."),
    ] = None,
    model_template: Annotated[
        str,
        typer.Option("--model-template", help="Model per target, {lang} for its code."),
    ] = "Helsinki-NLP/opus-mt-en-{lang}",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Phrases per batch.")] = 32,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many phrases per language.")
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Cap on generated tokens per phrase.")
    ] = 256,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device (default: cuda if available).")
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Load pickle (.bin) weights of models without safetensors. Only for models "
            "you trust: unpickling can run code.",
        ),
    ] = False,
) -> None:
    """Translate English phrases into the languages their groups lack (MarianMT).

    One model per target language; translations are stored with `source` naming the model,
    all in one transaction at the end.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from xling.ingest.translate import TranslateConfig, translate_missing

    cfg = TranslateConfig(
        targets=parse_list(to) or [],
        model_template=model_template,
        batch_size=batch_size,
        limit=limit,
        max_new_tokens=max_new_tokens,
        device=device,
        allow_pickle=allow_pickle,
    )

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:,.1f} phrases/s")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        console=console(stderr=True),
    )
    tasks: dict[str, int] = {}

    def progress(lang: str, done: int, total: int) -> None:
        # Started by the first translation, so a refused job prints its error line alone.
        if not bar.live.is_started:
            bar.start()
        if lang not in tasks:
            tasks[lang] = bar.add_task(f"en → {lang}", total=total)
        bar.update(tasks[lang], completed=done)

    try:
        with _interruptible(), open_warehouse(db, read_only=False) as wh:
            result = translate_missing(wh, cfg, progress)
    finally:
        if bar.live.is_started:
            bar.stop()
    _report(result, "translated")


@app.command("stats")
def stats(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Phrases per language, and how many groups are complete or hold English."""
    from xling.ingest.corpus import corpus_stats

    with open_warehouse(db) as wh:
        s = corpus_stats(wh)
    summary = (
        f"{s.phrases:,} phrases in {s.groups:,} groups; {s.complete:,} complete (all "
        f"{s.corpus_langs} corpus languages), {s.with_english:,} with English"
    )
    if fmt is Format.table:
        render(s.by_lang, fmt, title=summary, name="corpus_stats", digits=1)
    else:
        render(s.by_lang, fmt, name="corpus_stats")
        typer.echo(summary, err=True)


@languages_app.command("list")
def languages_list(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """The languages phrases may use, with their resource group."""
    with open_warehouse(db) as wh:
        render(wh.languages(), fmt, title="languages", name="languages")


@languages_app.command("add")
def languages_add(
    code: Annotated[str, typer.Argument(help="Language code, e.g. de.")],
    name: Annotated[str, typer.Argument(help="Name, e.g. German.")],
    group: Annotated[str, typer.Option("--group", help="Resource group: high or low.")],
    db: DbOpt = None,
) -> None:
    """Add a language so phrases in it can be loaded."""
    from xling.ingest.corpus import add_language

    with open_warehouse(db, read_only=False) as wh:
        add_language(wh, code, name, group)
    typer.echo(f"added language {code} ({name}, {group})")
