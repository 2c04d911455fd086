"""Target lists for networks as they are deployed: the seeds' choice per layer kind (PatDNN's patterns and
connectivity on 3x3 convs, unaligned 1x4 blocks on 1x1 convs and Linear layers), the stem and squeeze-excitation
left dense, depthwise and grouped convs untouched (no entry names ``groups``)."""

from __future__ import annotations

from torch import nn


def deployment_targets(stem: str | None = None, num_patterns: int = 8, kernel_keep: float = 1 / 3.6,
                       block_n: int = 4, block_keep: float = 0.2, exclude: str = r".*\.se\..*") -> list[dict]:
    """Sparsifier targets: 3x3 convs ``num_patterns`` patterns with ``kernel_keep`` of their kernels, 1x1 convs
    and Linear layers N x 1 blocks keeping ``block_keep``; ``stem`` (a layer-name regex) skipped; ``exclude``
    (squeeze-excitation's tiny 1x1s by default) left dense."""
    targets = [
        {"op": "Conv2d", "kernel": 3, "scheme": "pattern_connectivity", "num_patterns": num_patterns,
         "keep": kernel_keep},
        {"op": "Conv2d", "kernel": 1, "scheme": "block", "n": block_n, "keep": block_keep, "method": "bed",
         "exclude": exclude},
        {"op": "Linear", "scheme": "block", "n": block_n, "keep": block_keep, "method": "bed"},
    ]
    if stem:
        targets.append({"name": stem, "skip": True})
    return targets


def prune_for_deployment(model: nn.Module, stem: str | None = None, **kwargs) -> nn.Module:
    """One-shot magnitude pruning with :func:`deployment_targets` (no training): the sparsity a compiler
    benchmark needs, not an accurate model; retrain with a recipe for that."""
    from tessera.pruning.sparsifier import Sparsifier

    s = Sparsifier(targets=deployment_targets(stem, **kwargs))
    s.prepare(model)
    s.step()
    return s.squash_mask().eval()
