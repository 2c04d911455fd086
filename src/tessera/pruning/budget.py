"""Masks for a set of layers at once: the place where a budget shared across layers is resolved.

Per-layer schemes mask each weight alone. Block schemes with ``budget: global`` pool their blocks: the total is
what each layer would keep on its own, split across layers by global ranking (``allocate_blocks``), then each
layer is masked with its share. Keep-fraction schemes with ``budget: erk`` pool their kept weights and split them
by the Erdős–Rényi-Kernel rule (``erk_keep``: thin layers denser, wide ones sparser, same total); that split
depends on shapes only, so it is the same at every step. Every mask computation in training (one-shot, gradual,
ADMM) goes through here.
"""

from __future__ import annotations

import dataclasses

import torch

from tessera.sparsity import Scheme
from tessera.sparsity.allocation import erk_keep
from tessera.sparsity.blocks import allocate_blocks
from tessera.sparsity.schemes import BlockScheme


def resolve_budgets(schemes: list[Scheme], weights: list[torch.Tensor]) -> list[Scheme]:
    """The schemes with shared budgets turned into per-layer ones: global block budgets into explicit block
    counts, ERK budgets into per-layer kept fractions."""
    out = list(schemes)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(schemes):
        if isinstance(s, BlockScheme) and s.budget == "global":
            groups.setdefault(s.n, []).append(i)
    erk = [i for i, s in enumerate(schemes) if not isinstance(s, BlockScheme) and getattr(s, "budget", "") == "erk"]
    if erk:
        sizes = [weights[i].numel() for i in erk]
        overall = sum(schemes[i].keep * n for i, n in zip(erk, sizes, strict=True)) / sum(sizes)
        for i, k in zip(erk, erk_keep([tuple(weights[i].shape) for i in erk], overall), strict=True):
            out[i] = dataclasses.replace(schemes[i], budget="layer", keep=k)
    for n, idx in groups.items():
        local = [dataclasses.replace(schemes[i], budget="layer", blocks=None) for i in idx]
        total = sum(s.num_blocks(weights[i]) for s, i in zip(local, idx, strict=True))
        counts = allocate_blocks([s.scores(weights[i]) for s, i in zip(local, idx, strict=True)], n, total)
        for s, i, k in zip(local, idx, counts, strict=True):
            out[i] = dataclasses.replace(s, blocks=k)
    return out


def layer_masks(schemes: list[Scheme], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's mask, with shared budgets resolved first."""
    return [s.mask(w) for s, w in zip(resolve_budgets(schemes, weights), weights, strict=True)]
