"""The ingest runner: a model and its SAEs over the warehouse corpus, into sparse rows, resumable.

    IngestConfig(model=..., layers=..., sae_release=..., ...)   one run's settings (stored as JSON)
    run_ingest(wh, config, progress=fn) -> run_id
    resume_ingest(wh, run_id, progress=fn) -> run_id    finishes a killed or failed run
    start_run(wh, config) -> StartedRun                 validate, load, plan and register (any engine)
    run_batches(wh, started) -> Iterator[Batch]         the run's batches, the same for every engine

How a run goes (SPEC §4): `start_run` validates everything, loads the model through its spec
(adapter merged, steering attached) and the SAEs, checks them against the model and plans the
run (xling.ingest.stages) before the catalog registers it. The local engine then feeds the
planned batches through a `BatchProcessor` into a `WarehouseSink` (xling.ingest.sinks), which
commits chunks of at least `chunk_rows` rows together with their ledger; a killed run therefore
holds whole phrases only, and `resume_ingest` redoes exactly the phrases missing from
`phrase_tokens`. The Ray engine (ray_engine.py) shares every stage but the sink.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xling.ingest.models import DTYPES, LoadedModel, ModelSpec, register_model, spec_from
from xling.ingest.saes import LoadedSae, SaeSource, load_recorded_saes, load_saes, register_saes
from xling.ingest.sinks import WarehouseSink
from xling.ingest.stages import (
    FEATURE_MODES,
    Batch,
    BatchProcessor,
    NonFinite,
    ProcessorSpec,
    RowSpec,
    RunPlan,
    Selection,
    batches,
    check_layer_range,
    plan_run,
)
from xling.warehouse import catalog
from xling.warehouse.encoding import check_encoding
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.ingest.steering import SteeringRecipe
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

_FEATURES_RE = re.compile(r"^(all|origin|topk:(\d+))$")
_SHARD_RE = re.compile(r"^(\d+)/(\d+)$")
# Fields that do not change a run's rows (so --resume may change device and batch size).
RUNTIME_FIELDS = ("device", "batch_size", "chunk_rows")
# Keys the stored run config adds to IngestConfig's fields (what was resolved at run time);
# from_dict accepts them back and refuses anything else.
RECORDED_KEYS = frozenset(
    {
        "model_name",
        "model_revision",
        "model_id",
        "model_source",
        "arch",
        "n_layers",
        "d_model",
        "resolved_layers",
        "pooling",
        "saes",
        "steering",
        "n_selected",
        "versions",
        "engine",
        "langs_resolved",
    }
)


@dataclass
class IngestConfig:
    """One ingest run. Stored (with what was resolved at run time) as the run's config JSON.

    Every field but the runtime knobs (RUNTIME_FIELDS: device, batch_size, chunk_rows, which
    do not change the rows) defines the run: `definition()` is what reproduces it.
    """

    model: str  # hub id, local directory, .gguf file or built-in name (gemma3-270m)
    revision: str | None = None  # hub revision (branch, tag or commit)
    dtype: str = "float32"  # model weights dtype: float32 | bfloat16 | float16
    device: str = "cpu"  # runtime: cpu | cuda | cuda:N | mps | auto
    trust_remote_code: bool = False
    allow_pickle: bool = False  # allow .bin (pickle) checkpoints; safetensors only otherwise
    layers: list[int] | None = None  # None: every layer with an SAE (all layers if none and
    # only residuals/neurons are asked for)
    sae_release: str | None = None  # sae-lens pretrained release
    sae_id: str | None = None  # sae-lens id template with {layer}
    sae_dir: str | None = None  # sae-lens directory / parent / {layer} template
    features: str = "all"  # all | origin | topk (which feature rows are kept)
    topk: int | None = None  # with features="topk": rows kept per phrase and layer
    include_bos: bool = False  # pool the BOS token too
    residuals: bool = False  # store mean-pooled residuals per phrase and layer
    neurons: bool = False  # store per-language MLP neuron firing counts (LAPE)
    langs: list[str] | None = None  # only these languages (None: all)
    limit: int | None = None  # only the first N phrases (by phrase_id, after --langs)
    shard: tuple[int, int] | None = None  # (i, n): only phrases with phrase_id % n == i
    batch_size: int = 32  # runtime
    max_tokens: int = 256  # longer phrases are truncated (the count is logged)
    chunk_rows: int = 2_000_000  # runtime: rows per committed chunk (also closed at 256 MiB)
    adapter: str | None = None  # fine-tune merged in first: a LoRA dir or a subnetwork delta
    steer: str | None = None  # stored intervention (`xling steer add`) hooked in throughout
    encoding: str = "lossless"  # feature values: lossless | compact (xling.warehouse.encoding)

    def __post_init__(self) -> None:
        if not self.model:
            raise XlingError(
                "no model given; pass --model (hub id, directory, .gguf or gemma3-270m)"
            )
        if self.dtype not in DTYPES:
            raise XlingError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.features not in FEATURE_MODES or (self.features == "topk") != (
            self.topk is not None
        ):
            raise XlingError(
                f"bad --features {self.features!r}; use all, origin or topk:K (K >= 1)"
            )
        if self.topk is not None and self.topk < 1:
            raise XlingError(f"bad --features topk:{self.topk}; use all, origin or topk:K (K >= 1)")
        if self.shard is not None:
            i, n = self.shard = tuple(self.shard)
            if not 0 <= i < n:
                raise XlingError(f"bad --shard {i}/{n}; use i/n with 0 <= i < n, e.g. 0/4")
        for name in ("batch_size", "max_tokens", "chunk_rows"):
            if getattr(self, name) < 1:
                raise XlingError(f"--{name.replace('_', '-')} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise XlingError("--limit must be at least 1")
        if self.layers is not None:
            if not self.layers or any(layer < 0 for layer in self.layers):
                raise XlingError(f"bad layer list {self.layers}; layers are 0-based")
            self.layers = sorted(set(self.layers))
        SaeSource(self.sae_release, self.sae_id, self.sae_dir)  # validates the combination
        try:
            check_encoding(self.encoding, self.max_tokens)
        except ValueError as err:
            raise XlingError(f"bad --encoding: {err}") from None

    @property
    def sae_source(self) -> SaeSource:
        return SaeSource(self.sae_release, self.sae_id, self.sae_dir)

    def definition(self) -> dict[str, Any]:
        """The fields that define the run (what reproduces its rows)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def runtime(self) -> dict[str, Any]:
        """The knobs that do not change the rows."""
        return {k: getattr(self, k) for k in RUNTIME_FIELDS}

    @property
    def rows(self) -> RowSpec:
        """Which rows each batch yields."""
        return RowSpec(
            features=self.features,
            topk=self.topk,
            include_bos=self.include_bos,
            residuals=self.residuals,
            neurons=self.neurons,
        )

    @property
    def selection(self) -> Selection:
        """Which phrases and layers the run covers."""
        return Selection(layers=self.layers, langs=self.langs, limit=self.limit, shard=self.shard)

    def model_spec(self, steering: SteeringRecipe | None = None) -> ModelSpec:
        """The model this run reads: with its adapter, and `steering` (the recipe of
        `self.steer`, read from the warehouse by the caller)."""
        return spec_from(self, steering=steering)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shard"] = list(self.shard) if self.shard is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestConfig:
        """The config from `to_dict()` or a run's stored config; unknown keys are refused.

        Configs stored before the fields were typed (features "topk:K", shard "i/n") are read
        too.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - RECORDED_KEYS)
        if unknown:
            raise XlingError(f"unknown ingest config key(s): {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(values.get("features"), str) and values["features"].startswith("topk:"):
            values["features"], values["topk"] = parse_features(values["features"])
        if isinstance(values.get("shard"), str):
            values["shard"] = parse_shard(values["shard"])
        return cls(**values)


def parse_features(text: str) -> tuple[str, int | None]:
    """`all`, `origin` or `topk:K` (the CLI's syntax) as (mode, K)."""
    m = _FEATURES_RE.match(text)
    if not m or text == "topk:0" or (m.group(2) is not None and int(m.group(2)) < 1):
        raise XlingError(f"bad --features {text!r}; use all, origin or topk:K (K >= 1)")
    return ("topk", int(m.group(2))) if m.group(2) else (text, None)


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (the CLI's syntax) as (i, n), 0 <= i < n."""
    m = _SHARD_RE.match(text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise XlingError(f"bad --shard {text!r}; use i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


@dataclass
class IngestProgress:
    """Handed to the progress callback after every batch."""

    run_id: int
    done: int  # phrases processed (committed or buffered), including earlier sessions
    total: int  # phrases in the run
    chunks: int  # chunks committed so far
    rows: int  # feature rows committed so far
    started: float = field(default_factory=time.monotonic)


ProgressFn = Callable[[IngestProgress], None]


@dataclass
class StartedRun:
    """A registered run, planned, with its model and SAEs loaded."""

    run_id: int
    config: IngestConfig
    plan: RunPlan
    lm: LoadedModel
    saes: dict[int, LoadedSae]
    processor: ProcessorSpec  # how a worker rebuilds this run's batch processor


# -- public entry points -----------------------------------------------------------------


def run_ingest(
    wh: Warehouse,
    config: IngestConfig,
    progress: ProgressFn | None = None,
    *,
    model: LoadedModel | None = None,
) -> int:
    """Run one ingest and return its run id. `model` reuses an already loaded base model
    (the config's adapter is merged into it; its steering is removed again afterwards)."""
    # The file is open only while the run reads or commits (queries get in between).
    with wh.between_commits():
        started = start_run(wh, config, model=model)
        try:
            _execute(wh, started, progress, first_chunk=0)
        finally:
            if model is not None:
                started.lm.unsteer()
    return started.run_id


def resume_ingest(
    wh: Warehouse,
    run_id: int,
    progress: ProgressFn | None = None,
    *,
    model: LoadedModel | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> int:
    """Finish run `run_id` (killed or failed): ingest the phrases it has no ledger rows for.

    Only the device and batch size may differ from the original run; they do not change
    the rows.
    """
    run = wh.run(run_id)
    if run.finished:
        raise XlingError(f"run {run_id} already finished; nothing to resume")
    recorded = run.config
    overrides = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    config = dataclasses.replace(IngestConfig.from_dict(recorded), **overrides)
    with wh.between_commits():
        with wh.session():
            recipe = _recipe(wh, config)
        spec = config.model_spec(recipe)
        lm = spec.apply(model) if model is not None else spec.load()  # the file is free meanwhile
        try:
            if lm.name != run.model and lm.name != recorded.get("model_name"):
                raise XlingError(
                    f"run {run_id} used model {run.model}, not {lm.name}; resume with that model"
                )
            saes = load_recorded_saes(recorded["saes"], str(lm.device))
            with wh.session() as con:
                done = {
                    int(r[0])
                    for r in con.execute(
                        "SELECT phrase_id FROM phrase_tokens WHERE run_id = ?", [run_id]
                    ).fetchall()
                }
                plan = plan_run(wh, config.selection, config.rows, lm, saes, done=done)
            with wh.transaction() as con:
                first_chunk = catalog.next_chunk(con, run_id)
                catalog.restart_run(con, run_id)
            log.info("resuming run %d: %d of %d phrases left", run_id, len(plan.todo), plan.total)
            started = StartedRun(
                run_id, config, plan, lm, saes, _processor_spec(config, spec, plan, saes)
            )
            _execute(wh, started, progress, first_chunk=first_chunk)
        finally:
            if model is not None:
                lm.unsteer()
    return run_id


def start_run(
    wh: Warehouse,
    config: IngestConfig,
    *,
    model: LoadedModel | None = None,
    engine: str = "local",
    device: str | None = None,
) -> StartedRun:
    """Everything before the first row: the steering recipe read, the model loaded through its
    spec (on `device` when given, e.g. the CPU of a Ray driver), the SAEs loaded and checked,
    the run planned, then the model, SAEs and run registered in one transaction."""
    with wh.session():
        recipe = _recipe(wh, config)
    spec = config.model_spec(recipe)
    # Between commits (run_ingest) the file is free while the model loads.
    lm = spec.apply(model) if model is not None else (spec.on(device) if device else spec).load()
    try:
        with wh.session():
            return _register(wh, config, lm, spec, recipe, engine)
    except BaseException:
        if model is not None:
            lm.unsteer()
        raise


def _register(
    wh: Warehouse,
    config: IngestConfig,
    lm: LoadedModel,
    spec: ModelSpec,
    recipe: SteeringRecipe | None,
    engine: str,
) -> StartedRun:
    """start_run's checks, SAE loading, plan and catalog rows, with the file open."""
    check_layer_range(config.layers, lm)
    # A fine-tune is read with its base model's SAEs: look them up without the adapter.
    base_id = catalog.find_model(wh.con, lm.name, lm.revision, None)
    saes = load_saes(
        config.sae_source, config.layers, device=str(lm.device), con=wh.con, model_id=base_id
    )
    plan = plan_run(wh, config.selection, config.rows, lm, saes, done=set())
    with wh.transaction() as con:
        model_id = register_model(con, lm)
        # SAEs belong to the base model: a fine-tune's run reuses the base model's rows.
        base_facts = dataclasses.replace(lm.facts(), adapter=None)
        register_saes(con, catalog.register_model(con, base_facts), saes)
        stored = run_record(config, lm, plan, saes, recipe, model_id)
        if engine != "local":
            stored["engine"] = engine
        run_id = catalog.create_run(
            con,
            model_id,
            catalog.NewRun(
                config=stored,
                layers={
                    layer: saes[layer].sae_id if layer in saes else None for layer in plan.layers
                },
                adapter=lm.adapter,
                steer=config.steer,
                residuals=config.residuals,
                neurons=config.neurons,
                engine=engine,
                n_selected=plan.total,
            ),
        )
    log.info("run %d: %d phrases, layers %s", run_id, plan.total, plan.layers)
    return StartedRun(run_id, config, plan, lm, saes, _processor_spec(config, spec, plan, saes))


def run_batches(wh: Warehouse, started: StartedRun) -> Iterator[Batch]:
    """The started run's remaining phrases, tokenized by its model into the config's batches:
    what every engine (local or Ray) feeds its processors, so both cut the same batches."""
    config = started.config
    return batches(
        wh,
        started.plan,
        started.lm.tokenizer,
        config.rows,
        batch_size=config.batch_size,
        max_tokens=config.max_tokens,
    )


def run_record(
    config: IngestConfig,
    lm: LoadedModel,
    plan: RunPlan,
    saes: dict[int, LoadedSae],
    recipe: SteeringRecipe | None,
    model_id: int,
) -> dict[str, Any]:
    """The stored config: the IngestConfig plus what was resolved, enough to reproduce the run."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {
        **config.to_dict(),
        "model_name": lm.name,
        "model_revision": lm.revision,
        "model_id": model_id,
        "model_source": lm.source,
        "arch": lm.arch,
        "n_layers": lm.n_layers,
        "d_model": lm.d_model,
        "resolved_layers": plan.layers,
        "pooling": {
            "hook": "blocks.{layer}.hook_resid_post",
            "over": "real tokens (attention mask)",
            "bos": "included" if config.include_bos else "excluded",
            "padding": "right",
            "feature_stats": {
                "act_mean": "mean over pooled tokens, zeros included",
                "act_max": "max over pooled tokens",
                "n_active": "pooled tokens with activation > 0",
            },
            "residuals": "mean over pooled tokens" if config.residuals else None,
            "neurons": "act_fn(gate_proj(x)) > 0 over pooled tokens" if config.neurons else None,
        },
        "saes": [s.describe() for s in saes.values()],
        "steering": json.loads(recipe.to_json()) if recipe is not None else None,
        "n_selected": plan.total,
        "versions": {p: ver(p) for p in ("xling", "torch", "transformers", "sae-lens", "duckdb")},
    }


def fail_message(wh: Warehouse, run_id: int, err: NonFinite) -> str:
    """The one-line error for a non-finite value (with the phrase it came from)."""
    text = wh.scalar("SELECT text FROM phrases WHERE phrase_id = ?", [err.phrase_id])
    return (
        f"non-finite {err.where} at layer {err.layer} on phrase {err.phrase_id} "
        f"({text[:40]!r}); run {run_id} marked failed — check the model's dtype"
    )


# -- internals ---------------------------------------------------------------------------


def _recipe(wh: Warehouse, config: IngestConfig) -> SteeringRecipe | None:
    """The stored intervention the config names, read before anything loads or is written."""
    if config.steer is None:
        return None
    from xling.ingest.steering import load_recipe

    return load_recipe(wh, config.steer)


def _processor_spec(
    config: IngestConfig, spec: ModelSpec, plan: RunPlan, saes: dict[int, LoadedSae]
) -> ProcessorSpec:
    return ProcessorSpec(
        model=spec,
        saes=[s.describe() for s in saes.values()],
        layers=plan.layers,
        langs=plan.langs,
        rows=config.rows,
    )


def _execute(
    wh: Warehouse, started: StartedRun, progress: ProgressFn | None, first_chunk: int
) -> None:
    """The local engine: batches -> processor -> warehouse sink, then the run finished."""
    config, plan, run_id = started.config, started.plan, started.run_id
    state = IngestProgress(
        run_id=run_id,
        done=plan.total - len(plan.todo),
        total=plan.total,
        chunks=first_chunk,
        rows=0,
    )
    process = BatchProcessor(started.lm, started.saes, plan.layers, plan.langs, config.rows)
    sink = WarehouseSink(
        wh,
        run_id,
        plan.langs,
        chunk_rows=config.chunk_rows,
        first_chunk=first_chunk,
        encoding=config.encoding,
    )
    try:
        for batch in run_batches(wh, started):
            sink.write(batch, process(batch))
            state.done += len(batch.phrase_ids)
            state.chunks, state.rows = sink.chunks, sink.rows
            if progress is not None:
                progress(state)
        sink.close()
        state.chunks, state.rows = sink.chunks, sink.rows
        sink.finish(neurons=config.neurons)
    except NonFinite as err:
        with wh.session() as con:
            message = fail_message(wh, run_id, err)
            catalog.fail_run(con, run_id, message)
        raise XlingError(message) from None
    except BaseException as err:
        with wh.session() as con:
            catalog.fail_run(con, run_id, f"interrupted: {type(err).__name__}: {err}".strip())
        raise
    if progress is not None:
        progress(state)
