"""Connectivity pruning: remove whole kernels (input-output channel connections) of a conv layer.

Kernels are ranked by an importance score (by default the L2 norm of the kernel, or of what a pattern keeps of it);
the top ``round(keep * count)`` survive, over the whole layer or within each filter.
"""

from __future__ import annotations

import torch

from tessera.errors import ConfigError, ShapeError


def check_keep(keep: float, what: str = "keep") -> float:
    """Validate a kept fraction in (0, 1]."""
    try:
        keep = float(keep)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1], got {keep!r}") from None
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"{what} must be in (0, 1] (the fraction of weights kept), got {keep}")
    return keep


def topk_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask keeping exactly ``count`` largest entries of ``scores`` (ties broken by position, stable)."""
    flat = scores.reshape(-1)
    count = max(0, min(int(count), flat.numel()))
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    if count:
        order = torch.sort(flat.double(), descending=True, stable=True).indices
        out[order[:count]] = True
    return out.reshape(scores.shape)


def kernel_norms(w: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm per kernel, shape (Cout, Cin)."""
    if w.dim() != 4:
        raise ShapeError(f"connectivity pruning needs a 4-D conv weight, got shape {tuple(w.shape)}")
    return w.detach().float().square().sum(dim=(2, 3))


def connectivity_keep_mask(
    scores: torch.Tensor, keep: float, per_filter: bool = False
) -> torch.Tensor:
    """Which kernels survive, (Cout, Cin) bool, given per-kernel importance ``scores`` (Cout, Cin)."""
    keep = check_keep(keep)
    cout, cin = scores.shape
    if per_filter:
        count = max(1, round(keep * cin))
        return torch.stack([topk_mask(scores[o], count) for o in range(cout)])
    return topk_mask(scores, round(keep * cout * cin))


def connectivity_mask(w: torch.Tensor, keep: float, per_filter: bool = False) -> torch.Tensor:
    """Bool mask of w's shape keeping the ``round(keep * kernels)`` kernels of largest L2 norm, whole kernels only.

    >>> w = torch.arange(1.0, 9.0).reshape(2, 4, 1, 1)
    >>> connectivity_mask(w, 0.25).flatten().tolist()
    [False, False, False, False, False, False, True, True]
    """
    kept = connectivity_keep_mask(kernel_norms(w), keep, per_filter)
    return kept[:, :, None, None].expand_as(w).clone()
