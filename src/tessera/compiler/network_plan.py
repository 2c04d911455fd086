"""The whole-network plan: every decision about a graph's native function, frozen, before any C is printed.

One walk over the fused graph fixes the buffer table (each activation's layout; values whose readers are done
hand their memory to later values of the same layout), each node's step (its kernel family and parameters, the
buffers it reads and writes, the parameter tables it is handed), the scratch each step needs, which convs may
skip their barrier, and the argument order of the function. :mod:`tessera.compiler.network_emit` prints C from
the plan and nothing else; :mod:`tessera.compiler.export` lays the same plan out in a caller's workspace.

Supported nodes: FusedConv (sparse kernels; grouped and depthwise convs and 1x1 convs on pooled vectors as loops
of their own), max / average / adaptive pooling in module and function forms, global means, Linear, every
activation of :mod:`tessera.compiler.activations`, residual adds, broadcast multiplies (squeeze-excitation
gates), flatten / view. A graph may have several inputs and outputs (a native segment between torch islands, see
:mod:`tessera.compiler.partition`); the first node it cannot plan raises :class:`Unsupported` naming that node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from tessera.compiler import window_ops
from tessera.compiler.activations import activation_of, c_scalar, keeps_zero
from tessera.compiler.block_format import PackedBlocks
from tessera.compiler.codegen import ConvRenderer
from tessera.compiler.formats import PackedConv, pack_conv
from tessera.compiler.geometry import (
    SLACK,
    ConvGeometry,
    KernelParams,
    Layout,
    padded_layout,
    shift_applies,
    tight_layout,
    tight_rows,
    tight_tile,
)
from tessera.compiler.graph import ADD_FUNCS, MUL_FUNCS, FusedConv, FusedLinear
from tessera.compiler.kernel import kernel_arrays
from tessera.compiler.kernels import conv_candidates, get_family, list_families
from tessera.compiler.kernels.depthwise import DepthwiseParams
from tessera.compiler.kernels.pattern_loops import PatternLoopsParams
from tessera.compiler.kernels.shifted import ShiftedParams
from tessera.compiler.kernels.unaligned_block import BlockParams
from tessera.compiler.target import Target

SPIN_SYNC = "tsr_sync();"  # the spinning barrier's join (network_emit.SPIN_BARRIER defines it)
_FLATTEN_FN = {torch.flatten}
_ALIAS_METHODS = {"flatten", "view", "reshape", "contiguous"}


class Unsupported(Exception):
    """A node the whole-network function cannot run; ``node`` is set by the planner's walk."""

    node: fx.Node | None = None


@dataclass(frozen=True)
class Buffer:
    """One entry of the buffer table ``B`` the network function is handed: a per-image activation."""

    floats: int  # per image
    shape: tuple[int, ...]  # (C, H, W) for padded activations, (n,) for flat ones
    padded: bool
    index: int  # position in the buffer table B passed to net_forward
    layout: Layout | None = None  # of a padded (spatial) activation

    @property
    def expr(self) -> str:
        return f"((float *)B[{self.index}])"

    def at(self, c: str, y: str, x: str, shift: int = 0) -> str:
        """C expression of element (c, y, x) of an NCHW-shaped activation in this buffer's layout (``shift``
        floats further: its second copy)."""
        if self.padded:
            lay = self.layout
            more = f" + {shift}" if shift else ""
            return f"{self.expr}[(long)({c}) * {lay.plane} + {lay.origin} + ({y}) * {lay.pitch} + ({x}){more}]"
        _, h, w = self.shape if len(self.shape) == 3 else (self.shape[0], 1, 1)
        return f"{self.expr}[(long)({c}) * {h * w} + ({y}) * {w} + ({x})]"

    def put(self, c: str, y: str, x: str, value: str) -> str:
        """C statements storing ``value`` at element (c, y, x), and into the layout's second copy if it has one."""
        at = self.at(c, y, x)
        shift = self.layout.copy_shift if self.padded else 0
        return f"{at} = {value};" if not shift else f"{{ {at} = {value}; {self.at(c, y, x, shift)} = {at}; }}"


def param(i: int) -> str:
    """C expression of entry ``i`` of the parameter table ``P``."""
    return f"P[{i}]"


PLANE_FLOATS = 64 * 1024  # the most floats of planes a thread keeps on its stack for PointwiseDepthwise (256 KB)
PLANES = 4  # channels of a PointwiseDepthwise work item
COLUMN_WEIGHTS = 1 << 18  # a dense Linear up to this many weights runs its outputs in vectors (see _linear)
FUSE_BYTES = 1 << 20  # a 1x1 conv's output larger than this goes into its depthwise reader (see _defer_pointwise)


def _pixel_lanes(lay: Layout, rows: int, cols: int, span: int) -> torch.Tensor:
    """int32 lanes of ``span`` floats from a layout's origin: -1 at pixels (``rows`` x ``cols``), 0 at its zero
    columns and past the last row — stores ANDed with it keep the layout's zeros."""
    p = torch.arange(span)
    return torch.where((p < rows * lay.pitch) & (p % lay.pitch < cols), -1, 0).to(torch.int32)


def _plane_floats(lay: Layout, h: int, vw: int) -> int:
    """Floats of a thread's plane: the layout's rows and, past them, room for the unrolled 1x1 conv's last
    vectors and the depthwise conv's loads past the last row (stride 2: two vectors a chunk)."""
    return -(-(lay.origin + h * lay.pitch + lay.pitch + 16 * vw) // vw) * vw


# -- the steps: one C statement each, in execution order ---------------------------------------------------------
@dataclass(frozen=True)
class InputCopy:
    """Input ``k`` of the image into its buffer (into the padded layout for an image, as is for a vector)."""

    k: int
    y: Buffer


@dataclass(frozen=True)
class SparseConv:
    """A conv on a registered kernel family (``params`` selects it) over the network's layouts."""

    packed: PackedConv
    geom: ConvGeometry
    params: KernelParams
    act: str | bool
    residual: bool
    x: Buffer
    y: Buffer
    res: Buffer | None
    in_layout: Layout | None
    out_layout: Layout
    input_view: tuple[int, int] | None  # (channel stride, offset) of a subsample another conv copied
    arrays: tuple[int, ...]  # parameter-table entries: weights, pointers, indices, filter order, bias
    colmask: int | None  # parameter-table entry of the column mask of a vector-stored output
    scratch: int  # scratch entry of its prep copy (or of the subsample it reads)


@dataclass(frozen=True)
class PlanarCopy:
    """The input pixels of a planar block conv copied into its output's layout (strided or other layouts)."""

    x: Buffer
    scratch: int
    channels: int
    rows: int
    cols: int
    stride: int
    out_layout: Layout


@dataclass(frozen=True)
class PlanarBlocks:
    """A block-sparse stride-1 1x1 conv on the unaligned-block kernel, in place over whole planes."""

    blocks: PackedBlocks
    params: BlockParams
    act: str | bool
    residual: bool
    src: str  # C expression of its input planes (a buffer, or the PlanarCopy's scratch)
    y: Buffer
    res: Buffer | None
    origin: int
    ldx: int
    ldy: int
    length: int
    arrays: tuple[int, ...]  # values, columns, row pointers, bias
    mask: int
    scaled: int | None = None  # scratch holding the values scaled by a gate (ScaleBlocks), read instead


@dataclass(frozen=True)
class ScaleBlocks:
    """A block-sparse 1x1 conv's values times a per-input-channel gate, into scratch: conv(x * g) is conv(x) with
    every block of column c scaled by g[c], so squeeze-excitation's gate never makes a pass over the image."""

    values: int
    cols: int
    g: Buffer
    n: int
    blocks: int
    scratch: int


@dataclass(frozen=True)
class BlockMatvec:
    """y = W x over packed blocks into a buffer of its own (a block-sparse Linear's sums); the values are each
    block's rows top to bottom."""

    acc: Buffer
    x: Buffer
    rows: int
    n: int
    arrays: tuple[int, int, int]  # values, columns, row pointers


@dataclass(frozen=True)
class Linear:
    """A matrix-vector product per image: Linear, or a 1x1 conv on a 1x1 image (dense, or on BlockMatvec sums)."""

    x: Buffer
    y: Buffer
    res: Buffer | None
    cout: int
    cin: int
    act: str
    bias: int | None
    weight: int | None  # None: the sums of the BlockMatvec before it
    sums: Buffer | None
    columns: bool = False  # weight stored transposed (cin x cout rounded up to vectors), bias padded to match


@dataclass(frozen=True)
class WindowConv:
    """A depthwise or grouped conv on a ``window`` family (``params`` selects it), one pass per channel row."""

    x: Buffer
    y: Buffer
    res: Buffer | None
    weight: int
    bias: int | None
    shape: tuple[int, ...]
    groups: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    act: str | bool
    params: KernelParams


@dataclass(frozen=True)
class ThreadPlane(Buffer):
    """One channel's plane ``Q_`` in an array on each thread's stack (see :class:`PointwiseDepthwise`), addressed
    like a padded buffer's plane whatever the channel."""

    @property
    def expr(self) -> str:
        return "Q_"


@dataclass(frozen=True)
class PointwiseDepthwise:
    """A sparse 1x1 conv and the depthwise conv that alone reads it, channel by channel: the 1x1 conv's channel
    goes into a plane of the thread's own, in cache, and the depthwise conv reads it there, so the expanded
    activation (MobileNetV2's 6x at 112x112: 4.8 MB) is never written to memory. PLANES channels at a time,
    so that each input load of the 1x1 conv feeds PLANES multiply-adds, as a block of the block kernel does."""

    x: Buffer  # the 1x1 conv's input
    floats: int  # of one of the thread's PLANES planes
    span: int  # floats of a plane the 1x1 conv writes (from the layout's origin; whole unrolled vectors)
    unroll: int  # vectors of a plane the 1x1 conv holds at once
    arrays: tuple[int, int, int, int]  # per group of PLANES channels, the inputs any of them keeps (pointers and
    # columns) with the PLANES weights of each (0 where a channel lacks it); the bias
    mask: int  # int32 lanes of the span: -1 at pixels, 0 at the layout's zero columns and past the last row
    act: str | bool  # the 1x1 conv's
    dw: WindowConv  # reading the thread's plane (a ThreadPlane)


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    x: Buffer
    y: Buffer
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    divisors: int | None = None  # avg: parameter-table entry of the per-output 1/divisor


@dataclass(frozen=True)
class AdaptiveMean:
    x: Buffer
    y: Buffer


@dataclass(frozen=True)
class Flatten:
    x: Buffer
    y: Buffer


@dataclass(frozen=True)
class Gate:
    """x * g with g of shape (C, 1, 1): the squeeze-excitation gate (``rows``: contiguous rows of ``rows`` floats
    per channel, pad column included; 0: pixel by pixel)."""

    x: Buffer
    g: Buffer
    y: Buffer
    rows: int


@dataclass(frozen=True)
class PixelActivation:
    """An activation that does not keep zero on a padded buffer: the pixels only, borders stay zero."""

    x: Buffer
    y: Buffer
    act: str


@dataclass(frozen=True)
class Elementwise:
    """``expr`` (C, ``{i}`` = operand i, assigns ``v``) over every float of same-layout operands."""

    expr: str
    ins: tuple[Buffer, ...]
    y: Buffer


@dataclass(frozen=True)
class OutputCopy:
    k: int
    x: Buffer
    floats: int


@dataclass(frozen=True)
class Step:
    node: str  # the graph node the statement belongs to ("output copy" for the output copies)
    op: object  # one of the dataclasses above


@dataclass(frozen=True)
class NetworkPlan:
    """What the network function does, fixed: printed by :func:`tessera.compiler.network_emit.emit_network`,
    run by :class:`tessera.compiler.network.NetworkKernel`, laid out by an export."""

    target: Target
    spin: bool  # threads join at the spinning barrier (every thread has a core)
    profile: bool  # thread 0 adds each step's wall time to a table in the last scratch entry
    buffers: tuple[Buffer, ...]  # the buffer table B, zero-initialised (borders are never written non-zero)
    scratch: tuple[int, ...]  # floats per scratch entry S: per conv, then the barrier's counters, the profile table
    conv_scratch: int  # entries of S that belong to steps
    params: tuple[torch.Tensor, ...]  # the parameter table P, in order
    steps: tuple[Step, ...]
    statements: tuple[tuple[fx.Node, frozenset[int], frozenset[int]], ...]  # node, buffers read, buffers written
    barrier_free: frozenset[fx.Node]  # convs that run straight into the next statement
    inputs: tuple[Buffer, ...]
    in_floats: tuple[int, ...]
    out_floats: tuple[int, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    profiled: tuple[str, ...]  # rows of the profile table
    torch_nodes: dict[fx.Node, str] = field(default_factory=dict)  # survey: node -> why it runs in torch

    @property
    def sync(self) -> str:
        """The C statement a thread runs to join the others (empty: OpenMP's implicit barriers)."""
        return SPIN_SYNC if self.spin else ""

    @property
    def barrier_scratch(self) -> int | None:
        return self.conv_scratch if self.spin else None

    @property
    def profile_scratch(self) -> int | None:
        return len(self.scratch) - 1 if self.profile else None

    @property
    def tight_buffers(self) -> int:
        """Buffers in the tight layout (read in place by a shifted conv, no prep copy)."""
        return sum(b.layout is not None and b.layout.tight for b in self.buffers)

    @property
    def prep_copies(self) -> int:
        """Convs that copy their input into a scratch layout first."""
        return sum(n > 0 for n in self.scratch[:self.conv_scratch])


def _shape(node: fx.Node) -> tuple[int, ...]:
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        raise Unsupported(f"{node.name}: no single-tensor shape")
    return tuple(tm.shape[1:])


def _numel(node: fx.Node) -> int:
    n = 1
    for d in _shape(node):
        n *= d
    return n


def _has_shape(node) -> bool:
    return isinstance(node, fx.Node) and hasattr(node.meta.get("tensor_meta"), "shape")


def _at(exc: Unsupported, node: fx.Node) -> Unsupported:
    if exc.node is None:
        exc.node = node
    return exc


def _on_vector(m: FusedConv) -> bool:
    """A 1x1 conv on a 1x1 image (squeeze-excitation's reduce / expand): a matrix-vector product."""
    return not isinstance(m, FusedLinear) and m.in_shape is not None and tuple(m.in_shape[2:]) == (1, 1) and \
        tuple(m.weight.shape[2:]) == (1, 1) and tuple(m.padding) == (0, 0) and m.groups == 1


def _is_global_mean(node: fx.Node) -> bool:
    """x.mean((2, 3)) / torch.mean(x, (-2, -1)), keepdim or not."""
    if not ((node.op == "call_method" and node.target == "mean") or
            (node.op == "call_function" and node.target is torch.mean)):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if not isinstance(dims, tuple | list) or not _has_shape(node.args[0]) or len(_shape(node.args[0])) != 3:
        return False
    extra = {k: v for k, v in node.kwargs.items() if k not in ("dim", "keepdim")}
    return not extra and sorted(d % 4 for d in dims) == [2, 3] and len(node.args) <= 3


def plan_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target, threads: int = 1,
                 profile: bool = False, spin: bool | None = None, survey: bool = False) -> NetworkPlan:
    """Plan ``gm`` as one native function (no C printed, no compiler call); raises :class:`Unsupported` naming
    the first node it cannot run. ``spin``: the spinning barrier (default: when every thread has a core of this
    machine). ``survey``: do not stop at the first node it cannot run: record it in ``torch_nodes`` (node ->
    reason), treat its output as arriving from outside and go on, so one walk names every such node."""
    spin = threads <= (os.cpu_count() or 1) if spin is None else spin
    return _Planner(gm, params_for, target, spin, survey, profile).plan()


class _Planner:
    """The walk: its state is mutable while it runs; :meth:`plan` returns the frozen result."""

    def __init__(self, gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target, spin: bool,
                 survey: bool, profile: bool):
        self.gm, self.params_for, self.target = gm, params_for, target
        self.spin, self.survey, self.profile = spin, survey, profile
        self.vw, self.registers = target.vector_width, target.registers
        self.modules = dict(gm.named_modules())
        self.torch_nodes: dict[fx.Node, str] = {}
        self.inputs: list[Buffer] = []
        self.statements: list[tuple[fx.Node, frozenset[int], frozenset[int]]] = []
        self.pool: dict[tuple, list[int]] = {}  # (floats, padded, layout) -> indices of free buffers
        self.done: set[fx.Node] = set()
        self.released: set[int] = set()  # indices in the pool or handed out again since
        self.input_indices: set[int] = set()
        self.params: list[torch.Tensor] = []
        self.scratch: list[int] = []  # floats per conv scratch (padded input)
        self.bufs: list[Buffer] = []
        self.where: dict[fx.Node, Buffer] = {}  # node -> the buffer holding its per-image output
        self.holders: dict[int, list[fx.Node]] = {}  # buffer index -> nodes whose value lives there
        self.steps: list[Step] = []
        self.parent: dict[fx.Node, fx.Node] = {}  # union-find over nodes whose buffers share a layout
        self.layouts: dict[fx.Node, Layout] = {}  # group root -> its layout when not the padded one
        self.conv_plans: dict[fx.Node, tuple[PackedConv, ConvGeometry, KernelParams]] = {}
        # input buffer -> (scratch, channel stride, offset, row pitch) of its stride-2 subsample x[2a][2b], copied
        # as the (odd padded row, even column) phase plane by a stride-2 shifted conv that reads that buffer
        self.subsamples: dict[int, tuple[int, int, int, int]] = {}
        self.deferred: dict[fx.Node, FusedConv] = {}  # 1x1 convs planned inside their depthwise reader
        self.gated: dict[fx.Node, Buffer] = {}  # gate multiplies folded into their block conv's weights
        self.extra_reads: dict[fx.Node, frozenset[int]] = {}  # buffers a statement reads besides its args

    @property
    def sync(self) -> str:
        return SPIN_SYNC if self.spin else ""

    def _param(self, t: torch.Tensor) -> int:
        self.params.append(t.contiguous())
        return len(self.params) - 1

    def _step(self, node: fx.Node, op) -> None:
        self.steps.append(Step(node.name, op))

    def _new_buf(self, node: fx.Node, padded: bool, shape: tuple[int, ...] | None = None) -> Buffer:
        real = _shape(node)
        if padded:
            if len(real) != 3:
                raise Unsupported(f"{node.name}: padded layout needs a (C, H, W) activation")
            layout = self.layouts.get(self._group(node)) or padded_layout(real[1], real[2])
            floats = layout.floats(real[0])
        else:
            layout, floats = None, _numel(node)
        free = self.pool.get((floats, padded, layout))
        if free:  # memory of a value nobody reads any more, in the same layout: its zero borders line up
            index = free.pop()
            self.subsamples.pop(index, None)
            self.released.discard(index)
            b = Buffer(floats, shape or real, padded, index, layout)
        else:
            b = Buffer(floats, shape or real, padded, len(self.bufs), layout)
            self.bufs.append(b)
        self._hold(node, b)
        return b

    def _hold(self, node: fx.Node, b: Buffer) -> None:
        self.where[node] = b
        self.holders.setdefault(b.index, []).append(node)

    def _release(self, node: fx.Node) -> None:
        """After ``node``'s statement: the buffers of its operands whose every holder (a node whose value lives
        there, aliases included) has no reader left go back to the pool. A network's activations then share a
        few buffers that stay in cache instead of one buffer per layer (ResNet-50: 100+ MB) streaming from DRAM."""
        if node in self.gated:  # read by the conv that folds it: released after that conv's steps (_planar_blocks)
            return
        self.done.add(node)
        for a in node.all_input_nodes:
            b = self.where.get(a)
            if b is None or b.index in self.released or b.index in self.input_indices:
                continue
            holders = [h for h in self.holders[b.index] if self.where.get(h) is not None and
                       self.where[h].index == b.index]
            if all(u in self.done for h in holders for u in h.users):
                self.released.add(b.index)
                self.pool.setdefault((b.floats, b.padded, b.layout), []).append(b.index)

    def _padded_input(self, node: fx.Node) -> Buffer:
        b = self.where[node]
        if not b.padded:
            raise Unsupported(f"{node.name}: a flat tensor feeds a spatial layer")
        return b

    def _conv_plan(self, node: fx.Node, m: FusedConv) -> tuple[PackedConv, ConvGeometry, KernelParams]:
        if _on_vector(m) or m.groups != 1 or tuple(m.dilation) != (1, 1) or m.stride[0] != m.stride[1] or \
                m.in_shape is None or isinstance(m.padding, str):
            raise Unsupported(f"{node.target}: conv configuration")
        if node in self.conv_plans:
            return self.conv_plans[node]
        _, _, h, w = m.in_shape
        cout, cin, kh, kw = m.weight.shape
        geom = ConvGeometry(cin, cout, h, w, kh, kw, m.stride[0], m.padding[0], m.padding[1])
        kp = self.params_for.get(node.target)
        if kp is not None and kp.family == BlockParams.family:  # a block layer the planar kernel does not take
            kp = PatternLoopsParams(kp.r, kp.vw)
        if kp is None and tight_rows(geom, self.vw) and shift_applies(geom, 1, self.vw):
            # a layer the tuner left dense (e.g. the stem): the shifted kernel on tight rows, single-filter units;
            # it writes a tight output as whole rows, where the grouped kernel's tiles cut rows into pieces. Tiles
            # of 4 vectors: a dense kernel loads all three rows, and 3 sets x 8 accumulators plus a row of loads
            # overflow the registers (Zen 5, stem at 32x32: resnet20 6.9 -> 5.3 us, vgg6 9.7 -> 7.6 us)
            kp = ShiftedParams(tight_tile(geom, self.vw, 4), self.vw, cin)
            packed = pack_conv(m.weight, m.bias, group_sizes=())
        else:
            packed = getattr(m, "packed", None) or pack_conv(m.weight, m.bias)
        self.conv_plans[node] = packed, geom, kp or conv_candidates(self.vw, packed.group, registers=self.registers)[1]
        return self.conv_plans[node]

    # -- buffer layouts: the tight layout where every conv that reads a buffer in place wants it ---------------
    def _group(self, node: fx.Node) -> fx.Node:
        while self.parent.get(node, node) is not node:
            node = self.parent[node]
        return node

    def _union(self, a: fx.Node, b: fx.Node) -> None:
        ra, rb = self._group(a), self._group(b)
        if ra is not rb:
            self.parent[ra] = rb

    def _plan_layouts(self) -> None:
        """Buffers that must share a layout (a conv's output and its fused residual, an add's operands and
        result) form groups; a group gets :func:`tight_layout` when some stride-1 3x3 conv reads one of its
        buffers with the shifted kernel on tight rows (no prep copy then) and no conv reads one in place in the
        padded layout (the blocked kernel's direct read). Every other reader copies from either layout."""
        source: dict[fx.Node, fx.Node] = {}  # node -> the node whose buffer holds its value

        def src(n):
            return source.get(n, n)
        votes: dict[fx.Node, set[str]] = {}
        for node in self.gm.graph.nodes:
            args = [a for a in node.args if isinstance(a, fx.Node)]
            m = self.gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(m, nn.Identity | nn.Dropout):
                source[node] = src(args[0])
            elif isinstance(m, FusedConv) and not isinstance(m, FusedLinear):
                if m.residual:
                    self._union(node, src(args[1]))
                if isinstance(getattr(m, "blocks", None), PackedBlocks) and tuple(m.weight.shape[2:]) == (1, 1):
                    continue  # the planar block kernel reads any layout (in place or from a copy)
                try:
                    packed, geom, kp = self._conv_plan(node, m)
                except Unsupported:
                    continue
                lay = ConvRenderer(packed, geom, kp, m.act, m.residual, padded_io=True).in_place_layout
                if lay is not None:
                    votes.setdefault(src(args[0]), set()).add("tight" if lay.tight else "padded")
            elif (node.op == "call_function" and node.target in ADD_FUNCS | MUL_FUNCS) or \
                    activation_of(node, self.modules) is not None:
                for a in args:
                    if _has_shape(a) and _has_shape(node) and _shape(a) == _shape(node):
                        self._union(node, src(a))
        group_votes: dict[fx.Node, set[str]] = {}
        for n, v in votes.items():
            group_votes.setdefault(self._group(n), set()).update(v)
        for root, v in group_votes.items():
            if v == {"tight"}:
                shape = _shape(root)
                self.layouts[root] = tight_layout(*shape, self.vw)

    # -- one method per node kind --------------------------------------------------------------------------------
    def _conv(self, node: fx.Node, m: FusedConv) -> None:
        if _on_vector(m):
            return self._linear(node, m)
        if m.groups != 1:
            return self._grouped(node, m)
        if self._defer_pointwise(node, m):
            return
        if self._planar_blocks(node, m):
            return
        packed, geom, kp = self._conv_plan(node, m)
        xb = self._padded_input(node.args[0])
        sub = self.subsamples.get(xb.index)
        # a 1x1 stride-2 conv (resnet's shortcut) reads the subsample its stride-2 neighbour already copied
        view = sub if sub and (geom.kh, geom.kw, geom.stride, geom.pad_h, geom.pad_w) == (1, 1, 2, 0, 0) and \
            not kp.cblock and not kp.shift and sub[3] == geom.wo else None
        out_layout = self.layouts.get(self._group(node)) or padded_layout(geom.ho, geom.wo)
        r = ConvRenderer(packed, geom, kp, m.act, m.residual, padded_io=True, in_layout=xb.layout,
                         out_layout=out_layout, sync=self.sync, input_view=view and view[1:3])
        if r.in_place and r.reach > SLACK:
            raise Unsupported(f"{node.target}: tile overhang larger than the buffer slack")
        i = len(self.scratch)
        self.scratch.append(r.scratch_floats)
        if kp.shift and r.g.tight and geom.stride == 2 and r.scratch_floats and (1, 0) in r.prep_phases:
            self.subsamples[xb.index] = (i, r.g.plane, 2 * r.g.phase_stride, r.g.wph)
        y = self._new_buf(node, True)
        res = self._padded_input(node.args[1]) if m.residual else None
        arrays = tuple(self._param(a) for a in kernel_arrays(packed, geom, kp))
        cmask = self._param(torch.tensor(r.colmask())) if r.vector_out else None
        self._step(node, SparseConv(packed, geom, kp, m.act, m.residual, xb, y, res, xb.layout, out_layout,
                                    view and view[1:3], arrays, cmask, view[0] if view else i))

    def _planar_blocks(self, node: fx.Node, m: FusedConv) -> bool:
        """A block-sparse 1x1 conv on the block kernel over whole planes: in place when its input and output
        planes line up (same origin and pitch), else (a strided conv, or other layouts) from a copy of its input
        pixels laid out like its output. False: the FKW path runs it (an output with a second copy, or planes
        smaller than the last tile)."""
        fit = self._planar_fit(node, m)
        if fit is None:
            return False
        blocks, kp, lout, length, span = fit
        xb = self._padded_input(node.args[0])
        _, ho, wo = _shape(node)
        lin = xb.layout or padded_layout(*xb.shape[1:])
        scaled = self._fold_gate(node.args[0], blocks)
        src, ldx = xb.expr, lin.plane
        if m.stride[0] != 1 or (lin.origin, lin.pitch) != (lout.origin, lout.pitch):
            k = len(self.scratch)
            self.scratch.append(xb.shape[0] * lout.plane + SLACK)
            src, ldx = f"((float *)S[{k}])", lout.plane
            self._step(node, PlanarCopy(xb, k, xb.shape[0], ho, wo, m.stride[0], lout))
        y = self._new_buf(node, True)
        res = self._padded_input(node.args[1]) if m.residual else None
        arrays = tuple(self._param(torch.from_numpy(a)) for a in (blocks.values, blocks.cols, blocks.row_ptr,
                                                                   blocks.bias))
        mk = self._param(_pixel_lanes(lout, ho, wo, span))
        if scaled is not None:
            g, k2 = scaled
            self._step(node, ScaleBlocks(arrays[0], arrays[1], g, blocks.n, int(blocks.cols.size), k2))
            self.extra_reads[node] = frozenset({g.index})
            self._release(node.args[0])
        self._step(node, PlanarBlocks(blocks, kp, m.act, m.residual, src, y, res, lout.origin, ldx, lout.plane,
                                      length, arrays, mk, scaled[1] if scaled else None))
        return True

    def _planar_fit(self, node: fx.Node, m: nn.Module) -> tuple | None:
        """(blocks, parameters, output layout, plane length, tile span) when the planar block kernel runs this
        conv (see :meth:`_planar_blocks`), else None."""
        blocks = getattr(m, "blocks", None)
        if not isinstance(m, FusedConv) or isinstance(m, FusedLinear) or not isinstance(blocks, PackedBlocks) or \
                tuple(m.weight.shape[2:]) != (1, 1) or m.stride[0] != m.stride[1] or tuple(m.padding) != (0, 0) or \
                m.in_shape is None or m.groups != 1:
            return None
        _, ho, wo = _shape(node)
        lout = self.layouts.get(self._group(node)) or padded_layout(ho, wo)
        if lout.copy:
            return None
        family = get_family(BlockParams.family)
        ks = family.candidates(self.vw, blocks.n)
        kp = self.params_for.get(node.target)
        # (pattern-loop parameters: a block layer's decision in artifacts written before families had their own)
        kp = BlockParams(kp.r, self.vw) if kp is not None and \
            kp.family in (BlockParams.family, PatternLoopsParams.family) and kp.r in {k.r for k in ks} else ks[1]
        tile = family.tile(blocks, kp, m.act, m.residual)
        length = ho * lout.pitch
        span = length // tile * tile + -(-(length % tile) // self.vw) * self.vw  # the last tile: whole vectors
        if lout.origin + span > lout.plane + lout.origin or span - length > SLACK:
            return None  # the last tile would reach the next plane's pixels
        return blocks, kp, lout, length, span

    def _fold_gate(self, node: fx.Node, blocks: PackedBlocks) -> tuple[Buffer, int] | None:
        """When ``node`` is a gate multiply deferred into this conv: its gate and the scratch entry for the scaled
        values."""
        g = self.gated.pop(node, None)
        if g is None:
            return None
        self.scratch.append(int(blocks.values.size))
        return g, len(self.scratch) - 1

    def _linear(self, node: fx.Node, m: nn.Linear | FusedLinear) -> None:
        x = self.where[node.args[0]]
        if x.padded and x.shape[1:] != (1, 1):
            raise Unsupported("linear on a spatial tensor")
        res = self.where[node.args[1]] if getattr(m, "residual", False) else None
        y = self._new_buf(node, x.padded)
        cout, cin = m.weight.shape[0], m.weight[0].numel()
        bias = self._param(m.bias.detach().float()) if m.bias is not None else None
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, PackedBlocks):  # read the kept blocks only (a classifier at 0.2: a fifth of the bytes)
            rows = int(blocks.row_ptr.size - 1)
            acc = Buffer(rows + blocks.n, (rows + blocks.n,), False, len(self.bufs))
            self.bufs.append(acc)
            # top to bottom (the block kernel's rotation by start row serves its row sweep, not a matvec)
            starts = np.repeat(np.arange(rows), np.diff(blocks.row_ptr))
            lanes = (starts[:, None] + np.arange(blocks.n)[None, :]) % blocks.n
            straight = np.ascontiguousarray(np.take_along_axis(blocks.values, lanes, 1))
            vals, cols, rp = (self._param(torch.from_numpy(a)) for a in (straight, blocks.cols, blocks.row_ptr))
            self._step(node, BlockMatvec(acc, x, rows, blocks.n, (vals, cols, rp)))
            self._step(node, Linear(x, y, res, cout, cin, getattr(m, "act", "none"), bias, None, acc))
            return
        w = m.weight.detach().float().reshape(cout, cin)
        if cin * cout <= COLUMN_WEIGHTS:  # outputs in vectors: no horizontal sums (SE's convs, small heads)
            padded = -(-cout // self.vw) * self.vw
            wt = torch.zeros(cin, padded)
            wt[:, :cout] = w.t()
            if m.bias is not None:
                bias = self._param(torch.cat([m.bias.detach().float(), torch.zeros(padded - cout)]))
            self._step(node, Linear(x, y, res, cout, cin, getattr(m, "act", "none"), bias, self._param(wt), None,
                                    True))
            return
        self._step(node, Linear(x, y, res, cout, cin, getattr(m, "act", "none"), bias, self._param(w), None))

    def _defer_pointwise(self, node: fx.Node, m: FusedConv) -> bool:
        """A stride-1 1x1 conv whose only reader is a depthwise conv over its channels, on a padded input small
        enough for PLANES planes on each thread's stack, and whose output is larger than a core's cache
        (FUSE_BYTES): planned inside that conv (:class:`PointwiseDepthwise`). Smaller outputs stay in cache between
        the two convs anyway (fusing those too measured slower on Zen 5). Its value is an alias of its input
        meanwhile, so the input lives until the depthwise conv has run."""
        users = list(node.users)
        if tuple(m.weight.shape[2:]) != (1, 1) or tuple(m.stride) != (1, 1) or tuple(m.padding) != (0, 0) or \
                m.residual or m.in_shape is None or len(users) != 1 or users[0].op != "call_module":
            return False
        dw = self.modules.get(users[0].target)
        if not isinstance(dw, FusedConv) or isinstance(dw, FusedLinear) or users[0].args[0] is not node or \
                tuple(dw.dilation) != (1, 1) or isinstance(dw.padding, str) or \
                dw.groups != m.weight.shape[0] or tuple(dw.weight.shape[:2]) != (dw.groups, 1):
            return False
        xb = self._padded_input(node.args[0])
        _, h, w = xb.shape
        lay = padded_layout(h, w)
        if 4 * m.weight.shape[0] * lay.plane <= FUSE_BYTES:
            return False
        if xb.layout != lay or PLANES * _plane_floats(lay, h, self.vw) > PLANE_FLOATS or \
                not get_family(DepthwiseParams.family).applies(tuple(dw.weight.shape), dw.groups, tuple(dw.stride),
                                                               tuple(dw.padding), lay):
            return False
        self.deferred[node] = m
        self._hold(node, xb)
        return True

    def _pointwise_depthwise(self, node: fx.Node, m: FusedConv, pw: FusedConv) -> None:
        x = self.where[node.args[0]]
        _, h, w = x.shape
        lay = padded_layout(h, w)
        unroll = 4 if self.registers >= 32 else 2  # PLANES x unroll accumulators, unroll loads
        span = -(-h * lay.pitch // (unroll * self.vw)) * unroll * self.vw
        wt2 = pw.weight.detach().float()[:, :, 0, 0]
        cout, cin = wt2.shape
        groups = -(-cout // PLANES)
        padded = torch.zeros(groups * PLANES, cin)
        padded[:cout] = wt2
        per_group = padded.reshape(groups, PLANES, cin)
        g_idx, cols = torch.nonzero((per_group != 0).any(1), as_tuple=True)  # each group's inputs, ascending
        group_ptr = torch.zeros(groups + 1, dtype=torch.int32)
        group_ptr[1:] = torch.cumsum(torch.bincount(g_idx, minlength=groups), 0)
        vals = per_group[g_idx, :, cols].contiguous()  # (kept inputs, PLANES): zero where a channel lacks one
        bias2 = torch.zeros(groups * PLANES)
        if pw.bias is not None:
            bias2[:cout] = pw.bias.detach().float()
        arrays = (self._param(vals), self._param(cols.to(torch.int32)), self._param(group_ptr), self._param(bias2))
        plane = ThreadPlane(_plane_floats(lay, h, self.vw), (cout, h, w), True, -1, Layout(0, lay.origin, lay.pitch))
        res = self._padded_input(node.args[1]) if m.residual else None
        y = self._new_buf(node, True)
        wt = self._param(m.weight.detach().float())
        bias = self._param(m.bias.detach().float()) if m.bias is not None else None
        kp = self.params_for.get(node.target)
        kp = kp if isinstance(kp, DepthwiseParams) and kp.vw == self.vw else \
            get_family(DepthwiseParams.family).candidates(self.vw)[0]
        dw = WindowConv(plane, y, res, wt, bias, tuple(m.weight.shape), m.groups, tuple(m.stride), tuple(m.padding),
                        m.act, kp)
        self._step(node, PointwiseDepthwise(x, plane.floats, span, unroll, arrays,
                                            self._param(_pixel_lanes(lay, h, w, span)), pw.act, dw))

    def _grouped(self, node: fx.Node, m: FusedConv) -> None:
        if tuple(m.dilation) != (1, 1) or isinstance(m.padding, str):
            raise Unsupported(f"{node.target}: grouped conv with dilation or string padding")
        if node.args[0] in self.deferred:
            return self._pointwise_depthwise(node, m, self.deferred.pop(node.args[0]))
        x = self._padded_input(node.args[0])
        res = self._padded_input(node.args[1]) if m.residual else None
        y = self._new_buf(node, True)
        wt = self._param(m.weight.detach().float())
        bias = self._param(m.bias.detach().float()) if m.bias is not None else None
        shape, stride, padding = tuple(m.weight.shape), tuple(m.stride), tuple(m.padding)
        family = next(f for f in map(get_family, list_families()) if f.format == "window" and
                      f.applies(shape, m.groups, stride, padding, x.layout))
        kp = self.params_for.get(node.target)
        kp = kp if kp is not None and kp.family == family.name and kp.vw == self.vw else family.candidates(self.vw)[0]
        self._step(node, WindowConv(x, y, res, wt, bias, shape, m.groups, stride, padding, m.act, kp))

    def _pool(self, node: fx.Node, kind: str, kernel, stride, padding, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None) -> None:
        """Max or average pooling (ceil_mode is read off the output shape the trace recorded)."""
        if dilation not in (1, (1, 1), [1, 1]):
            raise Unsupported(f"{node.name}: pooling with dilation")
        k, s, p = window_ops.pool_geometry(kernel, stride, padding)
        x = self._padded_input(node.args[0])
        y = self._new_buf(node, True)
        table = None
        if kind == "avg":
            (_, h, w), (_, ho, wo) = x.shape, y.shape
            inv = window_ops.avg_divisors(h, w, ho, wo, k, s, p, count_include_pad, divisor_override)
            table = self._param(torch.tensor(inv, dtype=torch.float32))
        self._step(node, Pool(kind, x, y, k, s, p, table))

    def _adaptive(self, node: fx.Node) -> None:
        x = self._padded_input(node.args[0])
        out = _shape(node)
        # a mean over (2, 3) without keepdim: (C,), addressed as (C, 1, 1)
        y = self._new_buf(node, not (len(out) != 3 or out[1:] == (1, 1)),
                          shape=(out[0], 1, 1) if len(out) != 3 else None)
        self._step(node, AdaptiveMean(x, y))

    def _broadcast_mul(self, node: fx.Node) -> None:
        a, b = node.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise Unsupported(f"{node.name}: multiply by a constant")
        if _shape(a) == _shape(node) and _shape(b) == _shape(node):
            return self._elementwise(node, "float v = {0} * {1}", [a, b])
        big, gate = (a, b) if _shape(a) == _shape(node) else (b, a)
        c = _shape(node)[0]
        if len(_shape(node)) != 3 or _shape(gate) not in ((c, 1, 1), (c,)) or _shape(big) != _shape(node):
            raise Unsupported(f"{node.name}: broadcast multiply other than by a per-channel vector")
        x, g = self._padded_input(big), self.where[gate]
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and users[0].args[0] is node and not g.padded and \
                self._planar_fit(users[0], self.modules[users[0].target]) is not None:
            self.gated[node] = g  # the conv scales its weights instead (ScaleBlocks); meanwhile an alias of x
            self._hold(node, x)
            return
        y = self._new_buf(node, True)
        _, h, w = y.shape
        # the rows run contiguously (the pad column is zero and stays zero: 0 * s)
        rows = h * y.layout.pitch if x.layout == y.layout and not y.layout.copy and y.layout.pitch in (w, w + 1) \
            else 0
        self._step(node, Gate(x, g, y, rows))

    def _activation(self, node: fx.Node, act: str) -> None:
        x = self.where[node.args[0]]
        if x.padded and not keeps_zero(act):  # borders must stay zero: pixels only
            self._step(node, PixelActivation(x, self._new_buf(node, True), act))
            return
        self._elementwise(node, "float v = {0};" + c_scalar(act), [node.args[0]])

    def _elementwise(self, node: fx.Node, expr: str, inputs: list[fx.Node]) -> None:
        ins = tuple(self.where[a] for a in inputs)
        if len({(b.padded, b.shape, b.layout) for b in ins}) != 1:
            raise Unsupported(f"{node.name}: operands in different layouts")
        self._step(node, Elementwise(expr, ins, self._new_buf(node, ins[0].padded)))

    def _flatten(self, node: fx.Node) -> None:
        x = self.where[node.args[0]]
        if not x.padded:
            self._hold(node, x)
            return
        self._step(node, Flatten(x, self._new_buf(node, False)))

    def _input(self, node: fx.Node) -> None:
        if not _has_shape(node) or node.meta["tensor_meta"].dtype != torch.float32:
            raise Unsupported("an input that is not a float32 tensor")
        shape = _shape(node)
        if len(shape) not in (1, 3):
            raise Unsupported("an input that is neither an image batch (N, C, H, W) nor a vector batch (N, C)")
        b = self._new_buf(node, len(shape) == 3)
        self.input_indices.add(b.index)  # written at the start of every image: never handed to another value
        self.inputs.append(b)
        self._step(node, InputCopy(len(self.inputs) - 1, b))

    def _arrives(self, node: fx.Node) -> None:
        """(survey) A node that runs in torch: later nodes read its output as if it were an input."""
        if _has_shape(node) and len(_shape(node)) in (1, 3) and node.meta["tensor_meta"].dtype == torch.float32:
            self._new_buf(node, len(_shape(node)) == 3)

    def _function_pool(self, node: fx.Node) -> None:
        """F.max_pool2d / F.avg_pool2d with their positional or keyword arguments."""
        if node.target is F.max_pool2d:
            names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
            a = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False,
                 **dict(zip(names, node.args, strict=False)), **node.kwargs}
            if a["return_indices"]:
                raise Unsupported(f"{node.name}: max pooling with indices")
            self._pool(node, "max", a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
        else:
            names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
            a = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None,
                 **dict(zip(names, node.args, strict=False)), **node.kwargs}
            self._pool(node, "avg", a["kernel_size"], a["stride"], a["padding"], 1, a["ceil_mode"],
                       a["count_include_pad"], a["divisor_override"])

    def _node(self, node: fx.Node) -> None:
        """Plan the step(s) of one graph node (none for aliases)."""
        act = activation_of(node, self.modules)
        if node.op == "placeholder":
            self._input(node)
        elif act is not None:
            self._activation(node, act)
        elif node.op == "call_module":
            m = self.modules[node.target]
            if isinstance(m, FusedLinear):
                self._linear(node, m)
            elif isinstance(m, FusedConv):
                self._conv(node, m)
            elif isinstance(m, nn.MaxPool2d):
                self._pool(node, "max", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif isinstance(m, nn.AvgPool2d):
                self._pool(node, "avg", m.kernel_size, m.stride, m.padding, 1, m.ceil_mode, m.count_include_pad,
                           m.divisor_override)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                self._adaptive(node)
            elif isinstance(m, nn.Linear):
                self._linear(node, m)
            elif isinstance(m, nn.Flatten):
                self._flatten(node)
            else:
                raise Unsupported(f"no native form of module {type(m).__name__}")
        elif node.op == "call_function" and node.target in ADD_FUNCS and len(node.args) == 2 and not node.kwargs \
                and all(isinstance(a, fx.Node) for a in node.args) and _shape(node.args[0]) == _shape(node.args[1]):
            self._elementwise(node, "float v = {0} + {1}", list(node.args))
        elif node.op == "call_function" and node.target in MUL_FUNCS and len(node.args) == 2 and not node.kwargs:
            self._broadcast_mul(node)
        elif node.op == "call_function" and node.target in (F.max_pool2d, F.avg_pool2d):
            self._function_pool(node)
        elif (node.op == "call_function" and node.target is F.adaptive_avg_pool2d) or _is_global_mean(node):
            if node.target is F.adaptive_avg_pool2d and len(_shape(node)) != 3:
                raise Unsupported(f"{node.name}: adaptive pooling of a non-image")
            self._adaptive(node)
        elif (node.op == "call_function" and node.target in _FLATTEN_FN) or \
                (node.op == "call_method" and node.target in _ALIAS_METHODS):
            if len(_shape(node)) == 1 or not self.where[node.args[0]].padded:
                self._flatten(node)
            else:
                raise Unsupported(f"{node.op} {node.target} to a spatial shape")
        else:
            what = getattr(node.target, "__name__", node.target)
            raise Unsupported(f"no native form of {node.op.replace('call_', '')} {what}")

    def _barrier_free(self) -> frozenset[fx.Node]:
        """Convs whose next statement does not read their output and whose previous statement keeps its
        barrier: their own barrier can go. In resnets the stride-2 conv and the 1x1 shortcut
        after it read the same input, so the first runs straight into the second."""
        free: set[fx.Node] = set()
        for i, (node, reads, _) in enumerate(self.statements[:-1]):  # the last statement ends the image: keeps it
            m = self.gm.get_submodule(node.target) if node.op == "call_module" else None
            _, next_reads, next_writes = self.statements[i + 1]
            if isinstance(m, FusedConv) and not isinstance(m, FusedLinear) and \
                    self.where[node].index not in next_reads and not next_writes & (reads | {self.where[node].index}) \
                    and (i == 0 or self.statements[i - 1][0] not in free):
                free.add(node)
        return frozenset(free)

    def plan(self) -> NetworkPlan:
        self._plan_layouts()
        out_nodes = None
        for node in self.gm.graph.nodes:
            if node.op == "output":
                out = node.args[0]
                out_nodes = list(out) if isinstance(out, tuple | list) else [out]
                if self.survey:
                    break
                if not out_nodes or not all(isinstance(o, fx.Node) and o in self.where for o in out_nodes):
                    bad = next((o for o in out_nodes if isinstance(o, fx.Node) and o not in self.where), node)
                    raise _at(Unsupported("an output that is not a tensor"), bad)
                continue
            planned = len(self.steps)
            try:
                try:
                    self._node(node)
                except KeyError:  # an operand that has no native buffer
                    raise Unsupported("reads a value that is not a float32 image or vector tensor") from None
            except Unsupported as exc:
                if not self.survey:
                    raise _at(exc, node) from None
                del self.steps[planned:]
                self.torch_nodes[_at(exc, node).node] = str(exc)
                self._arrives(node)
                continue
            if len(self.steps) > planned:
                self.statements.append((node, frozenset(self.where[a].index for a in node.all_input_nodes) |
                                        self.extra_reads.pop(node, frozenset()),
                                        frozenset({self.where[node].index} if node in self.where else ())))
            self._release(node)
        if out_nodes is None:
            raise Unsupported("no output")
        if self.survey:
            return self._frozen([], ())
        for k, o in enumerate(out_nodes):
            self.steps.append(Step("output copy", OutputCopy(k, self.where[o], _numel(o))))
        return self._frozen(out_nodes, self._barrier_free())

    def _frozen(self, out_nodes: list[fx.Node], free: frozenset[fx.Node]) -> NetworkPlan:
        conv_scratch = len(self.scratch)
        if self.spin:
            self.scratch.append(16)  # the barrier's two counters, on a cache line of their own
        profiled = tuple(dict.fromkeys(s.node for s in self.steps))
        if self.profile:
            self.scratch.append(2 * len(profiled))  # a double per row
        return NetworkPlan(
            self.target, self.spin, self.profile, tuple(self.bufs), tuple(self.scratch), conv_scratch,
            tuple(self.params), tuple(self.steps), tuple(self.statements), free, tuple(self.inputs),
            tuple(_numel(n) for n in self.gm.graph.nodes if n.op == "placeholder"),
            tuple(_numel(o) for o in out_nodes), tuple(_shape(o) for o in out_nodes),
            profiled if self.profile else (), dict(self.torch_nodes))
