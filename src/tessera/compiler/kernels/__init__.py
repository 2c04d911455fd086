"""Kernel families, one file each, behind one registry (in the spirit of XNNPACK's microkernel tables). A family
has a frozen parameter dataclass of its own (a :class:`~tessera.compiler.geometry.KernelParams` subclass whose
``family`` names it), says which packed weights it reads (``format``), which parameters the tuner should try on a
layer, how it packs and renders. Three formats:

- ``"fkw"`` (:class:`ConvFamily`): sparse convs in FKW storage (:class:`~tessera.compiler.formats.PackedConv`);
  what they share — input prep, the epilogues, buffer layouts and the C signature — stays in
  :class:`tessera.compiler.codegen.ConvRenderer`, which hands the body to the family its parameters belong to.
- ``"blocks"``: unaligned N x 1 blocks (:class:`~tessera.compiler.block_format.PackedBlocks`) of 1x1 convs and
  Linear layers.
- ``"window"``: dense per-channel windows (depthwise and grouped convs) of the whole-network function.

The per-layer path, the tuner and the whole-network plan all ask the registry. Adding a family: a module here
with its params dataclass and a class following the protocol of its format, registered with
:func:`register_family` (built-ins in :data:`FAMILY_MODULES` order), plus its tests (the registry test runs every
family on every target this machine runs against torch) and its golden C (tests/test_golden_c.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tessera.compiler.geometry import ConvGeometry, KernelParams

if TYPE_CHECKING:
    from tessera.compiler.codegen import ConvRenderer
    from tessera.compiler.formats import PackedConv


class KernelFamily(Protocol):
    name: str
    format: str  # "fkw", "blocks" or "window": the packed weights it reads
    params: type[KernelParams]  # its own frozen parameter dataclass


class ConvFamily(KernelFamily, Protocol):
    def candidates(self, vw: int, group: int, geom: ConvGeometry | None, taps: list[list[int]] | None,
                   registers: int) -> list[KernelParams]:
        """Parameters to try on a layer of ``geom`` with ``taps`` per pattern (none when it does not apply) with
        ``vw``-float vectors and ``registers`` vector registers; without a geometry, what any layer can run."""

    def arrays(self, packed: PackedConv, geom: ConvGeometry, params: KernelParams) -> tuple[np.ndarray, ...]:
        """The five tables the generated function reads: weights, pointers, indices, filter order, bias."""

    def render_body(self, r: ConvRenderer, name: str) -> str:
        """The C function ``name`` running one image through the layer (orphaned worksharing loops)."""


class BlockFamily(KernelFamily, Protocol):
    def candidates(self, vw: int, n: int) -> tuple[KernelParams, ...]:
        """Parameters to try on a layer of N-row blocks with ``vw``-float vectors."""

    def render_layer(self, packed, candidates, act, residual) -> tuple[str, str]:
        """The per-layer library: the unit it shares with layers of its kind, and its own unit."""

    def render_planar(self, packed, params, act, residual, name, origin, ldx, ldy, length, sync,
                      no_barrier) -> str:
        """The whole-network function's kernel over a buffer's planes."""


class WindowFamily(KernelFamily, Protocol):
    def applies(self, shape, groups, stride, padding, in_layout) -> bool:
        """Whether it runs this grouped conv (weight ``shape``) reading an input in ``in_layout``; the plan
        takes the first window family that does."""

    def candidates(self, vw: int) -> tuple[KernelParams, ...]: ...

    def render(self, op, weight: str, bias: str) -> str:
        """The loop of a planned window step (:class:`~tessera.compiler.network_plan.WindowConv`)."""


_FAMILIES: dict[str, KernelFamily] = {}
_ORDERED: list[dict[str, KernelFamily]] = []  # the registry in the tuner's order, once built (see _load)
FAMILY_MODULES = ("pattern_loops", "channel_blocked", "shifted", "unaligned_block", "depthwise", "grouped")


def register_family(family: KernelFamily) -> KernelFamily:
    """Add ``family``; another family under a taken name is refused (the same class from the same file, imported
    a second time — doctest collection does that — replaces itself)."""
    old = _FAMILIES.get(family.name)
    if old is not None and (type(old).__qualname__, inspect.getfile(type(old))) != \
            (type(family).__qualname__, inspect.getfile(type(family))):
        raise ValueError(f"kernel family {family.name!r} is already registered")
    if family.params.family != family.name:
        raise ValueError(f"kernel family {family.name!r} must have parameters of its own (params.family)")
    _FAMILIES[family.name] = family
    _ORDERED.clear()
    return family


def _load() -> dict[str, KernelFamily]:
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


def get_family(name: str) -> KernelFamily:
    return _load()[name]


def family_of(params: KernelParams) -> KernelFamily:
    """The family ``params`` belong to (by their type: each family has a dataclass of its own; compared by name,
    as a module imported a second time — doctest collection does that — makes a second class)."""
    family = _load().get(params.family)
    if family is None or type(params).__qualname__ != family.params.__qualname__:
        raise ValueError(f"{params!r} belongs to no registered kernel family")
    return family


def params_to_dict(params: KernelParams) -> dict:
    """JSON form of ``params`` (decisions, artifacts, caches): the family's name and its fields."""
    return {"family": params.family, **dataclasses.asdict(params)}


def params_from_dict(d: dict) -> KernelParams:
    """Inverse of :func:`params_to_dict`; a dict without a family (artifacts written before families had
    dataclasses of their own: r, vw, cblock, shift) is read by the flags it carried."""
    d = dict(d)
    name = d.pop("family", None)
    if name is None:
        shift, cblock = d.pop("shift", False), d.pop("cblock", 0)
        name = "shifted" if shift else "channel_blocked" if cblock else "pattern_loops"
        if cblock:
            d["cblock"] = cblock
    family = _load().get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"unknown kernel family {name!r}")
    try:
        return family.params(**d)
    except TypeError:
        raise ValueError(f"kernel parameters {d} do not fit family {name!r}") from None


def default_registers(vw: int) -> int:
    """Vector registers of the x86 ISA with ``vw``-float vectors (AVX2: 16, AVX-512: 32), for callers that know
    only the width."""
    return 16 if vw == 8 else 32


def conv_candidates(vw: int, group: int = 1, geom: ConvGeometry | None = None, taps: list[list[int]] | None = None,
                    registers: int | None = None) -> tuple[KernelParams, ...]:
    """Every FKW family's candidates for a layer, in registry order (``registers``: the target's; default
    :func:`default_registers`)."""
    regs = registers or default_registers(vw)
    return tuple(p for f in _load().values() if f.format == "fkw" for p in f.candidates(vw, group, geom, taps, regs))
