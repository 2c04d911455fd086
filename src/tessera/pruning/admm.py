"""ADMM pruning (Zhang et al. 2018; PatDNN): train W while pulling it toward a sparse Z.

Per constrained layer: Z = Π(W + U) (the scheme's Euclidean projection), U += W − Z, and the loss gains
ρ/2 ‖W − Z + U‖². ρ grows geometrically at each update so the weights settle on the constraint set; then the
layer is hard-masked with the scheme's mask of W and retrained. The projections are the pure functions in
``tessera.sparsity``; this file only keeps the auxiliary state and implements the trainer hooks.

Learned pattern libraries (ECCV 2020): a pattern scheme whose library holds more patterns than its
``num_patterns`` (e.g. all 56 candidates, recipe ``library: learn``) is shrunk inside this loop. Before each
Z-update the patterns' usage on W + U (kept energy of the kernels choosing them) is counted, the least useful are
dropped down to the size the schedule allows, and Z is projected onto the smaller library; the library reaches
``num_patterns`` halfway through and stays there, so connectivity, duals and weights adapt to the final set.
``library_scope`` "model" shares one library by all layers with the same K, "layer" learns one per layer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt
from torch import nn

from tessera.errors import ConfigError
from tessera.pruning.budget import layer_masks
from tessera.pruning.sparsifier import original_weight
from tessera.pruning.targets import Target
from tessera.sparsity import PatternLibrary
from tessera.sparsity.patterns import pattern_usage, shrink_library, shrink_schedule


@dataclass
class ADMMConfig:
    __pydantic_config__ = {"extra": "forbid"}  # recipes are validated against these hints
    rho: Annotated[float, Gt(0)] = 2e-3
    rho_growth: Annotated[float, Ge(1)] = 1.5
    rho_max: Annotated[float, Gt(0)] = 0.1
    updates_per_epoch: Annotated[int, Ge(1)] = 2
    library_scope: Literal["model", "layer"] = "model"  # learned libraries: shared or one per layer

    def __post_init__(self) -> None:
        if self.rho <= 0 or self.rho_growth < 1 or self.rho_max < self.rho or self.updates_per_epoch < 1:
            raise ConfigError("admm needs rho > 0, rho_growth >= 1, rho_max >= rho and updates_per_epoch >= 1")
        if self.library_scope not in ("model", "layer"):
            raise ConfigError(f"admm.library_scope must be 'model' or 'layer', got {self.library_scope!r}")


class ADMM:
    """Trainer hook holding Z, U and ρ for each target; ``steps_per_epoch`` sets when Z and U update."""

    def __init__(self, targets: list[Target], config: ADMMConfig, steps_per_epoch: int, epochs: int = 1):
        self.targets, self.cfg = list(targets), config
        self.every = max(1, steps_per_epoch // config.updates_per_epoch)
        self.rho = config.rho
        self.step_count = 0
        self.updates = 0
        self.history: list[dict] = []
        self.total_updates = max(1, epochs * steps_per_epoch // self.every)
        with torch.no_grad():
            ws = [original_weight(t.module).detach() for t in targets]
            self.Z = [w * m for w, m in zip(ws, layer_masks([t.scheme for t in targets], ws), strict=True)]
            self.U = [torch.zeros_like(z) for z in self.Z]

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = 0.0
        for t, z, u in zip(self.targets, self.Z, self.U, strict=True):
            total = total + (original_weight(t.module) - z + u).square().sum()
        return 0.5 * self.rho * total

    # -- learned libraries ----------------------------------------------------------------------------------------
    def _learning_groups(self) -> list[list[int]]:
        """Indices of targets whose library is still larger than K, grouped by what shares a library."""
        groups: dict[object, list[int]] = {}
        for i, t in enumerate(self.targets):
            lib = getattr(t.scheme, "library", None)
            if lib is None or len(lib) <= t.scheme.num_patterns:
                continue
            key = i if self.cfg.library_scope == "layer" else (t.scheme.num_patterns, lib.to_json())
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _shrink_libraries(self) -> None:
        for group in self._learning_groups():
            t0 = self.targets[group[0]]
            lib, k = t0.scheme.library, t0.scheme.num_patterns
            size = shrink_schedule(len(lib), k, max(1, self.total_updates - self.updates))[0]
            ws = [original_weight(self.targets[i].module).detach() + self.U[i] for i in group]
            new = shrink_library(lib, pattern_usage(ws, lib), size)
            for i in group:
                self.targets[i] = dataclasses.replace(self.targets[i],
                                                      scheme=self.targets[i].scheme.with_library(new))

    def libraries(self) -> dict[str, list[list[int]]]:
        """Current library of every pattern layer, as kept-index lists (JSON-ready)."""
        return {t.name: json.loads(t.scheme.library.to_json()) for t in self.targets
                if getattr(t.scheme, "library", None) is not None}

    @torch.no_grad()
    def update(self) -> dict:
        """One dual step for every layer; returns the primal residual ‖W − Z‖ / ‖W‖ (how far from sparse)."""
        self._shrink_libraries()
        self.updates += 1
        num, den = 0.0, 0.0
        ws = [original_weight(t.module).detach() for t in self.targets]
        vs = [w + u for w, u in zip(ws, self.U, strict=True)]
        masks = layer_masks([t.scheme for t in self.targets], vs)  # Z = Π(W + U), budgets shared where asked
        for i, w in enumerate(ws):
            self.Z[i] = vs[i] * masks[i]
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
        return tensors, {"rho": self.rho, "step_count": self.step_count, "updates": self.updates,
                         "history": self.history, "libraries": self.libraries()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Raises ValueError / KeyError on state that is not this job's (the trainer turns it into one line)."""
        ws = [original_weight(t.module) for t in self.targets]
        for key in ("Z", "U"):
            for i, w in enumerate(ws):
                t = tensors[f"{key}.{i}"]
                if t.shape != w.shape or t.dtype != w.dtype:
                    raise ValueError(f"ADMM {key}.{i} is {t.dtype} {tuple(t.shape)}, the layer {tuple(w.shape)}")
        rho, steps, updates = meta["rho"], meta["step_count"], meta.get("updates", 0)
        if not (isinstance(rho, int | float) and rho > 0 and isinstance(steps, int) and isinstance(updates, int)
                and isinstance(meta["history"], list)):
            raise ValueError("ADMM's rho, step count or history is not a number / list")
        self.Z = [tensors[f"Z.{i}"].to(w.device).clone() for i, w in enumerate(ws)]
        self.U = [tensors[f"U.{i}"].to(w.device).clone() for i, w in enumerate(ws)]
        self.rho, self.step_count, self.history, self.updates = float(rho), steps, meta["history"], updates
        libs = meta.get("libraries", {})
        for i, t in enumerate(self.targets):
            if t.name in libs:
                lib = PatternLibrary.from_json(json.dumps(libs[t.name]))
                self.targets[i] = dataclasses.replace(t, scheme=t.scheme.with_library(lib))
