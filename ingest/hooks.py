"""Hooks on a HF causal LM's decoder blocks: read or edit the residual stream and MLP neurons.

Layer L is the output of decoder block L (0-based), TransformerLens `blocks.L.hook_resid_post`
(SPEC §3). HF's `hidden_states[L+1]` equals it for every block but the last, which HF returns
after the final norm; reading the blocks' outputs avoids that trap.

    base_model(model)                     the decoder stack without the LM head (model.model)
    decoder_layers(model)                 its blocks, an nn.ModuleList
    capture_blocks(model, layers)         context manager -> {layer: resid_post [B, T, d_model]}
    capture_mlp_acts(model, layers)       context manager -> {layer: act_fn(gate_proj(x)) [B, T, d_mlp]}
    edit_block(model, layer, fn)          context manager: block output replaced by fn(output)
    forward_blocks(model, ids, mask, last_layer)   runs the stack, stopping after `last_layer`
    pad_right(token_lists, pad_id, device) -> (input_ids, attention_mask)

Fine-tuning, steering and benchmarks reuse these, so they hold no ingest-specific logic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import torch
    from torch import nn


class _StopForward(Exception):
    """Raised from a hook once every needed block has run; skips the blocks after it."""


def base_model(model: nn.Module) -> nn.Module:
    """The model without its LM head: what `AutoModel` would return for a causal LM."""
    inner = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return inner if inner is not None else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a HF causal LM, in order (Llama/Gemma/Qwen, GPT-2, OPT, NeoX)."""
    from torch import nn

    base = base_model(model)
    for path in ("layers", "h", "decoder.layers", "model.layers", "language_model.layers"):
        obj: object = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise XlingError(
        f"cannot find the decoder blocks of {type(model).__name__}; xling supports "
        "Llama/Gemma-style (model.layers), GPT-2-style (h) and OPT-style (decoder.layers) models"
    )


def _hidden(output: object) -> torch.Tensor:
    """A block's output hidden states: transformers 5 returns a tensor, older ones a tuple."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


@contextlib.contextmanager
def capture_blocks(
    model: nn.Module, layers: Sequence[int], *, detach: bool = True
) -> Iterator[dict[int, torch.Tensor]]:
    """Record each listed block's output (resid_post) during forward passes in the block.

    The dict is filled (and overwritten) on every forward pass; `detach=False` keeps the
    graph for training losses.
    """
    blocks = decoder_layers(model)
    out: dict[int, torch.Tensor] = {}
    handles = []

    def hook_for(layer: int):
        def hook(_module, _inputs, output):
            h = _hidden(output)
            out[layer] = h.detach() if detach else h

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(hook_for(layer)))
        yield out
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_mlp_acts(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record act_fn(gate_proj(x)) of each listed block's gated MLP, the neurons LAPE counts."""
    blocks = decoder_layers(model)
    out: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        mlp = getattr(blocks[layer], "mlp", None)
        if mlp is None or not hasattr(mlp, "gate_proj") or not hasattr(mlp, "act_fn"):
            raise XlingError(
                f"block {layer} of {type(model).__name__} has no gated MLP (mlp.gate_proj, "
                "mlp.act_fn); --neurons needs a Llama/Gemma-style MLP"
            )

        def hook(_module, _inputs, output, layer=layer, act_fn=mlp.act_fn):
            # Applying act_fn again costs one elementwise op and works whether or not a
            # model shares one activation module between blocks.
            out[layer] = act_fn(output.detach())

        handles.append(mlp.gate_proj.register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def edit_block(
    model: nn.Module, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace block `layer`'s output hidden states by `fn(hidden)` (steering, ablations)."""
    block = decoder_layers(model)[layer]

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _stop_after(model: nn.Module, layer: int) -> Iterator[None]:
    def hook(*_args):
        raise _StopForward

    # Registered last, so the capture hooks on the same block run first.
    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def forward_blocks(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    last_layer: int | None = None,
) -> None:
    """Run the decoder stack (no LM head) on a batch; with `last_layer`, stop after that block.

    Use inside `capture_blocks` / `capture_mlp_acts`: the outputs arrive through the hooks.
    """
    import torch

    base = base_model(model)
    n_layers = len(decoder_layers(model))
    stop = last_layer is not None and last_layer < n_layers - 1
    ctx = _stop_after(model, last_layer) if stop else contextlib.nullcontext()
    with torch.inference_mode(), ctx, contextlib.suppress(_StopForward):
        base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def pad_right(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> right-padded input_ids and attention_mask [B, T].

    Right padding keeps every real token at its unpadded position, so with causal attention
    its hidden states equal those of the phrase run alone (left padding shifts positions).
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)
