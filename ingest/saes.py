"""Loading sae-lens SAEs for a model's layers, checking them, and registering them.

    SaeSource(release=, sae_id=) | SaeSource(sae_dir=) | SaeSource()   where the SAEs come from
    load_saes(source, layers, ...) -> {layer: LoadedSae}
    check_saes(saes, d_model, n_layers)   refuses a wrong d_in or hook layer (before any write)
    register_saes(con, model_id, saes)    each SAE's catalog row (one per SAE, reused)
    load_recorded_saes(entries, device)   the SAEs a run recorded, loaded again
    hook_layer(hook_name) -> L for `blocks.L.hook_resid_post`

Three sources: a sae-lens pretrained release with an id template (`{layer}` substituted;
`SAE.from_pretrained` in sae-lens 6 returns the SAE alone), local directories written by
sae-lens `save_model` (a parent holding one directory per layer, one SAE directory, or a path
template with `{layer}`), or the SAEs already registered in the warehouse for the model (what
`xling sae train` writes).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.warehouse import catalog
from xling.warehouse.errors import XlingError, missing_extra

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


@dataclass(frozen=True)
class SaeSource:
    """Where a run's SAEs come from; all None means: those registered for the model."""

    release: str | None = None  # sae-lens pretrained release, e.g. gemma-scope-2b-pt-res-canonical
    sae_id: str | None = None  # id template, e.g. layer_{layer}/width_16k/canonical
    sae_dir: str | None = (
        None  # sae-lens directory, parent of per-layer ones, or a {layer} template
    )

    def __post_init__(self) -> None:
        if (self.release is None) != (self.sae_id is None):
            raise XlingError("--sae-release and --sae-id go together; pass both or neither")
        if self.release is not None and self.sae_dir is not None:
            raise XlingError("pass either --sae-release/--sae-id or --sae-dir, not both")

    @property
    def registered(self) -> bool:
        return self.release is None and self.sae_dir is None


@dataclass
class LoadedSae:
    """One SAE, as loaded, with what the `saes` table records about it."""

    layer: int
    sae: Any  # sae_lens.SAE
    sae_name: str
    release: str | None
    path: str | None
    hook_name: str | None
    sae_id: int | None = None  # the warehouse id, set by register_saes
    explained_variance: float | None = None
    l0: float | None = None

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        return self.sae.cfg.architecture()

    def facts(self) -> catalog.SaeFacts:
        """What the catalog's `saes` row records about this SAE."""
        return catalog.SaeFacts(
            layer=self.layer,
            sae_name=self.sae_name,
            release=self.release,
            path=self.path,
            d_in=self.d_in,
            d_sae=self.d_sae,
            architecture=self.architecture,
            hook_name=self.hook_name,
            explained_variance=self.explained_variance,
            l0=self.l0,
        )

    def describe(self) -> dict[str, Any]:
        """What the run config records about this SAE."""
        return {
            "layer": self.layer,
            "sae_id": self.sae_id,
            "release": self.release,
            "sae_name": self.sae_name,
            "path": self.path,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "architecture": self.architecture,
            "hook_name": self.hook_name,
        }


def hook_layer(hook_name: str | None) -> int | None:
    """L for `blocks.L.hook_resid_post`; None for any other hook."""
    m = _HOOK_RE.match(hook_name or "")
    return int(m.group(1)) if m else None


def _cfg_hook_name(cfg: dict[str, Any]) -> str | None:
    # sae-lens 6 keeps hook_name in metadata; older directories have it at the top level.
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")


def _sae_lens():
    try:
        from sae_lens import SAE
    except ImportError:
        raise missing_extra("sae-lens", "models") from None
    return SAE


def load_saes(
    source: SaeSource,
    layers: list[int] | None,
    *,
    device: str = "cpu",
    con: duckdb.DuckDBPyConnection | None = None,
    model_id: int | None = None,
) -> dict[int, LoadedSae]:
    """Load one SAE per layer from `source`.

    `layers=None` takes every layer the source offers (not allowed for a pretrained
    release, whose ids are a template). Registered SAEs need `con` and `model_id`.
    """
    if source.release is not None:
        if layers is None:
            raise XlingError("--sae-release needs --layers (the ids are a template over layers)")
        if len(layers) > 1 and "{layer}" not in source.sae_id:
            raise XlingError(
                f"--sae-id {source.sae_id!r} has no {{layer}}; add it for several layers"
            )
        return {
            layer: _from_release(source.release, source.sae_id, layer, device) for layer in layers
        }
    if source.sae_dir is not None:
        paths = _dir_paths(source.sae_dir, layers)
    else:
        paths = _registered_paths(con, model_id, layers)
    return {layer: _from_disk(path, layer, device) for layer, path in sorted(paths.items())}


def _from_release(release: str, template: str, layer: int, device: str) -> LoadedSae:
    SAE = _sae_lens()
    sae_name = template.replace("{layer}", str(layer))
    try:
        sae = SAE.from_pretrained(release, sae_name, device=device)
    except (ValueError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XlingError(f"cannot load SAE {release} / {sae_name}: {first}") from None
    return LoadedSae(
        layer=layer,
        sae=sae.eval(),
        sae_name=sae_name,
        release=release,
        path=None,
        hook_name=sae.cfg.metadata.hook_name,
    )


def _from_disk(path: Path, layer: int, device: str) -> LoadedSae:
    from safetensors import SafetensorError

    SAE = _sae_lens()
    _read_cfg(path)
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except (ValueError, OSError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XlingError(f"cannot load SAE from {path}: {first}") from None
    return LoadedSae(
        layer=layer,
        sae=sae.eval(),
        sae_name=path.name,
        release=None,
        path=str(path.resolve()),
        hook_name=sae.cfg.metadata.hook_name,
    )


# An SAE larger than this many weights (d_in x d_sae, 64 GiB in float32) is refused before
# loading: a cfg.json with absurd sizes would otherwise end in a MemoryError.
_MAX_SAE_WEIGHTS = 2**34


def _read_cfg(path: Path) -> dict[str, Any]:
    """The SAE directory's cfg.json, checked to be an object with sane sizes."""
    try:
        cfg = json.loads((path / "cfg.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XlingError(f"{path} is not a sae-lens SAE directory (cfg.json: {err})") from None
    if not isinstance(cfg, dict):
        raise XlingError(f"{path}/cfg.json is not a JSON object; it is not a sae-lens SAE")
    sizes = {k: cfg.get(k) for k in ("d_in", "d_sae")}
    for key, value in sizes.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise XlingError(f"{path}/cfg.json: {key} must be a positive integer, got {value!r}")
    if all(sizes.values()) and sizes["d_in"] * sizes["d_sae"] > _MAX_SAE_WEIGHTS:
        raise XlingError(
            f"{path}/cfg.json: d_in {sizes['d_in']} x d_sae {sizes['d_sae']} is too large an SAE"
        )
    return cfg


def _read_hook_layer(path: Path) -> int | None:
    return hook_layer(_cfg_hook_name(_read_cfg(path)))


def _dir_paths(sae_dir: str, layers: list[int] | None) -> dict[int, Path]:
    """{layer: directory} from a {layer} template, one SAE directory or a parent of several."""
    if "{layer}" in sae_dir:
        if layers is None:
            raise XlingError("a --sae-dir template with {layer} needs --layers")
        paths = {layer: Path(sae_dir.replace("{layer}", str(layer))) for layer in layers}
        for layer, p in paths.items():
            if not (p / "cfg.json").is_file():
                raise XlingError(f"no sae-lens SAE for layer {layer} at {p} (no cfg.json)")
        return paths
    root = Path(sae_dir)
    if not root.is_dir():
        raise XlingError(f"no SAE directory at {sae_dir}")
    candidates = (
        [root]
        if (root / "cfg.json").is_file()
        else sorted(p for p in root.iterdir() if (p / "cfg.json").is_file())
    )
    if not candidates:
        raise XlingError(f"{sae_dir} holds no sae-lens SAE directories (none has a cfg.json)")
    found: dict[int, Path] = {}
    for p in candidates:
        layer = _read_hook_layer(p)
        if layer is None:
            raise XlingError(
                f"SAE {p} does not read a blocks.L.hook_resid_post hook; xling ingests resid_post"
            )
        if layer in found:
            raise XlingError(f"{sae_dir} holds two SAEs for layer {layer}: {found[layer]} and {p}")
        found[layer] = p
    if layers is None:
        return found
    missing = [layer for layer in layers if layer not in found]
    if missing:
        raise XlingError(
            f"{sae_dir} has no SAE for layer(s) {', '.join(map(str, missing))}; "
            f"it has {', '.join(map(str, sorted(found)))}"
        )
    return {layer: found[layer] for layer in layers}


def _registered_paths(
    con: duckdb.DuckDBPyConnection | None, model_id: int | None, layers: list[int] | None
) -> dict[int, Path]:
    if con is None or model_id is None:
        return {}
    found = {
        layer: Path(path) for layer, path in catalog.registered_sae_paths(con, model_id).items()
    }
    if layers is not None:
        found = {layer: p for layer, p in found.items() if layer in layers}
    for layer, p in found.items():
        if not (p / "cfg.json").is_file():
            raise XlingError(
                f"the registered SAE for layer {layer} is gone from {p}; retrain it with "
                "`xling sae train` or pass --sae-dir"
            )
    return found


def check_saes(saes: dict[int, LoadedSae], d_model: int, n_layers: int) -> None:
    """Refuse SAEs that do not fit the model: wrong d_in, wrong hook layer, layer out of range."""
    for layer, s in saes.items():
        where = s.path or f"{s.release} / {s.sae_name}"
        if not 0 <= layer < n_layers:
            raise XlingError(f"layer {layer} out of range: the model has layers 0-{n_layers - 1}")
        if s.d_in != d_model:
            raise XlingError(
                f"SAE {where} has d_in {s.d_in} but the model's d_model is {d_model}; "
                "use SAEs trained on this model"
            )
        got = hook_layer(s.hook_name)
        if s.hook_name is not None and got != layer:
            raise XlingError(
                f"SAE {where} reads hook {s.hook_name} but is used for layer {layer} "
                f"(blocks.{layer}.hook_resid_post); check --sae-id / --layers"
            )


def register_saes(
    con: duckdb.DuckDBPyConnection, model_id: int, saes: dict[int, LoadedSae]
) -> None:
    """Give each SAE its catalog row (an SAE directory keeps one row however often it loads)."""
    for s in saes.values():
        s.sae_id = catalog.register_sae(con, model_id, s.facts())


def load_recorded_saes(entries: list[dict[str, Any]], device: str) -> dict[int, LoadedSae]:
    """The SAEs a run recorded (`LoadedSae.describe()` entries), loaded again from the same
    release ids or directories, with their warehouse ids."""
    out: dict[int, LoadedSae] = {}
    for e in entries:
        if e["release"] is not None:
            source = SaeSource(release=e["release"], sae_id=e["sae_name"])
        else:
            source = SaeSource(sae_dir=e["path"])
        s = load_saes(source, [e["layer"]], device=device)[e["layer"]]
        s.sae_id = e["sae_id"]
        out[e["layer"]] = s
    return out


def list_saes(wh, model: str | None = None):
    """The registered SAEs (optionally of models whose name contains `model`) as a DataFrame."""
    where, params = "", []
    if model:
        where, params = "WHERE m.name ILIKE ?", [f"%{model}%"]
    return wh.sql(
        "SELECT s.sae_id, m.name AS model, s.layer, coalesce(s.release || ' / ', '') || s.sae_name "
        "AS sae, s.architecture, s.d_in, s.d_sae, s.explained_variance, s.l0, s.path "
        f"FROM saes s JOIN models m USING (model_id) {where} ORDER BY m.name, s.layer, s.sae_id",
        params,
    )
