"""Sparsity schemes: one callable shape for every kind of sparsity, and a registry by name.

A scheme is a frozen dataclass whose ``mask(w)`` returns a bool tensor of ``w``'s shape. Because the mask is the
Euclidean projection onto the scheme's set, ``w * scheme.mask(w)`` is also the projection ADMM needs.
Schemes that use a pattern library get it either explicitly or, when ``library`` is None, from the pruning layer
(which extracts it from the model's trained weights) through :meth:`with_library`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from tessera.errors import ConfigError
from tessera.sparsity.channels import filter_mask
from tessera.sparsity.connectivity import check_keep, connectivity_mask
from tessera.sparsity.elementwise import magnitude_mask, nm_mask
from tessera.sparsity.patterns import (
    PatternLibrary,
    _check_3x3,
    grouped_pattern_connectivity_mask,
    pattern_connectivity_mask,
    pattern_mask,
)


@runtime_checkable
class Scheme(Protocol):
    name: ClassVar[str]

    def mask(self, w: torch.Tensor) -> torch.Tensor: ...

    def check(self, w: torch.Tensor) -> None: ...


_SCHEMES: dict[str, type] = {}


def register_scheme(cls: type) -> type:
    """Class decorator: register a scheme under ``cls.name``; a duplicate name is an error."""
    if cls.name in _SCHEMES:
        raise ConfigError(f"scheme {cls.name!r} is registered twice; rename one")
    _SCHEMES[cls.name] = cls
    return cls


def list_schemes() -> list[str]:
    return sorted(_SCHEMES)


def make_scheme(name: str, **params) -> Scheme:
    """Build a scheme from its name and parameters, e.g. ``make_scheme("pattern_connectivity", keep=0.28)``."""
    if name not in _SCHEMES:
        raise ConfigError(f"unknown scheme {name!r}; choose one of {list_schemes()}")
    cls = _SCHEMES[name]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"scheme {name!r} has no parameter {unknown[0]!r}; it takes {sorted(allowed)}")
    return cls(**params)


def check_budget(budget: str) -> None:
    """``budget`` of a keep-fraction scheme: "layer" keeps ``keep`` in every layer; "erk" keeps ``keep`` of all the
    "erk" layers' weights together, split by the Erdős–Rényi-Kernel rule (``tessera.sparsity.allocation``)."""
    if budget not in ("layer", "erk"):
        raise ConfigError(f"budget must be 'layer' or 'erk', got {budget!r}")


@dataclass(frozen=True)
class _KeepFraction:
    """Validation shared by the schemes that keep a fraction ``keep`` (each declares its own default), with its
    ``budget`` ("layer" or "erk")."""

    budget: str = "layer"

    def __post_init__(self) -> None:
        check_keep(self.keep)
        check_budget(self.budget)


class _NoShapeLimit:
    def check(self, w: torch.Tensor) -> None:
        self.mask(w[:1])  # cheap: raises the scheme's own ShapeError on a bad shape


@dataclass(frozen=True)
class _LibraryScheme:
    num_patterns: int = 8
    library: PatternLibrary | None = None

    def check(self, w: torch.Tensor) -> None:
        _check_3x3(w)

    def with_library(self, library: PatternLibrary) -> _LibraryScheme:
        return dataclasses.replace(self, library=library)

    def _library(self) -> PatternLibrary:
        if self.library is None:
            raise ConfigError(f"scheme {self.name!r} has no pattern library yet; prepare the model first")
        return self.library


@register_scheme
@dataclass(frozen=True)
class PatternScheme(_LibraryScheme):
    """Every kernel keeps its best 4-entry pattern from a K-pattern library (2.25x fewer weights)."""

    name: ClassVar[str] = "pattern"

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return pattern_mask(w, self._library())


@register_scheme
@dataclass(frozen=True)
class PatternConnectivityScheme(_KeepFraction, _LibraryScheme):
    """Patterns plus connectivity pruning: 4 of 9 weights in round(keep*kernels) kernels (PatDNN)."""

    name: ClassVar[str] = "pattern_connectivity"
    keep: float = 1 / 3.6
    per_filter: bool = False


    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return pattern_connectivity_mask(w, self._library(), self.keep, self.per_filter)


@register_scheme
@dataclass(frozen=True)
class PatternGroupScheme(_KeepFraction, _LibraryScheme):
    """Patterns + connectivity shared by groups of ``group`` consecutive filters (tessera's kernel co-design)."""

    name: ClassVar[str] = "pattern_group"
    keep: float = 1 / 3.6
    group: int = 4


    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return grouped_pattern_connectivity_mask(w, self._library(), self.keep, self.group)


@register_scheme
@dataclass(frozen=True)
class ConnectivityScheme(_KeepFraction, _NoShapeLimit):
    """Whole kernels removed, the rest dense."""

    name: ClassVar[str] = "connectivity"
    keep: float = 0.5
    per_filter: bool = False


    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return connectivity_mask(w, self.keep, self.per_filter)


@register_scheme
@dataclass(frozen=True)
class MagnitudeScheme(_KeepFraction, _NoShapeLimit):
    """Unstructured magnitude pruning: the accuracy baseline."""

    name: ClassVar[str] = "magnitude"
    keep: float = 0.125


    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return magnitude_mask(w, self.keep)


@register_scheme
@dataclass(frozen=True)
class FilterScheme(_KeepFraction, _NoShapeLimit):
    """Filter (output channel) pruning."""

    name: ClassVar[str] = "filter"
    keep: float = 0.5


    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return filter_mask(w, self.keep)


@register_scheme
@dataclass(frozen=True)
class NMScheme:
    """N:M fine-grained structured sparsity along the input dimension."""

    name: ClassVar[str] = "nm"
    n: int = 2
    m: int = 4

    def check(self, w: torch.Tensor) -> None:
        nm_mask(w, self.n, self.m)

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return nm_mask(w, self.n, self.m)


@register_scheme
@dataclass(frozen=True)
class BlockScheme:
    """Blocks of N consecutive output channels x 1 input (UBP): ``method`` aligned, optimal or bed. The default
    is the exact method: on this project's measurements it is also faster than BED at the sizes used in training.

    A conv weight is viewed as the Cout x (Cin*kh*kw) matrix; importance is w**2. ``keep`` is the fraction of
    weights kept, i.e. round(keep * numel / N) blocks. ``budget`` "layer" applies that per layer; "global" pools
    the blocks of every global-budget layer and ranks them across layers (``tessera.pruning`` resolves it into
    ``blocks``, an explicit per-layer count, before masking).
    """

    name: ClassVar[str] = "block"
    n: int = 4
    keep: float = 0.2
    method: str = "optimal"
    budget: str = "layer"
    blocks: int | None = None

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.method not in ("aligned", "optimal", "bed"):
            raise ConfigError(f"block method must be aligned, optimal or bed, got {self.method!r}")
        if self.budget not in ("layer", "global"):
            raise ConfigError(f"block budget must be 'layer' or 'global', got {self.budget!r}")

    def check(self, w: torch.Tensor) -> None:
        self.mask(w[: max(self.n, 1)] if w.shape[0] >= self.n else w)

    def num_blocks(self, w: torch.Tensor) -> int:
        if self.blocks is not None:
            return self.blocks
        m = w.shape[0]
        k = round(self.keep * w.numel() / self.n)
        return min(k, (m // self.n) * (w.numel() // m)) if m >= self.n else k

    def scores(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().reshape(w.shape[0], -1).double().square()

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        from tessera.sparsity.blocks import select_blocks

        return select_blocks(self.scores(w), self.n, self.num_blocks(w), self.method).mask.reshape(w.shape)


def needs_library(scheme: Scheme) -> bool:
    return isinstance(scheme, _LibraryScheme)


