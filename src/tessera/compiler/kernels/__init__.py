"""Sparse-conv kernel families, one file each, behind one protocol and one registry (in the spirit of XNNPACK's
microkernel tables): a family says whether it applies to a layer, which parameters the tuner should try, which
arrays it reads (its packing of the weights) and how it renders its body. What they share — input prep, the
epilogues, buffer layouts and the C signature — stays in :class:`tessera.compiler.codegen.ConvRenderer`, which
hands the body to the family that owns its parameters. The tuner tries every registered family's candidates.

Adding a family: a module here with a class following :class:`ConvFamily`, registered with
:func:`register_family` in :data:`FAMILY_MODULES` order, plus its tests (the registry test runs every family on
every target this machine runs against torch) and its golden C (tests/test_golden_c.py).
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tessera.compiler.geometry import ConvGeometry, KernelParams

if TYPE_CHECKING:
    from tessera.compiler.codegen import ConvRenderer
    from tessera.compiler.formats import PackedConv


class ConvFamily(Protocol):
    name: str

    def owns(self, params: KernelParams) -> bool:
        """Whether ``params`` select this family (each parameter set belongs to exactly one)."""

    def candidates(self, vw: int, group: int, geom: ConvGeometry | None, taps: list[list[int]] | None,
                   registers: int) -> list[KernelParams]:
        """Parameters to try on a layer of ``geom`` with ``taps`` per pattern (none when it does not apply) with
        ``vw``-float vectors and ``registers`` vector registers; without a geometry, what any layer can run."""

    def arrays(self, packed: PackedConv, geom: ConvGeometry, params: KernelParams) -> tuple[np.ndarray, ...]:
        """The five tables the generated function reads: weights, pointers, indices, filter order, bias."""

    def render_body(self, r: ConvRenderer, name: str) -> str:
        """The C function ``name`` running one image through the layer (orphaned worksharing loops)."""


_FAMILIES: dict[str, ConvFamily] = {}
_ORDERED: list[dict[str, ConvFamily]] = []  # the registry in the tuner's order, once built (see _load)
FAMILY_MODULES = ("pattern_loops", "channel_blocked", "shifted")  # the tuner's order


def register_family(family: ConvFamily) -> ConvFamily:
    """Add ``family``; another family under a taken name is refused (the same class from the same file, imported
    a second time — doctest collection does that — replaces itself)."""
    old = _FAMILIES.get(family.name)
    if old is not None and (type(old).__qualname__, inspect.getfile(type(old))) != \
            (type(family).__qualname__, inspect.getfile(type(family))):
        raise ValueError(f"kernel family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    _ORDERED.clear()
    return family


def _load() -> dict[str, ConvFamily]:
    """The registry in the tuner's order: the built-in families as :data:`FAMILY_MODULES` lists them (whichever
    module was imported first), then any registered from elsewhere."""
    if not _ORDERED:
        for m in FAMILY_MODULES:
            importlib.import_module(f"{__name__}.{m}")
        order = {name: i for i, name in enumerate(FAMILY_MODULES)}
        _ORDERED.append(dict(sorted(_FAMILIES.items(), key=lambda kv: order.get(kv[0], len(order)))))
    return _ORDERED[0]


def list_families() -> list[str]:
    return list(_load())


def get_family(name: str) -> ConvFamily:
    return _load()[name]


def family_of(params: KernelParams) -> ConvFamily:
    owners = [f for f in _load().values() if f.owns(params)]
    if len(owners) != 1:
        raise ValueError(f"{params} belongs to {len(owners)} kernel families")
    return owners[0]


def default_registers(vw: int) -> int:
    """Vector registers of the x86 ISA with ``vw``-float vectors (AVX2: 16, AVX-512: 32), for callers that know
    only the width."""
    return 16 if vw == 8 else 32


def conv_candidates(vw: int, group: int = 1, geom: ConvGeometry | None = None, taps: list[list[int]] | None = None,
                    registers: int | None = None) -> tuple[KernelParams, ...]:
    """Every family's candidates for a layer, in registry order (``registers``: the target's; default
    :func:`default_registers`)."""
    regs = registers or default_registers(vw)
    return tuple(p for f in _load().values() for p in f.candidates(vw, group, geom, taps, regs))
