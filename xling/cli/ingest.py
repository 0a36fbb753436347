"""`xling ingest`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer

from xling.cli.common import DbOpt, console, open_warehouse, parse_layers, parse_list


def register(app: typer.Typer) -> None:
    """Attach the top-level commands of this module to the main app."""
    app.command("ingest")(ingest)


@contextlib.contextmanager
def progress_bar(label: str, unit: str = "phrases"):
    """A rich progress bar on stderr (count, rate, ETA); yields the callback that drives it.

    The callback takes any object with `done` and `total`. The bar appears at the first
    call, so an error raised before any work prints alone, and it is cleared at the end.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed or 0:,.1f} {unit}/s")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Speed(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=None)

    def update(p) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=p.done, total=p.total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def ingest(
    model: Annotated[
        str | None,
        typer.Option(
            help="HF hub id, local directory, .gguf file, or gemma3-270m (offline built-in)."
        ),
    ] = None,
    sae_release: Annotated[
        str | None,
        typer.Option(help="sae-lens pretrained release, e.g. gemma-scope-2b-pt-res-canonical."),
    ] = None,
    sae_id: Annotated[
        str | None,
        typer.Option(
            help="sae-lens SAE id template; {layer} is replaced, e.g. 'layer_{layer}/width_16k/canonical'."
        ),
    ] = None,
    sae_dir: Annotated[
        str | None,
        typer.Option(
            help="sae-lens SAE directory, a parent of per-layer ones, or a path template with {layer}. "
            "Without any SAE option, the SAEs registered for the model (`xling sae train`) are used."
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Layers, e.g. 0-5,12; layer L is the output of decoder block L "
            "(default: the SAEs' layers)."
        ),
    ] = None,
    features: Annotated[
        str,
        typer.Option(
            help="Feature rows kept: all | origin (only each phrase group's origin features) | topk:K "
            "(each phrase's K strongest features per layer, by act_max)."
        ),
    ] = "all",
    residuals: Annotated[
        bool,
        typer.Option(
            "--residuals", help="Also store mean-pooled residual vectors (for similarity)."
        ),
    ] = False,
    neurons: Annotated[
        bool,
        typer.Option(
            "--neurons", help="Also store per-language MLP neuron firing counts (for LAPE)."
        ),
    ] = False,
    include_bos: Annotated[
        bool, typer.Option("--include-bos", help="Pool the BOS token too (excluded by default).")
    ] = False,
    langs: Annotated[str | None, typer.Option(help="Only these languages, e.g. en,hi.")] = None,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N phrases (by phrase id).")
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="i/n: only phrases with phrase_id % n == i, for array jobs (0 <= i < n)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Phrases per forward pass (default: 32).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Truncate phrases to this many tokens.")] = 256,
    chunk_rows: Annotated[
        int, typer.Option(help="Rows per committed chunk (the resume granularity).")
    ] = 2_000_000,
    dtype: Annotated[
        str, typer.Option(help="Model dtype: float32, bfloat16 or float16.")
    ] = "float32",
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:N, mps or auto (default: cpu).")
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Hub revision (branch, tag or commit).")
    ] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option("--trust-remote-code", help="Run the model repository's own Python code."),
    ] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle", help="Allow .bin (pickle) checkpoints; only safetensors otherwise."
        ),
    ] = False,
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune to apply first: a LoRA directory (`xling finetune align`) or a "
            "subnetwork delta (`xling finetune subnetwork`); recorded as the model's adapter."
        ),
    ] = None,
    steer: Annotated[
        str | None,
        typer.Option(help="Stored intervention (`xling steer add`) active while ingesting."),
    ] = None,
    encoding: Annotated[
        str,
        typer.Option(
            help="Feature values: lossless (float32 as computed), lean (lossless, act_mean "
            "left out where it is act_max / n_tokens exactly; about 30 % smaller) or compact "
            "(log-quantised, act_max within 0.14 %, act_mean within 1.13 %; phrases up to "
            "300 tokens)."
        ),
    ] = "lossless",
    resume: Annotated[
        int | None,
        typer.Option(
            help="Finish run RUN (killed or failed) with its recorded settings; only --device and "
            "--batch-size may change."
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (Ray Data actors, see docs/scale.md).")
    ] = "local",
    parts: Annotated[
        Path | None,
        typer.Option(help="Ray engine: directory for Parquet parts (default: <db>.parts)."),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray engine: cluster address ('auto' on a cluster node).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Ray engine: actors, each holding one copy of the model.")
    ] = 1,
    num_gpus: Annotated[float, typer.Option(help="Ray engine: GPUs per actor.")] = 0.0,
    db: DbOpt = None,
) -> None:
    """Run a model and its SAEs over the corpus; store pooled activations in the warehouse."""
    from xling.ingest.runner import (
        IngestConfig,
        parse_features,
        parse_shard,
        resume_ingest,
        run_ingest,
    )
    from xling.warehouse.connection import read_wait
    from xling.warehouse.errors import XlingError

    # An ingest waits like a reader for a query to let go of the file: it holds the file
    # only to read and commit (Warehouse.between_commits), so queries run beside it.
    with open_warehouse(db, read_only=False, wait=read_wait()) as wh:
        start = time.monotonic()
        with progress_bar("ingest") as update:
            if resume is not None:
                run_id = resume_ingest(wh, resume, update, device=device, batch_size=batch_size)
            else:
                if model is None:
                    raise XlingError("pass --model (or --resume RUN)")
                feature_mode, topk = parse_features(features)
                config = IngestConfig(
                    model=model,
                    revision=revision,
                    dtype=dtype,
                    device=device or "cpu",
                    trust_remote_code=trust_remote_code,
                    allow_pickle=allow_pickle,
                    layers=parse_layers(layers),
                    sae_release=sae_release,
                    sae_id=sae_id,
                    sae_dir=sae_dir,
                    features=feature_mode,
                    topk=topk,
                    include_bos=include_bos,
                    residuals=residuals,
                    neurons=neurons,
                    langs=parse_list(langs),
                    limit=limit,
                    shard=parse_shard(shard) if shard is not None else None,
                    batch_size=32 if batch_size is None else batch_size,
                    max_tokens=max_tokens,
                    chunk_rows=chunk_rows,
                    adapter=adapter,
                    steer=steer,
                    encoding=encoding,
                )
                if engine == "ray":
                    from xling.ingest.ray_engine import RayOptions, run_ingest_ray

                    options = RayOptions(
                        parts=str(parts or wh.path.with_suffix(".parts")),
                        address=ray_address,
                        concurrency=concurrency,
                        num_gpus=num_gpus,
                    )
                    run_id, _ = run_ingest_ray(wh, config, options, update)
                elif engine == "local":
                    run_id = run_ingest(wh, config, update)
                else:
                    raise XlingError(f"unknown --engine {engine!r}; use local or ray")
        run = wh.run(run_id)
    seconds = time.monotonic() - start
    console().print(
        f"run {run_id} {run.status}: {run.n_phrases:,} phrases, {run.n_rows:,} feature "
        f"rows in {seconds:.1f} s ({run.n_phrases / max(seconds, 1e-9):,.1f} phrases/s)"
    )
