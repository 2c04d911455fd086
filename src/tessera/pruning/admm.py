"""ADMM pruning (Zhang et al. 2018; PatDNN): train W while pulling it toward a sparse Z.

Per constrained layer: Z = Π(W + U) (the scheme's Euclidean projection), U += W − Z, and the loss gains
ρ/2 ‖W − Z + U‖². ρ grows geometrically at each update so the weights settle on the constraint set; then the
layer is hard-masked with the scheme's mask of W and retrained. The projections are the pure functions in
``tessera.sparsity``; this file only keeps the auxiliary state and implements the trainer hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tessera.errors import ConfigError
from tessera.pruning.sparsifier import original_weight
from tessera.pruning.targets import Target


@dataclass
class ADMMConfig:
    rho: float = 2e-3
    rho_growth: float = 1.5
    rho_max: float = 0.1
    updates_per_epoch: int = 2

    def __post_init__(self) -> None:
        if self.rho <= 0 or self.rho_growth < 1 or self.rho_max < self.rho or self.updates_per_epoch < 1:
            raise ConfigError("admm needs rho > 0, rho_growth >= 1, rho_max >= rho and updates_per_epoch >= 1")


class ADMM:
    """Trainer hook holding Z, U and ρ for each target; ``steps_per_epoch`` sets when Z and U update."""

    def __init__(self, targets: list[Target], config: ADMMConfig, steps_per_epoch: int):
        self.targets, self.cfg = targets, config
        self.every = max(1, steps_per_epoch // config.updates_per_epoch)
        self.rho = config.rho
        self.step_count = 0
        self.history: list[dict] = []
        with torch.no_grad():
            self.Z = [self._project(original_weight(t.module), t) for t in targets]
            self.U = [torch.zeros_like(z) for z in self.Z]

    @staticmethod
    def _project(w: torch.Tensor, t: Target) -> torch.Tensor:
        w = w.detach()
        return w * t.scheme.mask(w)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = 0.0
        for t, z, u in zip(self.targets, self.Z, self.U, strict=True):
            total = total + (original_weight(t.module) - z + u).square().sum()
        return 0.5 * self.rho * total

    @torch.no_grad()
    def update(self) -> dict:
        """One dual step for every layer; returns the primal residual ‖W − Z‖ / ‖W‖ (how far from sparse)."""
        num, den = 0.0, 0.0
        for i, t in enumerate(self.targets):
            w = original_weight(t.module).detach()
            self.Z[i] = self._project(w + self.U[i], t)
            self.U[i] += w - self.Z[i]
            num += float((w - self.Z[i]).square().sum())
            den += float(w.square().sum())
        self.rho = min(self.rho * self.cfg.rho_growth, self.cfg.rho_max)
        rec = {"step": self.step_count, "rho": self.rho, "residual": (num / max(den, 1e-30)) ** 0.5}
        self.history.append(rec)
        return rec

    def after_step(self) -> None:
        self.step_count += 1
        if self.step_count % self.every == 0:
            self.update()

    # -- checkpoint hooks -------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"Z.{i}": z for i, z in enumerate(self.Z)} | {f"U.{i}": u for i, u in enumerate(self.U)}
        return tensors, {"rho": self.rho, "step_count": self.step_count, "history": self.history}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.Z = [tensors[f"Z.{i}"].clone() for i in range(len(self.targets))]
        self.U = [tensors[f"U.{i}"].clone() for i in range(len(self.targets))]
        self.rho, self.step_count, self.history = meta["rho"], meta["step_count"], meta["history"]
