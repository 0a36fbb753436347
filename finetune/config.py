"""One dataclass per fine-tuning or steering job, validated on creation and stored as JSON.

The stored JSON (`finetunes.config`, `interventions.config`) is `to_json()` of these objects,
so a job can be rebuilt with `from_json()` and rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Self

from xling.warehouse.errors import XlingError

# The projections of a Gemma/Llama-style decoder block that activation-aligned LoRA adapts.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATS = ("max", "mean")
GRADIENTS = ("straight-through", "exact")
NORMALIZATIONS = ("none", "en-norm")
NEURON_MODES = ("scale", "replacement", "additive", "diffmean")
STEER_KINDS = ("neurons", "residual")


def _positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise XlingError(f"{name} must be a whole number, got {value!r}")
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise XlingError(f"{name} must be a positive number, got {value!r}")


def _non_negative_finite(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise XlingError(f"{name} must be a finite number ≥ 0, got {value!r}")


def _top_rate(value: float) -> None:
    if not isinstance(value, int | float) or not 0 < value <= 1:
        raise XlingError(f"top_rate must be in (0, 1], got {value!r}; LAPE uses 0.01-0.05")


class JsonConfig:
    """`to_json` / `from_json` for the dataclasses below (unknown keys are refused)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Self:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise XlingError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**data)


@dataclass
class AlignLoraConfig(JsonConfig):
    """Activation-aligned LoRA (SPEC §6a).

    Minimises mean over pairs of ‖a_T(p_en) − a_T(p_l)‖² + λ‖a_T(p_en) − a_T^orig(p_en)‖²,
    a = the SAE's pooled activations at `target_layer` computed through the model being tuned,
    a^orig = the English activations the base run stored (absent rows = 0).
    """

    base_run: int
    """Run whose model, SAE at the target layer, pooling and stored activations are used."""
    target_layer: int
    """T: the layer whose pooled SAE activations are aligned; LoRA goes on layers 0..T."""
    out: str
    """Directory the peft adapter is saved to (must not hold an adapter already)."""
    langs: list[str] | None = None
    """Languages paired with English; None = every non-English language of the corpus."""
    lam: float = 1.0
    """λ: weight of the English-retention term."""
    rank: int = 8
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))
    """Module names LoRA wraps inside each decoder block."""
    steps: int = 100
    """Optimisation steps (one batch of aligned pairs each)."""
    lr: float = 2e-4
    """AdamW learning rate of the LoRA weights."""
    batch_size: int = 8
    """Aligned pairs per step."""
    stat: str = "max"
    """Pooled statistic aligned: `max` (act_max, the default stat of every view) or `mean`."""
    max_length: int = 128
    """Tokens kept per phrase (longer phrases are cut)."""
    gradient: str = "straight-through"
    """How gradients cross the SAE's activation: `exact` (autograd; a feature below its
    threshold gets none) or `straight-through` (the loss is unchanged, the gradient is that of
    the pre-activation, so features can be switched on and back on)."""
    seed: int = 0
    """Seeds LoRA initialisation and the order of pairs."""
    device: str | None = None
    """Device to train on; None = the base run's."""
    normalize: str = "none"
    """`none`: the paper's loss as written. `en-norm`: each pair's two terms divided by
    ‖a_T^orig(p_en)‖², the squared norm of its English phrase's stored activations (a relative
    squared error: every pair weighs the same, and the loss is O(1) at every layer)."""
    lora_layers: list[int] | None = None
    """Blocks whose projections carry LoRA; None = 0..T. Must all be ≤ T (the forward stops
    after block T)."""
    split: int | None = None
    """Train only on the 'train' groups of this split (`split_groups`); None = every group."""

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise XlingError(
                f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}"
            )
        if self.lora_layers is not None:
            if not self.lora_layers:
                raise XlingError("lora_layers is empty; name at least one block or pass None")
            bad = [layer for layer in self.lora_layers if not 0 <= layer <= self.target_layer]
            if bad:
                raise XlingError(
                    f"LoRA layers {bad} are outside 0-{self.target_layer}: blocks above the "
                    "target layer do not run during alignment"
                )
        if self.target_layer < 0:
            raise XlingError(f"target layer must be ≥ 0, got {self.target_layer}")
        if self.gradient not in GRADIENTS:
            raise XlingError(
                f"gradient must be one of {', '.join(GRADIENTS)}, got {self.gradient!r}"
            )
        if self.stat not in STATS:
            raise XlingError(f"stat must be one of {', '.join(STATS)}, got {self.stat!r}")
        _non_negative_finite("lambda", self.lam)
        for name in ("rank", "steps", "batch_size", "max_length"):
            _positive(name, getattr(self, name), integer=True)
        _positive("alpha", self.alpha)
        _positive("lr", self.lr)
        if not 0 <= self.dropout < 1:
            raise XlingError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise XlingError("target_modules is empty; name at least one projection")
        if self.langs is not None:
            if not self.langs:
                raise XlingError("langs is empty; name languages or pass 'all'")
            if "en" in self.langs:
                raise XlingError("'en' is the reference language; pair it with other languages")
        if not str(self.out).strip():
            raise XlingError("out is empty; pass a directory with --out")


@dataclass
class SubnetworkConfig(JsonConfig):
    """Language-subnetwork tuning (SPEC §6b): only the LAPE neurons of `lang` train.

    For each selected neuron j of layer L, row j of gate_proj and up_proj and column j of
    down_proj train on the causal-LM loss over `lang`'s phrases; every other weight stays
    bit-identical. Optimiser as the subnetwork paper's code: AdamW, lr 1e-4, weight decay
    0.01 (on the selected rows only), gradient clipping at 1.0.
    """

    run: int
    """Run made with `--neurons` whose neuron LAPE selects the neurons (and whose model trains)."""
    lang: str
    """Language whose neurons train and whose phrases are the training text."""
    out: str
    """Delta file (`.safetensors`) or directory to hold `subnetwork.safetensors`."""
    top_rate: float = 0.01
    """LAPE top rate: fraction of lowest-entropy neurons that are language-specific."""
    steps: int = 100
    """Optimisation steps."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to the selected rows and columns only."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    batch_size: int = 8
    """Phrases per step."""
    max_length: int = 128
    """Tokens kept per phrase."""
    seed: int = 0
    """Seeds the order of phrases."""
    device: str | None = None
    """Device to train on; None = the run's."""
    split: int | None = None
    """Train only on the phrases of this split's 'train' groups; None = every phrase."""

    def __post_init__(self) -> None:
        if not self.lang or not self.lang.strip():
            raise XlingError("lang is empty; pass a language code with --lang")
        _top_rate(self.top_rate)
        for name in ("steps", "batch_size", "max_length"):
            _positive(name, getattr(self, name), integer=True)
        _positive("lr", self.lr)
        _positive("max_grad_norm", self.max_grad_norm)
        _non_negative_finite("weight_decay", self.weight_decay)
        if not str(self.out).strip():
            raise XlingError("out is empty; pass a path with --out")


@dataclass
class NeuronSteerConfig(JsonConfig):
    """Steer a language's LAPE neurons: act_fn(gate_proj(x)) of the chosen layers.

    Modes (α = `alpha`; mean = the language's mean activation act_sum / n_tokens):
    `scale` multiplies by α, `replacement` sets to the mean, `additive` adds α × mean,
    `diffmean` adds α × (mean − mean of the other languages' means).
    """

    run: int
    """Run made with `--neurons` that supplies the LAPE neurons and mean activations."""
    lang: str
    """Language whose neurons are steered."""
    mode: str = "additive"
    """scale | replacement | additive | diffmean."""
    alpha: float = 1.0
    """α (unused by `replacement`)."""
    layers: list[int] | None = None
    """Layers whose neurons are steered; None = every layer holding some of them."""
    top_rate: float = 0.01
    """LAPE top rate used to select the neurons."""

    def __post_init__(self) -> None:
        if self.mode not in NEURON_MODES:
            raise XlingError(
                f"unknown steering mode {self.mode!r}; use one of {', '.join(NEURON_MODES)}"
            )
        if not isinstance(self.alpha, int | float) or not math.isfinite(self.alpha):
            raise XlingError(f"alpha must be a finite number, got {self.alpha!r}")
        _top_rate(self.top_rate)
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise XlingError(f"bad layer list {self.layers}; layers are 0-based")


@dataclass
class ResidualSteerConfig(JsonConfig):
    """Add α · (mean English residual − mean residual of `lang`) to the output of block `layer`.

    The means are over every phrase of the language in `run`'s `residuals` at that layer.
    """

    run: int
    """Run made with `--residuals` whose mean residuals define the direction."""
    lang: str
    """Language whose residuals are moved toward English."""
    layer: int
    """Block whose output (the residual stream at that layer) is steered."""
    alpha: float = 1.0
    """α: multiple of the difference of means that is added."""

    def __post_init__(self) -> None:
        if self.lang == "en":
            raise XlingError("the residual direction is English minus a language; pick --lang ≠ en")
        if self.layer < 0:
            raise XlingError(f"layer must be ≥ 0, got {self.layer}")
        if not isinstance(self.alpha, int | float) or not math.isfinite(self.alpha):
            raise XlingError(f"alpha must be a finite number, got {self.alpha!r}")
