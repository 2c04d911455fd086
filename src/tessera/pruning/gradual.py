"""Gradual magnitude-style pruning (Zhu & Gupta 2017): the kept fraction falls on a cubic schedule while training.

keep(t) = keep_final + (1 - keep_final) * (1 - t/T)^3, re-selected every few steps with the layer's own scheme, so
block selection (aligned, optimal, BED) re-runs inside training as UBP prescribes. Schemes without a ``keep``
parameter (patterns, N:M) are applied at full strength from the first step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge, Interval

from tessera.errors import ConfigError
from tessera.pruning.budget import layer_masks
from tessera.pruning.sparsifier import Sparsifier, original_weight


@dataclass
class GradualConfig:
    __pydantic_config__ = {"extra": "forbid"}  # recipes are validated against these hints
    updates_per_epoch: Annotated[int, Ge(1)] = 4
    end_fraction: Annotated[float, Interval(gt=0, le=1)] = 0.75  # the final keep is reached here, then held

    def __post_init__(self) -> None:
        if self.updates_per_epoch < 1 or not 0 < self.end_fraction <= 1:
            raise ConfigError("gradual needs updates_per_epoch >= 1 and 0 < end_fraction <= 1")


def cubic_keep(final: float, progress: float) -> float:
    """Kept fraction at ``progress`` in [0, 1] of the pruning ramp.

    >>> cubic_keep(0.2, 0.0), cubic_keep(0.2, 1.0), round(cubic_keep(0.2, 0.5), 3)
    (1.0, 0.2, 0.3)
    """
    p = min(max(progress, 0.0), 1.0)
    return final + (1.0 - final) * (1.0 - p) ** 3


class GradualPruner:
    """Trainer hook: updates a prepared Sparsifier's masks on the cubic schedule."""

    def __init__(self, sparsifier: Sparsifier, config: GradualConfig, steps_per_epoch: int, epochs: int):
        self.s, self.cfg = sparsifier, config
        self.every = max(1, steps_per_epoch // config.updates_per_epoch)
        self.ramp = max(1, int(epochs * steps_per_epoch * config.end_fraction))
        self.step_count = 0
        self.final = [t.scheme for t in sparsifier.targets]
        self.apply()

    def current_schemes(self):
        progress = self.step_count / self.ramp
        out = []
        for sch in self.final:
            if hasattr(sch, "keep"):
                sch = dataclasses.replace(sch, keep=cubic_keep(sch.keep, progress))
            out.append(sch)
        return out

    @torch.no_grad()
    def apply(self) -> None:
        weights = [original_weight(t.module) for t in self.s.targets]
        for t, m in zip(self.s.targets, layer_masks(self.current_schemes(), weights), strict=True):
            t.module.parametrizations.weight[0].mask.copy_(m)

    def after_step(self) -> None:
        self.step_count += 1
        if self.step_count % self.every == 0 and self.step_count <= self.ramp + self.every:
            self.apply()

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {"step_count": self.step_count}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if not isinstance(meta["step_count"], int) or meta["step_count"] < 0:
            raise ValueError(f"gradual pruning's step count is {meta['step_count']!r}")
        self.step_count = meta["step_count"]
