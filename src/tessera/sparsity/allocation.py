"""How a network-wide kept fraction is split across layers.

A uniform split prunes a thin early layer (32x32 channels) as hard as a wide late one (128x128), although the thin
layer holds few weights and every later feature depends on it. The Erdős–Rényi-Kernel rule (RigL, Evci et al.
2020) keeps layer i at a density proportional to (sum of its dimensions) / (product of its dimensions): wide layers
are pruned harder, thin ones less, and the total number of kept weights equals the uniform split's. Densities that
would exceed 1 are fixed at 1 and the rest is re-spread over the other layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tessera.errors import ConfigError
from tessera.sparsity.connectivity import check_keep


def erk_keep(shapes: Sequence[Sequence[int]], keep: float) -> list[float]:
    """Per-layer kept fractions with ``sum(keep_i * numel_i) == keep * sum(numel_i)``, ERK-proportioned.

    >>> [round(k, 3) for k in erk_keep([(32, 32, 3, 3), (128, 128, 3, 3)], 0.25)]
    [0.896, 0.21]
    """
    keep = check_keep(keep)
    if not shapes:
        return []
    sizes = [math.prod(s) for s in shapes]
    if min(sizes) <= 0:
        raise ConfigError(f"ERK allocation needs non-empty layers, got shapes {list(map(tuple, shapes))}")
    raw = [sum(s) / n for s, n in zip(shapes, sizes, strict=True)]
    target = keep * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        if not free:
            break
        left = target - sum(sizes[i] for i in dense)
        scale = left / sum(raw[i] * sizes[i] for i in free)
        over = [i for i in free if raw[i] * scale > 1.0 + 1e-12]
        if not over:
            break
        dense.update(over)
    return [1.0 if i in dense else raw[i] * scale for i in range(len(sizes))]
