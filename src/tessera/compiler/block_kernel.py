"""A built block-sparse kernel for a 1x1 conv or a linear layer, callable on torch tensors."""

from __future__ import annotations

import ctypes
import hashlib

import torch

from tessera.compiler.block_format import PackedBlocks
from tessera.compiler.kernel import GeneratedLibrary, ThreadScratch
from tessera.compiler.kernels import get_family
from tessera.compiler.kernels.unaligned_block import BlockParams
from tessera.compiler.target import Target
from tessera.compiler.toolchain import compile_cached, load_library

_P = ctypes.c_void_p


class BlockLibrary(GeneratedLibrary):
    """The generated source of one block-sparse layer (all tuning candidates) and its compiled library.

    ``stride``: a strided 1x1 conv reads every stride-th pixel; ``linear``: inputs are (batch, Cin) rows.
    """

    def __init__(self, packed: PackedBlocks, target: Target, act: str | bool = False, residual: bool = False,
                 stride: int = 1, linear: bool = False, candidates: tuple[BlockParams, ...] | None = None):
        self.packed, self.act, self.residual, self.stride, self.linear = packed, act, residual, stride, linear
        self.target = target
        family = get_family(BlockParams.family)
        self.candidates = candidates or family.candidates(target.vector_width, packed.n)
        self.tiles, own = family.render_layer(packed, self.candidates, act, residual)
        # stride and layer type act outside the C code; naming them keeps tuning-cache keys apart; the tiles'
        # digest: a library is its own unit and the tile object it links
        self.source = own + f"/* stride {stride}, linear {int(linear)}, tiles " \
            f"{hashlib.sha256(self.tiles.encode()).hexdigest()[:16]} */\n"
        self.path = None

    def build(self):
        tiles = compile_cached(self.tiles, self.target, object_only=True)
        self.path = compile_cached(self.source, self.target, objects=(tiles,))
        return self

    def _make_kernel(self, index: int) -> BlockKernel:
        return BlockKernel(self, index)


class BlockKernel:
    def __init__(self, layer: BlockLibrary, index: int):
        self.layer, self.index, self.params = layer, index, layer.candidates[index]
        p = layer.packed
        lib = load_library(str(layer.path))
        self.fn = getattr(lib, f"run_{index}")
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int, ctypes.c_int] + [_P] * 8 + [ctypes.c_int]
        lib.scratch_size.restype = ctypes.c_long
        self.scratch_floats = int(lib.scratch_size())
        self.values = torch.from_numpy(p.values).contiguous()
        self.cols = torch.from_numpy(p.cols).contiguous()
        self.row_ptr = torch.from_numpy(p.row_ptr).contiguous()
        self.bias = torch.from_numpy(p.bias).contiguous()
        self._consts = (self.values.data_ptr(), self.cols.data_ptr(), self.row_ptr.data_ptr(), self.bias.data_ptr())
        self._scratch = ThreadScratch(self.scratch_floats, zero=False)

    def _run(self, pixels: int, images: int, x: torch.Tensor, y: torch.Tensor, res: torch.Tensor | None,
             threads: int) -> None:
        self.fn(pixels, images, x.data_ptr(), y.data_ptr(), None if res is None else res.data_ptr(),
                *self._consts, self._scratch.ptr(), threads)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None, threads: int = 1) -> torch.Tensor:
        cout = self.layer.packed.cout
        if x.shape[0] == 0:  # an empty batch: torch's answer is an empty tensor
            s = self.layer.stride
            return torch.empty(0, cout, *[(d - 1) // s + 1 for d in x.shape[2:]])
        if self.layer.linear:  # (B, Cin): the batch is the pixel axis
            xt = x.t().contiguous()
            y = torch.empty(cout, x.shape[0])
            res = None if residual is None else residual.t().contiguous()
            self._run(x.shape[0], 1, xt, y, res, threads)
            return y.t()
        s = self.layer.stride
        if s != 1:
            x = x[:, :, ::s, ::s]
        x = x.contiguous()
        n, _, h, w = x.shape
        y = torch.empty(n, cout, h, w)
        res = None if residual is None else residual.contiguous()
        self._run(h * w, n, x, y, res, threads)
        return y
