"""A built sparse conv kernel: the generated library plus its packed arrays, callable on torch tensors."""

from __future__ import annotations

import ctypes
import threading

import torch

from tessera.compiler.codegen import render_layer
from tessera.compiler.formats import PackedConv
from tessera.compiler.geometry import ConvGeometry, KernelParams
from tessera.compiler.kernels import family_of
from tessera.compiler.target import Target
from tessera.compiler.toolchain import compile_cached, load_library

_P = ctypes.c_void_p


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def kernel_arrays(packed: PackedConv, geom: ConvGeometry, params: KernelParams) -> list[torch.Tensor]:
    """The five arrays a generated conv function reads (weights, pointers, indices, filter order, bias), as the
    kernel family of ``params`` packs them."""
    return [torch.from_numpy(a).contiguous() for a in family_of(params).arrays(packed, geom, params)]


class GeneratedLibrary:
    """One translation unit with a ``run_i`` per tuning candidate: built once (cached by source hash), and one
    kernel object per candidate, made on first use and reused (tuning and the final choice share it)."""

    source: str
    target: Target | None = None  # None: the host

    def build(self):
        self.path = compile_cached(self.source, self.target)
        return self

    def kernel(self, index: int):
        if getattr(self, "path", None) is None:
            self.build()
        kernels = self.__dict__.setdefault("_kernels", {})
        if index not in kernels:
            kernels[index] = self._make_kernel(index)
        return kernels[index]

    def _make_kernel(self, index: int):
        raise NotImplementedError


class ThreadScratch:
    """A scratch buffer per calling thread (the generated code writes it), created on first use."""

    def __init__(self, floats: int, zero: bool):
        self.floats, self.zero, self._local = floats, zero, threading.local()

    def ptr(self) -> int:
        ptr = getattr(self._local, "ptr", None)
        if ptr is None:
            self._local.buf = (torch.zeros if self.zero else torch.empty)(self.floats)
            ptr = self._local.ptr = self._local.buf.data_ptr()
        return ptr


class LayerLibrary(GeneratedLibrary):
    """The generated source of one layer (all tuning candidates) and its compiled library."""

    def __init__(self, packed: PackedConv, geom: ConvGeometry, candidates: tuple[KernelParams, ...], act: str | bool,
                 residual: bool, target: Target | None = None):
        self.packed, self.geom, self.candidates, self.act, self.residual = packed, geom, candidates, act, residual
        self.target = target
        self.source = render_layer(packed, geom, candidates, act, residual)
        self.path = None

    def _make_kernel(self, index: int) -> ConvKernel:
        return ConvKernel(self, index)


class ConvKernel:
    """Runs one packed conv layer through one generated C function. Inputs: contiguous fp32 NCHW."""

    def __init__(self, layer: LayerLibrary, index: int):
        self.layer, self.index = layer, index
        packed, self.geom, self.params = layer.packed, layer.geom, layer.candidates[index]
        self.residual = layer.residual
        lib = load_library(str(layer.path))
        self.fn = getattr(lib, f"run_{index}")
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int, _P, _P] + ([_P] if self.residual else []) + [_P] * 6 + [ctypes.c_int]
        lib.scratch_size.restype = ctypes.c_long
        self.scratch_floats = int(lib.scratch_size())
        self.weights, self.group_ptr, self.cin_index, self.reorder, self.bias = \
            kernel_arrays(packed, self.geom, self.params)
        self._consts = tuple(_ptr(a) for a in (self.weights, self.group_ptr, self.cin_index, self.reorder,
                                               self.bias))
        self._xp = ThreadScratch(self.scratch_floats, zero=True)  # zero once: padding borders are never written

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None, threads: int = 1) -> torch.Tensor:
        g = self.geom
        x = x.contiguous()
        n = x.shape[0]
        y = torch.empty(n, g.cout, g.ho, g.wo)
        if n == 0:
            return y
        if self.residual:
            res = residual.contiguous()  # named: a temporary's memory would be freed before the C call reads it
            self.fn(n, x.data_ptr(), y.data_ptr(), res.data_ptr(), *self._consts, self._xp.ptr(), threads)
        else:
            self.fn(n, x.data_ptr(), y.data_ptr(), *self._consts, self._xp.ptr(), threads)
        return y
