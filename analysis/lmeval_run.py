"""Running lm-evaluation-harness in-process on a model xling built, and storing its scores.

lm-eval gets the model object itself (`HFLM(pretrained=<model>)`), so an adapter merged into
it and steering hooks registered on it are what lm-eval measures. xling's own tasks
(`analysis/tasks/`, e.g. `xling_mc`) are always on the task path and need no network;
lm-eval's built-in tasks (Okapi `arc_hi`, ...) are indexed only when a requested task is not
found locally (building that index takes seconds) and download their datasets from the hub.

    evaluate(model, tokenizer, tasks, ...)   lm-eval results dict (the seam: any built model)
    prepared_model(wh, spec, ...)            context manager: the spec's model, adapter, steering
    bench_run(wh, BenchRunConfig(...))       load, evaluate, store per-language scores
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.analysis.benchmarks import (
    ImportReport,
    known_languages,
    scores_from_lmeval,
    scores_table,
    store_scores,
)
from xling.ingest.models import ModelSpec, spec_from
from xling.ingest.steering import load_recipe
from xling.warehouse import catalog
from xling.warehouse.errors import XlingError, missing_extra

if TYPE_CHECKING:
    import pandas as pd

    from xling.ingest.models import LoadedModel
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


def local_tasks_dir() -> Path:
    """The directory of task definitions shipped with xling (`xling_mc`)."""
    return Path(str(resources.files("xling.analysis") / "tasks"))


@dataclass
class BenchRunConfig:
    """`xling bench run`: lm-eval on one model, optionally with an adapter or steering."""

    model: str
    """What to load: hub id, local directory, .gguf file or built-in name (`gemma3-270m`)."""
    tasks: list[str]
    """lm-eval task, group or tag names, e.g. ["xling_mc"] or ["arc_hi", "arc_challenge"]."""
    adapter: str | None = None
    """A fine-tuning artifact to apply before evaluating (peft LoRA or subnetwork delta)."""
    steer: str | None = None
    """Name of a stored intervention (`xling steer add`) active while evaluating."""
    limit: float | None = None
    """Documents per task: an integer count, or a fraction of each task when below 1."""
    include_path: list[str] = field(default_factory=list)
    """Extra directories of lm-eval task YAML, searched after xling's own tasks."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt; None keeps each task's default (0 for xling_mc)."""
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "auto"
    out: str | None = None
    """Also write lm-eval's results JSON here (importable with `xling bench import`)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit), as for ingest."""
    trust_remote_code: bool = False
    allow_pickle: bool = False
    """Allow .bin (pickle) checkpoints; safetensors only otherwise."""

    def model_spec(self, wh: Warehouse) -> ModelSpec:
        """The model to evaluate: every loading field, the adapter and the steering recipe."""
        return spec_from(self, steering=load_recipe(wh, self.steer) if self.steer else None)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise XlingError("no task given; pass --tasks, e.g. --tasks xling_mc")
        if self.limit is not None and not (math.isfinite(self.limit) and self.limit > 0):
            raise XlingError(f"--limit must be a positive number, got {self.limit}")
        if self.limit is not None and self.limit >= 1 and self.limit != int(self.limit):
            raise XlingError(f"--limit {self.limit}: a count must be whole, a fraction below 1")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise XlingError(f"--num-fewshot must be ≥ 0, got {self.num_fewshot}")
        if self.batch_size < 1:
            raise XlingError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        for path in self.include_path:
            if not Path(path).is_dir():
                raise XlingError(f"--include-path {path} is not a directory of task YAML files")


@functools.cache
def task_manager(tasks: tuple[str, ...], include_path: tuple[str, ...] = ()):
    """An lm-eval TaskManager over xling's tasks and `include_path`, with lm-eval's built-in
    tasks only when a requested name is not found there (cached: indexing those takes
    seconds). Raises XlingError naming an unknown task."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise missing_extra("lm-eval", "bench") from None

    paths = [str(local_tasks_dir()), *include_path]
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(name in local.all_tasks for name in tasks):
        return local
    manager = TaskManager(include_path=paths)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise XlingError(
            f"lm-eval knows no task {unknown[0]!r}; check the name (`lm-eval ls tasks`) or "
            "pass --include-path with the directory of its YAML"
        )
    return manager


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    limit: float | None = None,
    include_path: Sequence[str | Path] = (),
    num_fewshot: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """lm-eval's results dict for an already-built HF causal LM (samples left out).

    Whatever is applied to `model` (merged adapter, forward hooks) is what gets measured.
    """
    manager = task_manager(tuple(tasks), tuple(map(str, include_path)))
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
    )
    results.pop("samples", None)
    return results


@contextlib.contextmanager
def prepared_model(spec: ModelSpec, *, model: LoadedModel | None = None) -> Iterator[LoadedModel]:
    """The model `spec` loads (adapter merged, steering attached), for the block.

    `model` reuses an already loaded model as it is (adapter included, if it has one): only
    the spec's steering is attached to it, and removed again when the block ends.
    """
    if model is None:
        yield spec.load()
        return
    if spec.steering is not None:
        model.steer(spec.steering)
    try:
        yield model
    finally:
        if spec.steering is not None:
            model.unsteer()


@dataclass
class BenchRunResult:
    """What `bench_run` measured and stored."""

    model_id: int
    results: dict[str, Any]
    report: ImportReport
    seconds: float
    """Wall time of the lm-eval evaluation alone (model loading excluded)."""
    table: pd.DataFrame
    """The stored scores: task, lang, metric, value, stderr, n_samples."""


def bench_run(
    wh: Warehouse, cfg: BenchRunConfig, *, model: LoadedModel | None = None
) -> BenchRunResult:
    """Evaluate `cfg.model` with lm-eval and store its per-language scores (one transaction).

    `model` reuses an already loaded model (see `prepared_model`).
    """
    from xling.ingest.models import register_model

    task_manager(tuple(cfg.tasks), tuple(cfg.include_path))  # a typo fails before loading
    with prepared_model(cfg.model_spec(wh), model=model) as lm:
        start = time.perf_counter()
        results = evaluate(
            lm.model,
            lm.tokenizer,
            cfg.tasks,
            limit=cfg.limit,
            include_path=cfg.include_path,
            num_fewshot=cfg.num_fewshot,
            batch_size=cfg.batch_size,
        )
        seconds = time.perf_counter() - start
    # lm-eval records the model object's path; name what xling loaded, so that the file
    # written with --out imports back onto the same model, adapter and steering.
    results["config"]["model_args"] = {"pretrained": lm.name} | (
        {"peft": lm.adapter} if lm.adapter else {}
    )
    results["xling"] = asdict(cfg)
    scores, skipped = scores_from_lmeval(results, known_languages(wh), where="lm-eval")
    report = ImportReport(skipped=skipped, models=[lm.name])
    if cfg.out:
        write_results(results, Path(cfg.out))
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        catalog.record_job(con, "bench-run", asdict(cfg), model_id)
        rows = scores_table(
            model_id, scores, source=f"xling bench run {' '.join(cfg.tasks)}", steer=cfg.steer
        )
        report.replaced = store_scores(con, rows)
    report.rows = rows.num_rows
    log.info("lm-eval on %s: %d scores in %.1f s", lm.name, report.rows, seconds)
    table = rows.select(["task", "lang", "metric", "value", "stderr", "n_samples"]).to_pandas()
    return BenchRunResult(model_id, results, report, seconds, table)


def write_results(results: dict[str, Any], path: Path) -> None:
    """lm-eval's results dict as JSON, serialised the way lm-eval writes its own files."""
    from lm_eval.utils import handle_non_serializable

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False),
        encoding="utf-8",
    )
