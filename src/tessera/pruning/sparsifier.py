"""Masks on modules with torch.ao.pruning's lifecycle: ``prepare`` → ``step`` → ``squash_mask``.

``prepare(model)`` resolves the targets and attaches a mask parametrization (all ones) to each weight; ``step()``
recomputes every mask from the current weights with the layer's scheme; training in between only updates kept
weights; ``squash_mask()`` bakes the masks into plain weights and removes the parametrizations. The masks are
buffers, so they travel in ``model.state_dict()`` and in checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from tessera.errors import ConfigError
from tessera.pruning.budget import layer_masks
from tessera.pruning.targets import Target, attach_libraries, select_targets


class MaskParametrization(nn.Module):
    """weight -> weight * mask, with the mask as a buffer."""

    def __init__(self, shape: torch.Size):
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def original_weight(module: nn.Module) -> torch.Tensor:
    """The trainable weight, whether or not a mask is attached."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


class Sparsifier:
    """Applies per-layer schemes as masks.

    >>> from tessera.models import create_model
    >>> m = create_model("vgg_tiny")
    >>> s = Sparsifier([{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern", "num_patterns": 4})
    >>> _ = s.prepare(m); s.step(); int(s.masks()["features.3"].sum(dim=(2, 3)).unique().item())
    4
    """

    def __init__(self, targets: Sequence[Mapping], defaults: Mapping | None = None):
        self.config = [dict(t) for t in targets]
        self.defaults = dict(defaults or {})
        self.targets: list[Target] = []
        self.model: nn.Module | None = None

    def select(self, model: nn.Module) -> list[Target]:
        """Resolve targets and pattern libraries without touching the model (ADMM needs them before masking)."""
        if not self.targets:
            self.targets = attach_libraries(select_targets(model, self.config, self.defaults))
            self.model = model
        return self.targets

    def prepare(self, model: nn.Module) -> Sparsifier:
        self.select(model)
        for t in self.targets:
            if not parametrize.is_parametrized(t.module, "weight"):
                parametrize.register_parametrization(t.module, "weight", MaskParametrization(t.module.weight.shape))
        return self

    def _require(self) -> None:
        if self.model is None:
            raise ConfigError("call prepare(model) before step() or squash_mask()")

    @torch.no_grad()
    def step(self) -> None:
        """Recompute every mask from the current weights."""
        self._require()
        weights = [original_weight(t.module) for t in self.targets]
        for t, m in zip(self.targets, layer_masks([t.scheme for t in self.targets], weights), strict=True):
            t.module.parametrizations.weight[0].mask.copy_(m)

    def masks(self) -> dict[str, torch.Tensor]:
        self._require()
        return {t.name: t.module.parametrizations.weight[0].mask.clone() for t in self.targets}

    @torch.no_grad()
    def squash_mask(self) -> nn.Module:
        """Bake masks into the weights and remove the parametrizations; returns the plain pruned model."""
        self._require()
        for t in self.targets:
            if parametrize.is_parametrized(t.module, "weight"):
                parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=True)
        return self.model


def prune_oneshot(model: nn.Module, targets: Sequence[Mapping], defaults: Mapping | None = None) -> nn.Module:
    """One-shot pruning without training: prepare, one mask step from the current weights, squash.

    >>> from tessera.models import create_model
    >>> m = prune_oneshot(create_model("vgg_tiny"), [{"op": "Conv2d"}], {"scheme": "magnitude", "keep": 0.5})
    >>> round(float((m.features[0].weight != 0).float().mean()), 2)
    0.5
    """
    s = Sparsifier(targets, defaults)
    s.prepare(model)
    s.step()
    return s.squash_mask()
