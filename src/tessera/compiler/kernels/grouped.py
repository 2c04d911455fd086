"""Grouped convs (any groups, kernel, stride, padding) in the whole-network function: one pass per (output
channel, row), the row accumulated on the stack with each tap's valid columns as constants so gcc vectorises
the inner loop, the epilogue fused into the store (see :func:`tessera.compiler.window_ops.grouped_conv`). Also
what runs a depthwise conv the depthwise family does not take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tessera.compiler import window_ops
from tessera.compiler.geometry import KernelParams, Layout
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class GroupedParams(KernelParams):
    """One output row per work item (``r`` 1: the row is a scalar loop gcc vectorises)."""

    r: int = 1
    family: ClassVar[str] = "grouped"


class Grouped:
    name, format, params = "grouped", "window", GroupedParams

    def applies(self, shape: tuple[int, ...], groups: int, stride: tuple[int, int], padding: tuple[int, int],
                in_layout: Layout | None) -> bool:
        return True

    def candidates(self, vw: int) -> tuple[GroupedParams, ...]:
        return (GroupedParams(1, vw),)

    def render(self, op, weight: str, bias: str) -> str:
        return window_ops.grouped_conv(op.x, op.y, op.res, weight, bias, op.shape, op.groups, op.stride, op.padding,
                                       op.act)


register_family(Grouped())
