"""Depthwise convs (one input channel per output channel), stride 1 or 2, any kernel size, in the whole-network
function: a channel per work item where the output layout takes whole-vector row stores (else a channel row), R
vectors of output columns in registers across all taps, two output rows a pass at stride 1, the epilogue fused into
the store (see :func:`tessera.compiler.window_ops.depthwise_conv`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tessera.compiler import window_ops
from tessera.compiler.geometry import KernelParams, Layout
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class DepthwiseParams(KernelParams):
    """R vectors of output columns held across the taps in the middle of a row."""

    r: int = 4
    family: ClassVar[str] = "depthwise"


class Depthwise:
    name, format, params = "depthwise", "window", DepthwiseParams

    def applies(self, shape: tuple[int, ...], groups: int, stride: tuple[int, int], padding: tuple[int, int],
                in_layout: Layout | None) -> bool:
        """One input channel per group, equal strides 1 or 2, an input in a network layout whose origin leaves
        room for the first loads (they start at -padding)."""
        return shape[1] == 1 and shape[0] == groups and tuple(stride) in ((1, 1), (2, 2)) and \
            in_layout is not None and in_layout.origin >= padding[1]

    def candidates(self, vw: int) -> tuple[DepthwiseParams, ...]:
        return (DepthwiseParams(4, vw),)

    def render(self, op, weight: str, bias: str) -> str:
        """The loop of a planned :class:`~tessera.compiler.network_plan.WindowConv` step."""
        return window_ops.depthwise_conv(op.x, op.y, op.res, weight, bias, op.shape, op.stride, op.padding, op.act,
                                         op.params.vw, op.params.r)


register_family(Depthwise())
