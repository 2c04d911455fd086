"""Element-wise baselines: unstructured magnitude pruning and N:M (keep N of every M consecutive weights)."""

from __future__ import annotations

import torch

from tessera.errors import ConfigError, ShapeError
from tessera.sparsity.connectivity import check_keep, topk_mask


def magnitude_mask(w: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the ``round(keep * numel)`` weights of largest magnitude (unstructured; no speed on real hardware).

    >>> magnitude_mask(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5).tolist()
    [False, True, True, False]
    """
    keep = check_keep(keep)
    return topk_mask(w.detach().abs(), round(keep * w.numel()))


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M sparsity along the input dimension: in each group of M consecutive inputs of an output, keep N largest.

    For a conv weight the input dimension is Cin*kh*kw flattened in PyTorch's order, as sparse tensor cores use.
    """
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
        raise ConfigError(f"N:M needs integers 0 < n <= m, got n={n!r}, m={m!r}")
    if w.dim() < 2:
        raise ShapeError(f"N:M needs a weight with an output dimension, got shape {tuple(w.shape)}")
    rows = w.detach().reshape(w.shape[0], -1)
    if rows.shape[1] % m:
        raise ShapeError(f"N:M with m={m} needs the input size ({rows.shape[1]}) to be a multiple of {m}")
    groups = rows.abs().reshape(-1, m)
    idx = torch.sort(groups.double(), dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    return mask.reshape(w.shape)
