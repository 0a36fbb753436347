"""`xling bench import|run|bpb|parity|list|models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, Format, FormatOpt, open_warehouse, parse_list, render
from xling.cli.options import DeviceOpt, DtypeOpt, Loading, loading_options

app = typer.Typer(help="Benchmarks: lm-eval import and runs, bits-per-byte.", no_args_is_help=True)

AdapterOpt = Annotated[
    str | None,
    typer.Option("--adapter", help="Fine-tuning artifact (LoRA or subnetwork) to apply first."),
]
SteerOpt = Annotated[
    str | None,
    typer.Option("--steer", help="Stored intervention (`xling steer add`) active throughout."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")]


def _warn_skipped(skipped: dict[str, str]) -> None:
    if skipped:
        listed = "; ".join(f"{task} ({why})" for task, why in skipped.items())
        typer.echo(f"Warning: skipped {len(skipped)}: {listed}", err=True)


@app.command("import")
def import_(
    files: Annotated[
        list[Path], typer.Argument(help="lm-eval results_*.json files or score CSV files.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Name or id of the model the scores belong to "
            "(default: the model named in each file).",
        ),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Import lm-evaluation-harness results or score CSVs into `benchmarks`.

    A CSV has columns model, task, lang, metric, value (stderr, n optional). All files are
    imported in one transaction. Okapi task names become (task, lang): arc_hi -> arc/hi, m_mmlu_hi -> mmlu/hi,
    arc_challenge and hellaswag -> English. Re-importing replaces, never duplicates.
    Tasks in a language the warehouse does not know are skipped with a warning.
    """
    from xling.analysis.benchmarks import import_files

    with open_warehouse(db, read_only=False) as wh:
        report = import_files(wh, files, model=model)
    _warn_skipped(report.skipped)
    models = ", ".join(report.models) or "no model"
    typer.echo(f"imported {report.rows} scores for {models} ({report.replaced} replaced)")


@app.command("run")
@loading_options
def run(
    model: Annotated[
        str, typer.Option("--model", help="Hub id, local directory, .gguf file or gemma3-270m.")
    ],
    tasks: Annotated[
        str, typer.Option("--tasks", help="Comma-separated lm-eval tasks or groups, e.g. xling_mc.")
    ],
    adapter: AdapterOpt = None,
    steer: SteerOpt = None,
    limit: Annotated[
        float | None,
        typer.Option("--limit", help="Documents per task (a fraction of each task when < 1)."),
    ] = None,
    include_path: Annotated[
        list[Path] | None,
        typer.Option("--include-path", help="Directory of extra lm-eval task YAML (repeatable)."),
    ] = None,
    num_fewshot: Annotated[
        int | None, typer.Option("--num-fewshot", help="Few-shot examples (default: the task's).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write lm-eval's results JSON here.")
    ] = None,
    batch_size: BatchOpt = 16,
    loading: Loading | None = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run lm-evaluation-harness on a model and store its per-language scores.

    xling's own offline task `xling_mc` (12 questions in each of the ten languages) is always
    available; lm-eval's tasks (arc_hi, m_mmlu_es, ...) download their data from the hub.
    """
    import logging

    from xling.analysis.lmeval_run import BenchRunConfig, bench_run

    # lm-eval warns about options xling never uses (custom-dataset metadata, model kwargs
    # ignored for a model object); its errors still show.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    cfg = BenchRunConfig(
        model=model,
        tasks=parse_list(tasks) or [],
        adapter=adapter,
        steer=steer,
        limit=limit,
        include_path=[str(p) for p in include_path or []],
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        out=str(out) if out else None,
        **loading,
    )
    with open_warehouse(db, read_only=False) as wh:
        result = bench_run(wh, cfg)
    _warn_skipped(result.report.skipped)
    render(result.table, fmt, title=f"{model}: lm-eval ({result.seconds:.1f} s)", name="bench")


@app.command("bpb")
@loading_options
def bpb(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model to load (default: the model of --run)."),
    ] = None,
    run_id: Annotated[
        int | None,
        typer.Option(
            "--run",
            help="Score only this run's phrases (default: the whole corpus; "
            "the latest run when --model is not given).",
        ),
    ] = None,
    langs: Annotated[
        str | None, typer.Option("--langs", help="Comma-separated languages (default: all).")
    ] = None,
    groups: Annotated[
        int | None,
        typer.Option(
            "--groups",
            min=1,
            help="Only the first N aligned groups: the same content in every language.",
        ),
    ] = None,
    adapter: AdapterOpt = None,
    steer: SteerOpt = None,
    batch_size: BatchOpt = 16,
    loading: Loading | None = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Bits per byte of a model on the corpus phrases, per language (task `bpb`).

    Σ token NLL (nats) / ln 2 / Σ UTF-8 bytes over a language's phrases; each phrase is
    read after BOS, so its first token counts. Lower is better within one script only: UTF-8
    spends 1 byte on a Latin character and 3 on Devanagari, Malayalam or CJK, so bpb is not
    comparable across scripts; compare languages with `bench parity`.
    """
    from xling.analysis.bpb import BpbConfig, bench_bpb

    cfg = BpbConfig(
        model=model,
        run=run_id,
        langs=parse_list(langs),
        groups=groups,
        adapter=adapter,
        steer=steer,
        batch_size=batch_size,
        **loading,
    )
    with open_warehouse(db, read_only=False) as wh:
        table = bench_bpb(wh, cfg)
    render(table.drop(columns="model_id"), fmt, title="bits per byte", name="bpb")


@app.command("parity")
def parity(
    run_id: Annotated[
        int | None,
        typer.Option("--run", help="Run whose model and phrases are scored (default: latest)."),
    ] = None,
    groups: Annotated[
        int | None,
        typer.Option("--groups", min=1, help="Only the first N aligned groups (by group_id)."),
    ] = None,
    ref: Annotated[str, typer.Option("--ref", help="Reference language.")] = "en",
    batch_size: BatchOpt = 16,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "auto",
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Information parity of a run's model per language (task `parity`; Tsvetkov & Kipnis).

    Mean over aligned groups of NLL(--ref phrase) / NLL(its translation), NLL in nats over
    every real token after BOS, with the run's adapter and steering applied. 1 = parity,
    below 1 = the language costs more. Stored per phrase (phrase_nll) and per language
    (benchmarks), so `query capability` and `query correlate --task parity` read it.
    """
    from xling.analysis.capability import ParityConfig, bench_parity

    cfg = ParityConfig(
        run=run_id, groups=groups, ref=ref, batch_size=batch_size, dtype=dtype, device=device
    )
    with open_warehouse(db, read_only=False) as wh:
        table = bench_parity(wh, cfg)
    render(table.drop(columns="model_id"), fmt, title="information parity", name="parity")


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option("--model", help="Model name or id.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task, e.g. arc or bpb.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric, e.g. acc.")] = None,
    db: DbOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Stored benchmark scores: one row per model, steering, task, metric and language."""
    from xling.analysis.benchmarks import benchmark_scores

    with open_warehouse(db) as wh:
        df = benchmark_scores(wh, model=model, task=task, metric=metric)
    render(df, fmt, title="benchmarks", name="benchmarks")


@app.command("models")
def models(db: DbOpt = None, fmt: FormatOpt = Format.table) -> None:
    """The warehouse's models (ids for --model) with their runs and benchmark rows."""
    from xling.analysis.benchmarks import models_table

    with open_warehouse(db) as wh:
        render(models_table(wh), fmt, title="models", name="models")
