"""One fine-tune round (SPEC §6, `xling finetune round`), measured on held-apart groups.

    run_round(wh, RoundConfig(...)) -> RoundResult

1. split the base run's aligned groups into train / eval (seeded, recorded in `splits`);
2. load the base run's model once; score each eval phrase's NLL (capability before);
3. make the artifact from the train groups only: activation-aligned LoRA (`align`), a
   language-subnetwork delta (`subnetwork`) or a steering recipe (`steer`);
4. score the eval phrases again with the artifact (capability after);
5. ingest the base run's corpus again with the artifact, at the base run's layers (or
   `layers`): the tuned run, the newest run;
6. record the round (`rounds`: tuned run -> base run, split, fine-tune or intervention) and
   the NLLs (`round_nll`); compare the two runs on the eval groups (`compare_runs`).

Capability: NLL(p) = nats summed over the phrase's real tokens, BOS prepended and never
predicted (`xling.analysis.bpb.phrase_nll`); information parity of language l = mean over
eval groups holding English and l of NLL(en) / NLL(l) (view `round_capability`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.finetune.config import JsonConfig
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

    from xling.finetune.align import StepCallback
    from xling.ingest.models import LoadedModel
    from xling.ingest.runner import ProgressFn
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

METHODS = ("align", "subnetwork", "steer")
STEER_KINDS = ("residual", "neurons")


@dataclass
class RoundConfig(JsonConfig):
    """A round: base run -> artifact (from the train groups) -> tuned run, compared on the
    held-apart groups. Fields a method does not use are ignored by it."""

    base_run: int
    """Finished run of the base model (with SAEs; `--neurons` for subnetwork and neuron
    steering; `--residuals` for residual steering)."""
    method: str
    """align | subnetwork | steer."""
    out: str | None = None
    """Where the adapter is saved (align: a directory, subnetwork: a .safetensors file or a
    directory); None = `round-<base>-<method>-<langs>` beside the warehouse file."""
    langs: list[str] | None = None
    """align: languages paired with English (None = every non-English language of the
    run). subnetwork, steer: exactly one language."""
    target_layer: int | None = None
    """align: T, the layer aligned (required). steer residual: the block whose output is
    steered (default: T). Reported layer for the others."""
    eval_frac: float = 0.2
    """Share of aligned groups held apart for evaluation."""
    split_seed: int = 0
    """Seeds the split. A split with the same base run, seed and fraction is reused."""
    layers: list[int] | None = None
    """Layers the tuned run ingests; None = the base run's."""
    steps: int = 60
    """Optimisation steps (align, subnetwork)."""
    lr: float | None = None
    """Learning rate; None = the method's default (align 2e-4, subnetwork 1e-4)."""
    lam: float = 1.0
    """align: λ, weight of the English-retention term."""
    batch_size: int = 8
    """Pairs (align) or phrases (subnetwork) per step."""
    normalize: str = "none"
    """align: loss normalisation (`none` = the paper's loss; `en-norm`, see docs)."""
    lora_layers: list[int] | None = None
    """align: blocks carrying LoRA; None = 0..T."""
    rank: int = 8
    """align: LoRA rank."""
    top_rate: float = 0.01
    """subnetwork, steer neurons: LAPE top rate selecting the language's neurons."""
    steer_kind: str = "residual"
    """steer: `residual` (α · (mean English residual − mean residual of l) added at block T)
    or `neurons` (the language's LAPE neurons, `steer_mode`)."""
    steer_mode: str = "additive"
    """steer neurons: scale | replacement | additive | diffmean."""
    alpha: float = 1.0
    """steer: α."""
    capability: bool = True
    """Score NLL and information parity on the eval groups before and after."""
    seed: int = 0
    """Seeds the fine-tune (initialisation, data order)."""
    device: str | None = None
    """Device; None = the base run's."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further fields of the method's own config (AlignLoraConfig / SubnetworkConfig)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise XlingError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "align" and self.target_layer is None:
            raise XlingError("align needs --target-layer")
        if self.method != "align" and (self.langs is None or len(self.langs) != 1):
            raise XlingError(f"{self.method} tunes one language; pass --langs with exactly one")
        if self.langs is not None and "en" in self.langs:
            raise XlingError("'en' is the reference language; pick other languages")
        if self.steer_kind not in STEER_KINDS:
            raise XlingError(
                f"steer kind must be one of {', '.join(STEER_KINDS)}, got {self.steer_kind!r}"
            )
        if self.method == "steer" and self.steer_kind == "residual" and self.target_layer is None:
            raise XlingError("residual steering needs --target-layer (the block steered)")
        if not 0 < self.eval_frac < 1:
            raise XlingError(f"eval fraction must be in (0, 1), got {self.eval_frac}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise XlingError(f"lr must be a positive number, got {self.lr}")


@dataclass
class RoundResult:
    """What a round made and measured."""

    round_id: int
    base_run: int
    tuned_run: int
    split_id: int
    artifact: str
    """Adapter path (align, subnetwork) or intervention name (steer)."""
    finetune_id: int | None
    compare: pd.DataFrame
    """compare_runs on the eval groups: one row per (layer, lang), with intervals."""
    capability: pd.DataFrame | None
    """round_capability: one row per language (None when capability was off)."""
    seconds: float
    losses: list[dict[str, float]] = field(default_factory=list)
    target: pd.DataFrame | None = None
    """compare at the target layer with 95 % bootstrap intervals over the eval groups."""


def get_split(wh: Warehouse, base_run: int, eval_frac: float, seed: int) -> int:
    """The split of `base_run` with this seed and fraction: the recorded one, or a new one."""
    from xling.finetune.common import make_split

    found = wh.scalar(
        "SELECT min(split_id) FROM splits WHERE base_run = ? AND seed = ? AND eval_frac = ?",
        [base_run, seed, eval_frac],
    )
    return int(found) if found is not None else make_split(wh, base_run, eval_frac, seed)


def eval_phrases(wh: Warehouse, run: int, split_id: int) -> pd.DataFrame:
    """(phrase_id, group_id, lang, text) of the run's phrases in the split's eval groups."""
    return wh.sql(
        "SELECT p.phrase_id, p.group_id, p.lang, p.text FROM phrases p "
        "JOIN phrase_tokens t USING (phrase_id) "
        "WHERE t.run_id = ? AND p.group_id IN "
        "(SELECT group_id FROM split_groups WHERE split_id = ? AND part = 'eval') "
        "ORDER BY p.phrase_id",
        [run, split_id],
    )


def phrase_nlls(lm: LoadedModel, phrases: pd.DataFrame) -> pd.DataFrame:
    """(phrase_id, nll, n_tokens) of each phrase under `lm` (see the module docstring)."""
    import pandas as pd

    from xling.analysis.bpb import phrase_nll

    nll, n_tokens = phrase_nll(lm.model, lm.tokenizer, phrases["text"].tolist())
    return pd.DataFrame(
        {"phrase_id": phrases["phrase_id"].to_numpy(), "nll": nll, "n_tokens": n_tokens}
    )


def _default_out(wh: Warehouse, cfg: RoundConfig) -> Path:
    langs = "all" if cfg.langs is None else "-".join(cfg.langs)
    base = Path(wh.path).resolve().parent
    stem = f"round-{cfg.base_run}-{cfg.method}-{langs}"
    n = 1
    while (base / f"{stem}-{n}").exists() or (base / f"{stem}-{n}.safetensors").exists():
        n += 1
    suffix = ".safetensors" if cfg.method == "subnetwork" else ""
    return base / f"{stem}-{n}{suffix}"


def _check_base(wh: Warehouse, cfg: RoundConfig) -> dict[str, Any]:
    run = wh.run(cfg.base_run)
    if run["status"] != "finished":
        raise XlingError(
            f"run {cfg.base_run} is {run['status']}; a round starts from a finished run"
        )
    if run["adapter"] or run["config"].get("adapter") or run["config"].get("steer"):
        raise XlingError(
            f"run {cfg.base_run} was made with an adapter or steering; start from a base run"
        )
    layers = cfg.layers or run["config"].get("layers") or []
    sae_layers = sorted(e["layer"] for e in run["config"].get("saes", []))
    if cfg.layers is not None:
        missing = sorted(set(cfg.layers) - set(sae_layers))
        if missing:
            raise XlingError(
                f"run {cfg.base_run} has no SAE at layers {missing}; it has {sae_layers}"
            )
    if cfg.target_layer is not None and cfg.method == "align" and cfg.target_layer not in layers:
        raise XlingError(
            f"target layer {cfg.target_layer} is not among the ingested layers {layers}; "
            "the comparison needs it"
        )
    return run


def _make_artifact(
    wh: Warehouse,
    cfg: RoundConfig,
    lm: LoadedModel,
    split_id: int,
    out: Path,
    on_step: StepCallback | None,
) -> tuple[str, int | None, list[dict[str, float]]]:
    """(artifact, finetune id, losses); for align/subnetwork `lm` leaves tuned."""
    if cfg.method == "align":
        from xling.finetune.align import align_lora
        from xling.finetune.config import AlignLoraConfig

        acfg = AlignLoraConfig(
            base_run=cfg.base_run,
            target_layer=int(cfg.target_layer),  # checked in __post_init__
            out=str(out),
            langs=cfg.langs,
            lam=cfg.lam,
            rank=cfg.rank,
            steps=cfg.steps,
            lr=cfg.lr or 2e-4,
            batch_size=cfg.batch_size,
            normalize=cfg.normalize,
            lora_layers=cfg.lora_layers,
            split=split_id,
            seed=cfg.seed,
            device=cfg.device,
            **cfg.extra,
        )
        result = align_lora(wh, acfg, on_step, model=lm)
        return result.adapter, result.finetune_id, result.losses
    if cfg.method == "subnetwork":
        from xling.finetune.config import SubnetworkConfig
        from xling.finetune.subnetwork import train_subnetwork

        scfg = SubnetworkConfig(
            run=cfg.base_run,
            lang=cfg.langs[0],  # type: ignore[index]  # checked in __post_init__
            out=str(out),
            top_rate=cfg.top_rate,
            steps=cfg.steps,
            lr=cfg.lr or 1e-4,
            batch_size=cfg.batch_size,
            split=split_id,
            seed=cfg.seed,
            device=cfg.device,
            **cfg.extra,
        )
        result = train_subnetwork(wh, scfg, on_step, model=lm)
        return result.adapter, result.finetune_id, result.losses
    from xling.finetune.config import NeuronSteerConfig, ResidualSteerConfig
    from xling.finetune.steer import add_intervention

    lang = cfg.langs[0]  # type: ignore[index]
    next_round = int(wh.scalar("SELECT coalesce(max(round_id), 0) + 1 FROM rounds"))
    if cfg.steer_kind == "residual":
        name = f"round{next_round}-residual-{lang}-L{cfg.target_layer}-a{cfg.alpha:g}"
        steer_cfg: Any = ResidualSteerConfig(
            run=cfg.base_run, lang=lang, layer=int(cfg.target_layer), alpha=cfg.alpha
        )
    else:
        name = f"round{next_round}-neurons-{cfg.steer_mode}-{lang}-a{cfg.alpha:g}"
        steer_cfg = NeuronSteerConfig(
            run=cfg.base_run, lang=lang, mode=cfg.steer_mode, alpha=cfg.alpha, top_rate=cfg.top_rate
        )
    add_intervention(wh, name, steer_cfg, replace=True)
    return name, None, []


def run_round(
    wh: Warehouse,
    cfg: RoundConfig,
    *,
    on_step: StepCallback | None = None,
    progress: ProgressFn | None = None,
    model: LoadedModel | None = None,
) -> RoundResult:
    """Run one round (see the module docstring). `model`: the base run's model, loaded
    already (it leaves tuned for align and subnetwork)."""
    import pandas as pd

    from xling.analysis.queries import compare
    from xling.finetune.common import load_run_model
    from xling.ingest.runner import IngestConfig, run_ingest
    from xling.ingest.steering import load_recipe, steering

    begin = time.monotonic()
    base = _check_base(wh, cfg)
    out = Path(cfg.out) if cfg.out is not None else _default_out(wh, cfg)
    split_id = get_split(wh, cfg.base_run, cfg.eval_frac, cfg.split_seed)
    phrases = eval_phrases(wh, cfg.base_run, split_id)
    lm = model if model is not None else load_run_model(wh, cfg.base_run, cfg.device)[0]
    nll_base = phrase_nlls(lm, phrases) if cfg.capability else None
    artifact, finetune_id, losses = _make_artifact(wh, cfg, lm, split_id, out, on_step)

    nll_tuned = None
    if cfg.capability:
        if cfg.method == "steer":
            with steering(lm.model, load_recipe(wh, artifact)):
                nll_tuned = phrase_nlls(lm, phrases)
        else:
            nll_tuned = phrase_nlls(lm, phrases)

    changes: dict[str, Any] = {"layers": cfg.layers or base["config"].get("layers")}
    if cfg.method == "steer":
        changes["steer"] = artifact
    else:
        changes["adapter"] = artifact
    ingest_cfg = dataclasses.replace(IngestConfig.from_dict(base["config"]), **changes)
    tuned_run = run_ingest(wh, ingest_cfg, progress, model=lm)

    seconds = time.monotonic() - begin
    with wh.transaction() as con:
        round_id = int(
            con.execute(
                "INSERT INTO rounds (base_run, tuned_run, split_id, method, finetune_id, "
                "intervention, target_layer, config, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING round_id",
                [
                    cfg.base_run,
                    tuned_run,
                    split_id,
                    cfg.method,
                    finetune_id,
                    artifact if cfg.method == "steer" else None,
                    cfg.target_layer,
                    cfg.to_json(),
                    seconds,
                ],
            ).fetchone()[0]
        )
        if nll_base is not None and nll_tuned is not None:
            rows = pd.concat(
                [nll_base.assign(model="base"), nll_tuned.assign(model="tuned")]
            ).assign(round_id=round_id)
            con.register("nll_rows", rows)
            con.execute(
                "INSERT INTO round_nll SELECT round_id, model, phrase_id, nll, n_tokens "
                "FROM nll_rows"
            )
            con.unregister("nll_rows")
    log.info("round %d: run %d -> run %d in %.0f s", round_id, cfg.base_run, tuned_run, seconds)
    # One compare for every layer; its intervals resample the held-apart groups in both runs.
    effect = compare(wh, cfg.base_run, tuned_run, ci=True)
    return RoundResult(
        round_id=round_id,
        base_run=cfg.base_run,
        tuned_run=tuned_run,
        split_id=split_id,
        artifact=artifact,
        finetune_id=finetune_id,
        compare=effect,
        capability=round_capability(wh, round_id) if cfg.capability else None,
        seconds=seconds,
        losses=losses,
        target=_target_effect(effect, cfg.target_layer),
    )


def _target_effect(effect: pd.DataFrame, layer: int | None) -> pd.DataFrame | None:
    """Improvement and retention at the target layer with their bootstrap intervals."""
    if layer is None or layer not in set(effect["layer"].astype(int)):
        return None
    cols = ["lang", "improvement_pct", "improvement_pct_lo", "improvement_pct_hi"]
    cols += ["en_retention_pct", "en_retention_pct_lo", "en_retention_pct_hi"]
    return effect.loc[effect["layer"] == layer, cols].reset_index(drop=True)


def round_tables(result: RoundResult) -> list[tuple[str, pd.DataFrame]]:
    """(title, DataFrame) of what a round prints: improvement per language at every layer,
    English retention per layer, and the capability change."""
    cmp = result.compare
    improvement = (
        cmp.pivot(index="lang", columns="layer", values="improvement_pct")
        .rename(columns=lambda layer: f"L{layer}")
        .reset_index()
    )
    retention = cmp.groupby("layer", as_index=False).agg(
        en_retention_pct=("en_retention_pct", "first"), en_cosine=("en_cosine", "first")
    )
    tables = [
        ("activation improvement % per language (held-apart groups)", improvement),
        ("English retention % per layer", retention),
    ]
    if result.target is not None:
        tables.append(
            ("at the target layer, 95 % bootstrap intervals over held-apart groups", result.target)
        )
    if result.capability is not None:
        tables.append(("capability on the held-apart groups", result.capability))
    return tables


def round_capability(wh: Warehouse, round_id: int) -> pd.DataFrame:
    """Per language: mean NLL per token and information parity, base and tuned (view
    `round_capability`)."""
    if not wh.scalar("SELECT count(*) FROM rounds WHERE round_id = ?", [round_id]):
        raise XlingError(f"no round {round_id}; `xling finetune rounds` lists them")
    return wh.sql("SELECT * FROM round_capability(?) ORDER BY lang", [round_id])


def list_rounds(wh: Warehouse) -> pd.DataFrame:
    """One row per round: base run, tuned run, split, method, artifact, wall time."""
    return wh.sql(
        "SELECT r.round_id, r.base_run, r.tuned_run, r.split_id, s.n_train, s.n_eval, "
        "r.method, r.target_layer, coalesce(f.adapter, r.intervention) AS artifact, "
        "r.seconds, r.created_at FROM rounds r JOIN splits s USING (split_id) "
        "LEFT JOIN finetunes f USING (finetune_id) ORDER BY r.round_id"
    )
