"""`xling ingest --engine ray`: the same ingest as Ray Data actors writing Parquet parts.

    run_ingest_ray(wh, config, RayOptions(parts="shared/parts", concurrency=8, num_gpus=1))

The driver (the process holding the warehouse) plans the run exactly as the local engine does
and registers it, then reads, tokenises and length-sorts the phrases into the runner's batches
(`runner._batches`). Ray Data carries the batches to `IngestActor`s: each loads the model and
the run's recorded SAEs once, turns a batch into rows with the runner's own `_process`
(forward, SAE encode, pooling, sparse rows) and writes them as one Parquet part named by the
run and the batch's phrase ids (`warehouse.parquet.write_part`), so a rerun overwrites its
parts. The driver then imports the parts (`import_parts`: idempotent, one transaction), which
orders the run's rows by layer and marks it finished.

If the driver dies, the parts written so far are kept: `xling import-parts DIR --run R` loads
them and `xling ingest --resume R` (local engine) does the phrases still missing.
Not with --neurons (their per-language sums are folded in the runner's chunk buffer).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xling.ingest import runner
from xling.ingest.models import find_model, load_model, register_model
from xling.ingest.saes import load_saes, register_saes
from xling.warehouse.errors import XlingError, missing_extra
from xling.warehouse.parquet import ImportResult, import_parts, part_name, write_part

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
    """One model and its SAEs, loaded once; each call turns batches into Parquet parts."""

    def __init__(self, config: dict[str, Any], run_id: int, parts: str) -> None:
        self.config = runner.IngestConfig.from_dict(config)
        self.run_id, self.parts = run_id, parts
        lm = load_model(
            self.config.model,
            revision=self.config.revision,
            dtype=self.config.dtype,
            device=self.config.device,
            trust_remote_code=self.config.trust_remote_code,
            allow_pickle=self.config.allow_pickle,
        )
        self.plan = runner._Plan(
            lm=lm,
            saes=runner._recorded_saes(config["saes"], str(lm.device)),
            layers=config["resolved_layers"],
            todo=np.empty(0, np.int64),
            total=0,
            langs=config["langs_resolved"],
        )

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"part": [], "phrases": [], "rows": []}
        for i in range(len(items["phrase_ids"])):
            batch = runner._Batch(
                phrase_ids=np.asarray(items["phrase_ids"][i], dtype=np.int64),
                lang_slots=np.asarray(items["lang_slots"][i], dtype=np.int64),
                input_ids=[[int(t) for t in ids] for ids in items["input_ids"][i]],
                origins={
                    int(k): [tuple(p) for p in v]
                    for k, v in json.loads(str(items["origins"][i])).items()
                },
            )
            rows = runner._process(batch, self.config, self.plan)
            name = part_name(self.run_id, batch.phrase_ids)
            write_part(
                self.parts,
                name,
                {
                    "feature_acts": rows.features,
                    "residuals": rows.residuals,
                    "phrase_tokens": rows.tokens,
                },
            )
            out["part"].append(name)
            out["phrases"].append(len(batch.phrase_ids))
            out["rows"].append(rows.features.num_rows if rows.features is not None else 0)
        return out


def run_ingest_ray(
    wh: Warehouse,
    config: runner.IngestConfig,
    options: RayOptions,
    progress: runner.ProgressFn | None = None,
) -> tuple[int, ImportResult]:
    """Run one ingest on Ray; returns the run id and what the import of its parts did.

    `progress` gets the local engine's IngestProgress as parts come back (rows uncommitted).
    """
    if config.neurons:
        raise XlingError("--neurons is not available with --engine ray; use the local engine")
    try:
        import ray
        import ray.data
    except ImportError:
        raise missing_extra("ray[data]", "ray") from None

    run_id, plan, stored = _start_run(wh, config)
    items = [
        {
            "phrase_ids": b.phrase_ids.tolist(),
            "lang_slots": b.lang_slots.tolist(),
            "input_ids": b.input_ids,
            "origins": json.dumps({str(k): v for k, v in b.origins.items()}),
        }
        for b in runner._batches(wh, config, plan)
    ]
    Path(options.parts).mkdir(parents=True, exist_ok=True)
    try:
        if not ray.is_initialized():
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
        ds = ray.data.from_items(items).map_batches(
            IngestActor,
            fn_constructor_kwargs={
                "config": stored,
                "run_id": run_id,
                "parts": str(Path(options.parts).resolve()),
            },
            batch_size=1,
            batch_format="numpy",
            concurrency=options.concurrency,
            num_gpus=options.num_gpus or None,
            num_cpus=options.num_cpus,
        )
        state = runner.IngestProgress(run_id=run_id, done=0, total=plan.total, chunks=0, rows=0)
        for row in ds.iter_rows():
            state.done += int(row["phrases"])
            state.chunks += 1
            if progress is not None:
                progress(state)
    except BaseException as err:
        runner._mark_failed(wh, run_id, f"ray engine: {type(err).__name__}: {err}".strip()[:300])
        raise
    result = import_parts(wh, options.parts, run_id)
    log.info("run %d: %d parts imported, %d feature rows", run_id, result.parts, result.rows)
    return run_id, result


def _start_run(
    wh: Warehouse, config: runner.IngestConfig
) -> tuple[int, runner._Plan, dict[str, Any]]:
    """Plan and register the run as the local engine does; the model loads on the CPU here.

    Returns the run id, the plan (for batching) and the stored config, which the actors read
    (with the resolved language slots added).
    """
    lm = load_model(
        config.model,
        revision=config.revision,
        dtype=config.dtype,
        device="cpu",
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
    )
    runner._check_layer_range(config.layers, lm)
    saes = load_saes(
        config.sae_source, config.layers, device="cpu", con=wh.con, model_id=find_model(wh.con, lm)
    )
    plan = runner._plan(wh, config, lm, saes, done=set())
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        register_saes(con, model_id, saes)
        stored = {
            **runner._run_config(config, lm, plan, model_id),
            "engine": "ray",
            "langs_resolved": plan.langs,
        }
        run_id = int(
            con.execute(
                "INSERT INTO runs (model_id, status, config, n_phrases, n_rows) "
                "VALUES (?, 'running', ?, 0, 0) RETURNING run_id",
                [model_id, json.dumps(stored)],
            ).fetchone()[0]
        )
    return run_id, plan, stored
