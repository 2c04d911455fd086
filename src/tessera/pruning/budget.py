"""Masks for a set of layers at once: the place where a budget shared across layers is resolved.

Per-layer schemes mask each weight alone. Block schemes with ``budget: global`` pool their blocks: the total is
what each layer would keep on its own, split across layers by global ranking (``allocate_blocks``), then each
layer is masked with its share. Every mask computation in training (one-shot, gradual, ADMM) goes through here.
"""

from __future__ import annotations

import dataclasses

import torch

from tessera.sparsity import Scheme
from tessera.sparsity.blocks import allocate_blocks
from tessera.sparsity.schemes import BlockScheme


def resolve_budgets(schemes: list[Scheme], weights: list[torch.Tensor]) -> list[Scheme]:
    """The schemes with global block budgets turned into explicit per-layer block counts."""
    out = list(schemes)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(schemes):
        if isinstance(s, BlockScheme) and s.budget == "global":
            groups.setdefault(s.n, []).append(i)
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
