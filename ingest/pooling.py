"""Pooling per SPEC §3: over a phrase's real tokens (padding never, BOS only when asked).

    pool_mask(input_ids, attention_mask, bos_id, include_bos) -> [B, T] bool, tokens to pool
    sparse_feature_rows(feats [B, T, F], mask) -> (b, f, act_mean, act_max, n_active), nonzero only
    mean_pool(hidden [B, T, D], mask) -> [B, D]
    neuron_counts(acts [B, T, N], mask, lang_index [B], n_langs) -> per-language tokens, positives, sums

All tensor ops, on whatever device the inputs live on; nothing leaves it until rows are built.
act_mean is the mean over all pooled tokens (zeros included), act_max the max, n_active the
number of pooled tokens where the feature is > 0. A feature with n_active = 0 has no row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pool_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, bos_id: int | None, include_bos: bool
) -> torch.Tensor:
    """Tokens to pool: real (attention mask) and, unless `include_bos`, not a leading BOS."""
    mask = attention_mask.bool()
    if include_bos or bos_id is None:
        return mask
    # Right-padded batches start every row at position 0; only a leading BOS is dropped.
    mask = mask.clone()
    mask[:, 0] &= input_ids[:, 0] != bos_id
    return mask


def sparse_feature_rows(
    feats: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled SAE activations of a batch as sparse rows.

    feats_btf: SAE feature activations [B, T, F] (non-negative, as every sae-lens encoder gives);
    mask: [B, T] tokens to pool. Returns row tensors (batch index, feature, act_mean, act_max,
    n_active) for the (phrase, feature) pairs that fired on at least one pooled token.
    """
    import torch

    acts = feats.masked_fill(~mask.unsqueeze(-1), 0)
    n_tokens = mask.sum(1, keepdim=True).clamp(min=1)
    counts = (acts > 0).sum(1)  # [B, F]
    b, f = counts.nonzero(as_tuple=True)
    # One gather of the stacked statistics instead of one per statistic.
    stats = torch.stack([acts.sum(1) / n_tokens, acts.amax(1), counts.to(acts.dtype)], -1)[b, f]
    return b, f, stats[:, 0], stats[:, 1], stats[:, 2]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` [B, T, D] over the pooled tokens of each row -> [B, D]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)


def neuron_counts(
    acts: torch.Tensor, mask: torch.Tensor, lang_index: torch.Tensor, n_langs: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-language LAPE statistics of one layer's MLP neurons over pooled tokens.

    acts: act_fn(gate_proj(x)) [B, T, N]; lang_index: [B] language slot of each phrase.
    Returns n_tokens [n_langs], n_positive [n_langs, N] and act_sum [n_langs, N] (float64).
    """
    import torch

    m = mask.unsqueeze(-1)
    positive = ((acts > 0) & m).sum(1).to(torch.int64)  # [B, N]
    sums = acts.masked_fill(~m, 0).sum(1).to(torch.float64)  # [B, N]
    n_pos = torch.zeros(n_langs, acts.shape[-1], dtype=torch.int64, device=acts.device)
    act_sum = torch.zeros(n_langs, acts.shape[-1], dtype=torch.float64, device=acts.device)
    n_tok = torch.zeros(n_langs, dtype=torch.int64, device=acts.device)
    n_pos.index_add_(0, lang_index, positive)
    act_sum.index_add_(0, lang_index, sums)
    n_tok.index_add_(0, lang_index, mask.sum(1).to(torch.int64))
    return n_tok, n_pos, act_sum
