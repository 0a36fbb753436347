"""`xling ingest --engine ray`: the same ingest as Ray Data actors writing Parquet parts.

    run_ingest_ray(wh, config, RayOptions(parts="shared/parts", concurrency=8, num_gpus=1))

The driver (the process holding the warehouse) starts the run with the local engine's own
`runner.start_run` (model on the CPU there) and cuts the phrases into the same batches
(`runner.run_batches`). Ray Data carries the batches to `IngestActor`s: each opens the run's
`ProcessorSpec` once — the model through its spec, so with the run's adapter merged and its
steering attached, and the run's recorded SAEs — turns a batch into rows with the shared
`BatchProcessor` and writes them through a `ParquetSink` as one part named by the run and the
batch's phrase ids, so a rerun overwrites its parts. The driver then imports the parts
(`import_parts`: idempotent, one transaction), which orders the run's rows by layer and marks
it finished.

If the driver dies, the parts written so far are kept: `xling import-parts DIR --run R` loads
them and `xling ingest --resume R` (local engine) does the phrases still missing.
Not with --neurons (their per-language sums are folded in the runner's chunk buffer).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xling.ingest.runner import (
    IngestConfig,
    IngestProgress,
    ProgressFn,
    fail_message,
    run_batches,
    start_run,
)
from xling.ingest.sinks import ParquetSink
from xling.ingest.stages import Batch, NonFinite, ProcessorSpec
from xling.warehouse import catalog
from xling.warehouse.errors import XlingError, missing_extra
from xling.warehouse.parquet import ImportResult, import_parts

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class RayOptions:
    """Where and how wide the Ray ingest runs (not part of the run's reproducible config)."""

    parts: str  # directory for the Parquet parts; shared storage when actors run on other nodes
    address: str | None = None  # Ray cluster ("auto" on a node of a started cluster); None: local
    concurrency: int = 1  # actors (each holds one copy of the model)
    num_gpus: float = 0.0  # GPUs per actor (1 on a GPU cluster)
    num_cpus: float = 1.0  # CPUs per actor

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise XlingError("--concurrency must be at least 1")
        if self.num_gpus < 0 or self.num_cpus <= 0:
            raise XlingError("--num-gpus must be >= 0 and --num-cpus > 0")


class IngestActor:
    """One batch processor (model with adapter and steering, SAEs), opened once; each call
    turns batches into Parquet parts."""

    def __init__(self, spec: ProcessorSpec, run_id: int, parts: str) -> None:
        self.process = spec.open()
        self.sink = ParquetSink(parts, run_id)

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"part": [], "phrases": [], "rows": [], "error": []}
        for i in range(len(items["phrase_ids"])):
            batch = Batch(
                phrase_ids=np.asarray(items["phrase_ids"][i], dtype=np.int64),
                lang_slots=np.asarray(items["lang_slots"][i], dtype=np.int64),
                input_ids=[[int(t) for t in ids] for ids in items["input_ids"][i]],
                origins={
                    int(k): [tuple(p) for p in v]
                    for k, v in json.loads(str(items["origins"][i])).items()
                },
            )
            try:
                rows = self.process(batch)
            except NonFinite as err:
                # Carried back as data: the driver marks the run failed with the local message.
                out["part"].append("")
                out["phrases"].append(0)
                out["rows"].append(0)
                out["error"].append(json.dumps([err.phrase_id, err.layer, err.where]))
                continue
            out["part"].append(self.sink.write(batch, rows))
            out["phrases"].append(len(batch.phrase_ids))
            out["rows"].append(rows.features.num_rows if rows.features is not None else 0)
            out["error"].append("")
        return out


def run_ingest_ray(
    wh: Warehouse,
    config: IngestConfig,
    options: RayOptions,
    progress: ProgressFn | None = None,
) -> tuple[int, ImportResult]:
    """Run one ingest on Ray; returns the run id and what the import of its parts did.

    `progress` gets the local engine's IngestProgress as parts come back (rows uncommitted).
    """
    if config.neurons:
        raise XlingError("--neurons is not available with --engine ray; use the local engine")
    if config.encoding != "lossless":
        raise XlingError(
            f"--encoding {config.encoding} is not available with --engine ray; use the local engine"
        )
    try:
        import ray
        import ray.data
    except ImportError:
        raise missing_extra("ray[data]", "ray") from None

    # The driver only plans and batches: its copy of the model stays on the CPU.
    started = start_run(wh, config, engine="ray", device="cpu")
    run_id, plan = started.run_id, started.plan
    items = [
        {
            "phrase_ids": b.phrase_ids.tolist(),
            "lang_slots": b.lang_slots.tolist(),
            "input_ids": b.input_ids,
            "origins": json.dumps({str(k): v for k, v in b.origins.items()}),
        }
        for b in run_batches(wh, started)
    ]
    spec = started.processor
    started.lm.unsteer()
    del started  # the driver's model is not needed past batching
    Path(options.parts).mkdir(parents=True, exist_ok=True)
    try:
        if not ray.is_initialized():
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
        ds = ray.data.from_items(items).map_batches(
            IngestActor,
            fn_constructor_kwargs={
                "spec": spec,
                "run_id": run_id,
                "parts": str(Path(options.parts).resolve()),
            },
            batch_size=1,
            batch_format="numpy",
            concurrency=options.concurrency,
            num_gpus=options.num_gpus or None,
            num_cpus=options.num_cpus,
        )
        state = IngestProgress(run_id=run_id, done=0, total=plan.total, chunks=0, rows=0)
        for row in ds.iter_rows():
            if row["error"]:
                phrase_id, layer, where = json.loads(str(row["error"]))
                message = fail_message(wh, run_id, NonFinite(phrase_id, layer, where))
                catalog.fail_run(wh.con, run_id, message)
                raise XlingError(message)
            state.done += int(row["phrases"])
            state.chunks += 1
            if progress is not None:
                progress(state)
    except XlingError:
        raise
    except BaseException as err:
        catalog.fail_run(wh.con, run_id, f"ray engine: {type(err).__name__}: {err}".strip())
        raise
    result = import_parts(wh, options.parts, run_id)
    log.info("run %d: %d parts imported, %d feature rows", run_id, result.parts, result.rows)
    return run_id, result
