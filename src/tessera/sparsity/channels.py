"""Filter (output channel) pruning: the structured baseline that shrinks a layer instead of sparsifying it."""

from __future__ import annotations

import torch

from tessera.errors import ShapeError
from tessera.sparsity.connectivity import check_keep, topk_mask


def filter_mask(w: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the ``max(1, round(keep * Cout))`` filters of largest L2 norm; whole filters only."""
    keep = check_keep(keep)
    if w.dim() < 2:
        raise ShapeError(f"filter pruning needs a weight with an output dimension, got shape {tuple(w.shape)}")
    norms = w.detach().float().reshape(w.shape[0], -1).square().sum(1)
    kept = topk_mask(norms, max(1, round(keep * w.shape[0])))
    return kept.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
