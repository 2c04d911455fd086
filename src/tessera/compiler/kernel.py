"""A built sparse conv kernel: the generated library plus its packed arrays, callable on torch tensors."""

from __future__ import annotations

import ctypes
import threading

import torch

from tessera.compiler.codegen import ConvGeometry, KernelParams, render_layer
from tessera.compiler.formats import PackedConv, pack_taps
from tessera.compiler.toolchain import compile_cached, load_library

_P = ctypes.c_void_p


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def kernel_arrays(packed: PackedConv, geom: ConvGeometry, params: KernelParams) -> list[torch.Tensor]:
    """The five arrays a generated conv function reads (weights, pointers, indices, filter order, bias): the
    FKW arrays for per-pattern loops, the channel-blocked tap lists when ``params.cblock`` is set."""
    if params.cblock:
        offsets = [[geom.tap_offset(t) for t in pat] for pat in packed.patterns]
        tl = pack_taps(packed, offsets, geom.plane, params.cblock)
        arrays = (tl.tw, tl.kptr, tl.toff, packed.reorder, packed.bias)
    else:
        arrays = (packed.weights, packed.group_ptr, packed.cin_index, packed.reorder, packed.bias)
    return [torch.from_numpy(a).contiguous() for a in arrays]


class LayerLibrary:
    """The generated source of one layer (all tuning candidates) and its compiled library."""

    def __init__(self, packed: PackedConv, geom: ConvGeometry, candidates: tuple[KernelParams, ...], relu: bool,
                 residual: bool):
        self.packed, self.geom, self.candidates, self.relu, self.residual = packed, geom, candidates, relu, residual
        self.source = render_layer(packed, geom, candidates, relu, residual)
        self.path = None

    def build(self) -> LayerLibrary:
        self.path = compile_cached(self.source)
        return self

    def kernel(self, index: int) -> ConvKernel:
        if self.path is None:
            self.build()
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
        self._scratch = threading.local()

    def _xp(self) -> int:
        ptr = getattr(self._scratch, "ptr", None)
        if ptr is None:  # zero once: the padding borders are never written; one buffer per calling thread
            self._scratch.buf = torch.zeros(self.scratch_floats)
            ptr = self._scratch.ptr = self._scratch.buf.data_ptr()
        return ptr

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None, threads: int = 1) -> torch.Tensor:
        g = self.geom
        x = x.contiguous()
        n = x.shape[0]
        y = torch.empty(n, g.cout, g.ho, g.wo)
        if self.residual:
            self.fn(n, x.data_ptr(), y.data_ptr(), residual.contiguous().data_ptr(), *self._consts, self._xp(),
                    threads)
        else:
            self.fn(n, x.data_ptr(), y.data_ptr(), *self._consts, self._xp(), threads)
        return y
