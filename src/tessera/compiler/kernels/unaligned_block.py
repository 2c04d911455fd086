"""Unaligned N x 1 blocks (BED): a 1x1 conv or Linear layer whose kept weights are blocks of N output channels
starting at any row, run as tiles of R pixel vectors with N x R accumulators (see
:class:`tessera.compiler.block_codegen.BlockRenderer`); in the whole-network function in place over whole planes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tessera.compiler.block_codegen import BlockRenderer, render_block_layer
from tessera.compiler.block_format import PackedBlocks
from tessera.compiler.geometry import KernelParams
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class BlockParams(KernelParams):
    """Tiles of R pixel vectors, N x R accumulators."""

    family: ClassVar[str] = "unaligned_block"


class UnalignedBlock:
    name, format, params = "unaligned_block", "blocks", BlockParams

    def candidates(self, vw: int, n: int) -> tuple[BlockParams, ...]:
        """Tile widths R such that N x R accumulators, R inputs and a broadcast weight fit the register file."""
        regs = 32 if vw == 16 else 16
        top = max(1, (regs - 1) // (n + 1))
        rs = sorted({max(1, top - 2), max(1, top - 1), top})
        return tuple(BlockParams(r, vw) for r in rs)

    def arrays(self, packed: PackedBlocks) -> tuple[np.ndarray, ...]:
        """The four tables its functions read: block values, columns, row pointers, bias."""
        return packed.values, packed.cols, packed.row_ptr, packed.bias

    def render_layer(self, packed: PackedBlocks, candidates: tuple[BlockParams, ...], act: str | bool,
                     residual: bool) -> tuple[str, str]:
        """The per-layer library as two units: the tiles it shares with layers of the same kind, and its own
        ``run_i`` per candidate and ``scratch_size``."""
        return render_block_layer(packed, candidates, act, residual)

    def tile(self, packed: PackedBlocks, params: BlockParams, act: str | bool, residual: bool) -> int:
        """Floats per tile of the planar function (its last tile must stay inside a plane)."""
        return BlockRenderer(packed, params, act, residual, masked=True).tile

    def render_planar(self, packed: PackedBlocks, params: BlockParams, act: str | bool, residual: bool, name: str,
                      origin: int, ldx: int, ldy: int, length: int, sync: str, no_barrier: bool) -> str:
        """The whole-network function's kernel over whole planes (see :meth:`BlockRenderer.render_planar`)."""
        return BlockRenderer(packed, params, act, residual, masked=True).render_planar(
            name, origin, ldx, ldy, length, sync, no_barrier)


register_family(UnalignedBlock())
