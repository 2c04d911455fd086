"""Whole-network code generation: every layer of a supported graph in one native function.

Per-layer kernels still pay Python, allocation and an OpenMP fork/join per layer — on small CIFAR-size models that
overhead is as large as the sparse compute itself, and between layers torch's and our thread pools fight for the
cores. Here the fused graph becomes one C function: one parallel region per call, each layer a set of orphaned
worksharing loops joined by a barrier (a spinning one of our own when every thread has a core: a small model has
one or two per layer, and OpenMP's cost 0.2-0.4 us each here), none after a conv whose output the next statement
does not read; images processed one after another through preallocated per-image buffers. Supported nodes:
FusedConv (sparse kernels; grouped and depthwise convs and 1x1 convs on pooled vectors as loops of their own),
max / average / adaptive pooling in module and function forms, global means, Linear, every activation of
:mod:`tessera.compiler.activations`, residual adds, broadcast multiplies (squeeze-excitation gates), flatten /
view. A graph may have several inputs and outputs (a native segment between torch islands, see
:mod:`tessera.compiler.partition`); the first node it cannot emit raises :class:`Unsupported` naming that node.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from tessera.compiler import window_ops
from tessera.compiler.activations import activation_of, c_scalar, keeps_zero
from tessera.compiler.block_codegen import BlockRenderer, block_candidates
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
from tessera.compiler.kernels import conv_candidates
from tessera.compiler.target import Target
from tessera.compiler.toolchain import compile_cached, load_library

_P = ctypes.c_void_p
_FLATTEN_FN = {torch.flatten}
_ALIAS_METHODS = {"flatten", "view", "reshape", "contiguous"}


class Unsupported(Exception):
    """A node the whole-network function cannot emit; ``node`` is set by the renderer's walk."""

    node: fx.Node | None = None


@dataclass
class _Buf:
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


@dataclass
class _ConvCall:
    """A conv statement whose function is rendered at the end (its join depends on the next statement)."""

    node: fx.Node
    renderer: ConvRenderer | _PlanarBlocks
    args: str  # the call's argument list and semicolon


@dataclass
class _PlanarBlocks:
    """A block-sparse stride-1 1x1 conv run in place over its planes (:meth:`BlockRenderer.render_planar`)."""

    renderer: BlockRenderer
    origin: int
    ldx: int
    ldy: int
    length: int
    sync: str
    no_barrier: bool = False

    def render_body(self, name: str) -> str:
        return self.renderer.render_planar(name, self.origin, self.ldx, self.ldy, self.length, self.sync,
                                           self.no_barrier)


SPIN_BARRIER = """
/* A centralised barrier with a generation count: ~25 ns between two cores here, where OpenMP's took 0.2-0.4 us,
   and a whole network has one or two per layer. Its counters live in the call's own scratch (two calls of one
   library never share them); each thread of the team keeps a pointer to them and the team's size. */
typedef struct { unsigned count, gen; } tsr_bar;
static __thread tsr_bar *tsr_bar_;
static __thread int tsr_nthr_;
static inline void tsr_sync(void) {
    if (tsr_nthr_ == 1) return;
    tsr_bar *b = tsr_bar_;
    const unsigned gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == (unsigned)tsr_nthr_) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#elif defined(__aarch64__)
            __asm__ __volatile__("yield");
#endif
        }
    }
}
"""


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


class NetworkRenderer:
    """Walks the fused graph and emits C; collects the parameter arrays the C code reads."""

    def __init__(self, gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target, spin: bool = False,
                 survey: bool = False, profile: bool = False):
        """``spin``: threads join at the spinning barrier of :data:`SPIN_BARRIER` instead of OpenMP's (only when
        every thread has a core of its own: a waiting thread burns its core). ``survey``: do not stop at the
        first node it cannot emit: record it in ``torch_nodes`` (node -> reason), treat its output as arriving
        from outside and go on, so one walk names every node that has to run in torch."""
        self.survey = survey
        self.profile = profile  # thread 0 adds each node's wall time to a table in the scratch (profile_network)
        self.line_nodes: list[fx.Node] = []  # the node each of self.lines belongs to
        self.profiled: list[str] = []  # the table's rows, in order
        self.torch_nodes: dict[fx.Node, str] = {}
        self.gm, self.params_for = gm, params_for
        self.vw, self.registers = target.vector_width, target.registers
        self.modules = dict(gm.named_modules())
        self.inputs: list[_Buf] = []
        self.outputs: list[_Buf] = []
        self.sync = "tsr_sync();" if spin else ""
        # emitting node, buffers its statement reads, buffer it writes
        self.statements: list[tuple[fx.Node, set[int], set[int]]] = []
        self.pool: dict[tuple, list[int]] = {}  # (floats, padded, layout) -> indices of free buffers
        self.done: set[fx.Node] = set()
        self.released: set[int] = set()  # indices in the pool or handed out again since
        self.input_indices: set[int] = set()
        self.free: frozenset[fx.Node] = frozenset()  # convs without a barrier after them (see _barrier_free)
        self.params: list[torch.Tensor] = []  # pointer table, in order
        self.scratch: list[int] = []  # floats per conv scratch (padded input)
        self.bufs: list[_Buf] = []
        self.where: dict[fx.Node, _Buf] = {}  # node -> the buffer holding its per-image output
        self.lines: list[str | _ConvCall] = []
        self.funcs: list[str] = []
        self.bodies: dict[str, str] = {}  # body source -> function name
        self.parent: dict[fx.Node, fx.Node] = {}  # union-find over nodes whose buffers share a layout
        self.layouts: dict[fx.Node, Layout] = {}  # group root -> its layout when not the padded one
        self.conv_plans: dict[fx.Node, tuple[PackedConv, ConvGeometry, KernelParams]] = {}
        # input buffer -> (scratch, channel stride, offset, row pitch) of its stride-2 subsample x[2a][2b], copied
        # as the (odd padded row, even column) phase plane by a stride-2 shifted conv that reads that buffer
        self.subsamples: dict[int, tuple[int, int, int, int]] = {}

    def _param(self, t: torch.Tensor) -> str:
        self.params.append(t.contiguous())
        return f"P[{len(self.params) - 1}]"

    def _new_buf(self, node: fx.Node, padded: bool) -> _Buf:
        shape = _shape(node)
        if padded:
            if len(shape) != 3:
                raise Unsupported(f"{node.name}: padded layout needs a (C, H, W) activation")
            layout = self.layouts.get(self._group(node)) or padded_layout(shape[1], shape[2])
            floats = layout.floats(shape[0])
        else:
            layout, floats = None, _numel(node)
        free = self.pool.get((floats, padded, layout))
        if free:  # memory of a value nobody reads any more, in the same layout: its zero borders line up
            b = _Buf(floats, shape, padded, free.pop(), layout)
            self.subsamples.pop(b.index, None)
            self.released.discard(b.index)
        else:
            b = _Buf(floats, shape, padded, len(self.bufs), layout)
            self.bufs.append(b)
        self.where[node] = b
        return b

    def _release(self, node: fx.Node) -> None:
        """After ``node``'s statement: the buffers of its operands whose every holder (a node whose value lives
        there, aliases included) has no reader left go back to the pool. A network's activations then share a
        few buffers that stay in cache instead of one buffer per layer (ResNet-50: 100+ MB) streaming from DRAM."""
        self.done.add(node)
        for a in node.all_input_nodes:
            b = self.where.get(a)
            if b is None or b.index in self.released or b.index in self.input_indices:
                continue
            holders = [n for n, hb in self.where.items() if hb.index == b.index]
            if all(u in self.done for h in holders for u in h.users):
                self.released.add(b.index)
                self.pool.setdefault((b.floats, b.padded, b.layout), []).append(b.index)

    def _padded_input(self, node: fx.Node) -> _Buf:
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
        if kp is None and tight_rows(geom, self.vw) and shift_applies(geom, 1, self.vw):
            # a layer the tuner left dense (e.g. the stem): the shifted kernel on tight rows, single-filter units;
            # it writes a tight output as whole rows, where the grouped kernel's tiles cut rows into pieces. Tiles
            # of 4 vectors: a dense kernel loads all three rows, and 3 sets x 8 accumulators plus a row of loads
            # overflow the registers (Zen 5, stem at 32x32: resnet20 6.9 -> 5.3 us, vgg6 9.7 -> 7.6 us)
            kp = KernelParams(tight_tile(geom, self.vw, 4), self.vw, cin, True)
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

    def _conv(self, node: fx.Node, m: FusedConv) -> None:
        if _on_vector(m):
            return self._linear(node, m)
        if m.groups != 1:
            return self._grouped(node, m)
        if self._planar_blocks(node, m):
            return
        packed, geom, kp = self._conv_plan(node, m)
        xb = self._padded_input(node.args[0])
        sub = self.subsamples.get(xb.index)
        # a 1x1 stride-2 conv (resnet's shortcut) reads the subsample its stride-2 neighbour already copied
        view = sub if sub and (geom.kh, geom.kw, geom.stride, geom.pad_h, geom.pad_w) == (1, 1, 2, 0, 0) and \
            not kp.cblock and not kp.shift and sub[3] == geom.wo else None
        r = ConvRenderer(packed, geom, kp, m.act, m.residual, padded_io=True, in_layout=xb.layout,
                         out_layout=self.layouts.get(self._group(node)) or padded_layout(geom.ho, geom.wo),
                         sync=self.sync, input_view=view and view[1:3])
        if r.in_place and r.reach > SLACK:
            raise Unsupported(f"{node.target}: tile overhang larger than the buffer slack")
        i = len(self.scratch)
        self.scratch.append(r.scratch_floats)
        if kp.shift and geom.stride == 2 and r.scratch_floats and (1, 0) in r.prep_phases:
            self.subsamples[xb.index] = (i, r.g.plane, 2 * r.g.phase_stride, r.g.wph)
        x = xb.expr
        y = self._new_buf(node, True).expr
        res = f"{self._padded_input(node.args[1]).expr}, " if m.residual else ""
        arrays = kernel_arrays(packed, geom, kp)
        ptrs = [self._param(a) for a in arrays]
        cmask = f"(const float *){self._param(torch.tensor(r.colmask()))}, " if r.vector_out else ""
        # rendered in _finish, once it is known whether the next statement reads this conv's output
        xp = view[0] if view else i
        self.lines.append(_ConvCall(node, r, f"({x}, {y}, {res}(const float *){ptrs[0]}, (const int32_t *){ptrs[1]}, "
                                             f"(const int32_t *){ptrs[2]}, (const int32_t *){ptrs[3]}, "
                                             f"(const float *){ptrs[4]}, {cmask}(float *)S[{xp}]);"))

    def _planar_blocks(self, node: fx.Node, m: FusedConv) -> bool:
        """A block-sparse 1x1 conv on the block kernel over whole planes: in place when its input and output
        planes line up (same origin and pitch), else (a strided conv, or other layouts) from a copy of its input
        pixels laid out like its output. False: the FKW path renders it (an output with a second copy, or planes
        smaller than the last tile)."""
        blocks = getattr(m, "blocks", None)
        if not isinstance(blocks, PackedBlocks) or tuple(m.weight.shape[2:]) != (1, 1) or \
                m.stride[0] != m.stride[1] or tuple(m.padding) != (0, 0) or m.in_shape is None:
            return False
        xb = self._padded_input(node.args[0])
        _, ho, wo = _shape(node)
        lin = xb.layout or padded_layout(*xb.shape[1:])
        lout = self.layouts.get(self._group(node)) or padded_layout(ho, wo)
        if lout.copy:
            return False
        ks = block_candidates(self.vw, blocks.n)
        kp = self.params_for.get(node.target)
        kp = kp if kp is not None and kp.r in {k.r for k in ks} and not kp.cblock and not kp.shift else ks[1]
        r = BlockRenderer(blocks, KernelParams(kp.r, self.vw), m.act, m.residual, masked=True)
        length, T = ho * lout.pitch, r.tile
        span = length // T * T + -(-(length % T) // self.vw) * self.vw  # the last tile runs whole vectors only
        if lout.origin + span > lout.plane + lout.origin or span - length > SLACK:
            return False  # the last tile would reach the next plane's pixels
        src, ldx = xb.expr, lin.plane
        if m.stride[0] != 1 or (lin.origin, lin.pitch) != (lout.origin, lout.pitch):
            cin, s = xb.shape[0], m.stride[0]
            k = len(self.scratch)
            self.scratch.append(cin * lout.plane + SLACK)
            src, ldx = f"((float *)S[{k}])", lout.plane
            self.lines.append(self._loop(f"""
    for (int q = 0; q < {cin * ho}; q++) {{
        const int c = q / {ho}, i = q - c * {ho};
        float *d = {src} + (long)c * {lout.plane} + {lout.origin} + i * {lout.pitch};
        for (int j = 0; j < {wo}; j++) d[j] = {xb.at("c", f"i * {s}", f"j * {s}")};
    }}""", rows=True))
        mask = [-1 if p < length and p % lout.pitch < wo else 0 for p in range(span)]
        y = self._new_buf(node, True)
        res = self._padded_input(node.args[1]).expr if m.residual else "0"
        ptrs = [self._param(torch.from_numpy(a)) for a in (blocks.values, blocks.cols, blocks.row_ptr, blocks.bias)]
        mk = self._param(torch.tensor(mask, dtype=torch.int32))
        call = _PlanarBlocks(r, lout.origin, ldx, lout.plane, length, self.sync)
        self.lines.append(_ConvCall(node, call, f"({src}, {y.expr}, {res}, (const float *){ptrs[0]}, "
                                                f"(const int32_t *){ptrs[1]}, (const int32_t *){ptrs[2]}, "
                                                f"(const float *){ptrs[3]}, (const int32_t *){mk});"))
        return True

    def _call(self, c: _ConvCall, free: frozenset[fx.Node]) -> str:
        """The call of a conv's function; layers with the same geometry, patterns, tile, epilogue and join share
        one function (less for gcc to build)."""
        c.renderer.no_barrier = c.node in free
        body = c.renderer.render_body("CONV")
        if body not in self.bodies:
            self.bodies[body] = f"conv{len(self.bodies)}"
            self.funcs.append(body.replace("CONV", self.bodies[body]))
        return self.bodies[body] + c.args

    def _maxpool(self, node: fx.Node, m: nn.MaxPool2d) -> None:
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode or \
                not isinstance(m.kernel_size, int) and m.kernel_size[0] != m.kernel_size[1]:
            raise Unsupported("maxpool configuration")
        x = self._padded_input(node.args[0])
        c, h, w = x.shape
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        y = self._new_buf(node, True)
        self.lines.append(self._loop(f"""
    for (int i = 0; i < {ho}; i++) for (int c = 0; c < {c}; c++) for (int j = 0; j < {wo}; j++) {{
        float m = {x.at("c", f"i * {s}", f"j * {s}")};
        for (int u = 0; u < {k}; u++) for (int v = 0; v < {k}; v++) {{
            float q = {x.at("c", f"i * {s} + u", f"j * {s} + v")}; m = q > m ? q : m; }}
        {y.put("c", "i", "j", "m")} }}""", rows=True))

    def _avgpool(self, node: fx.Node, m: nn.AdaptiveAvgPool2d) -> None:
        if m.output_size not in (1, (1, 1)):
            raise Unsupported("adaptive pooling to more than 1x1")
        x = self._padded_input(node.args[0])
        c, h, w = x.shape
        y = self._new_buf(node, False)
        self.lines.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) {{ float s = 0.f;
        for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++) s += {x.at("c", "i", "j")};
        {y.expr}[c] = s * {1.0 / (h * w)!r}f; }}"""))

    def _flatten(self, node: fx.Node) -> None:
        x = self.where[node.args[0]]
        if not x.padded:
            self.where[node] = x
            return
        c, h, w = x.shape
        y = self._new_buf(node, False)
        self.lines.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++)
        {y.expr}[(long)c * {h * w} + i * {w} + j] = {x.at("c", "i", "j")};"""))

    def _linear(self, node: fx.Node, m: nn.Linear | FusedLinear) -> None:
        """A matrix-vector product per image: Linear, or a 1x1 conv on a 1x1 image (flat or padded buffers)."""
        x = self.where[node.args[0]]
        if x.padded and x.shape[1:] != (1, 1):
            raise Unsupported("linear on a spatial tensor")
        res = self.where[node.args[1]] if getattr(m, "residual", False) else None
        y = self._new_buf(node, x.padded)
        cout, cin = m.weight.shape[0], m.weight[0].numel()
        act = c_scalar(getattr(m, "act", "none"), "s")
        b = f"((const float *){self._param(m.bias.detach().float())})[o]" if m.bias is not None else "0.f"
        def xi(v):
            return x.at(v, "0", "0") if x.padded else f"{x.expr}[{v}]"
        radd = "" if res is None else f" s += {res.at('o', '0', '0') if res.padded else res.expr + '[o]'};"
        store = y.put("o", "0", "0", "s") if y.padded else f"{y.expr}[o] = s;"
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, PackedBlocks):  # read the kept blocks only (a classifier at 0.2: a fifth of the bytes)
            sums = self._block_matvec(blocks, xi("ci"))
            self.lines.append(self._loop(f"""
    for (int o = 0; o < {cout}; o++) {{ float s = {sums}[o];
        s += {b};{radd}{act} {store} }}"""))
            return
        wp = self._param(m.weight.detach().float().reshape(cout, cin))
        self.lines.append(self._loop(f"""
    for (int o = 0; o < {cout}; o++) {{ const float *w = (const float *){wp} + (long)o * {cin};
        float s = 0.f; for (int i = 0; i < {cin}; i++) s += w[i] * {xi("i")};
        s += {b};{radd}{act} {store} }}"""))

    def _block_matvec(self, p: PackedBlocks, xi: str) -> str:
        """Emit y = W x over the packed blocks into a buffer of its own (returned): work items are bands of 64
        rows, each summing the blocks that start in its band or up to N-1 rows above it."""
        rows = int(p.row_ptr.size - 1)
        acc = _Buf(rows + p.n, (rows + p.n,), False, len(self.bufs))
        self.bufs.append(acc)
        vals, cols, rp = (self._param(torch.from_numpy(a)) for a in (p.values, p.cols, p.row_ptr))
        band = 64
        self.lines.append(self._loop(f"""
    for (int r0 = 0; r0 < {rows}; r0 += {band}) {{
        const int r1 = r0 + {band} < {rows} ? r0 + {band} : {rows};
        float a[{band + 2 * p.n}] = {{0}};
        for (int r = r0 - {p.n - 1} > 0 ? r0 - {p.n - 1} : 0; r < r1; r++)
            for (int k = ((const int32_t *){rp})[r]; k < ((const int32_t *){rp})[r + 1]; k++) {{
                const int ci = ((const int32_t *){cols})[k]; const float xv = {xi};
                const float *v = (const float *){vals} + (long)k * {p.n};
                for (int l = 0; l < {p.n}; l++) a[r - r0 + {p.n - 1} + l] += v[(r + l) % {p.n}] * xv;
            }}
        for (int r = r0; r < r1; r++) {acc.expr}[r] = a[r - r0 + {p.n - 1}];
    }}"""))
        return acc.expr

    def _grouped(self, node: fx.Node, m: FusedConv) -> None:
        if tuple(m.dilation) != (1, 1) or isinstance(m.padding, str):
            raise Unsupported(f"{node.target}: grouped conv with dilation or string padding")
        x = self._padded_input(node.args[0])
        res = self._padded_input(node.args[1]) if m.residual else None
        y = self._new_buf(node, True)
        wt = f"(const float *){self._param(m.weight.detach().float())}"
        bias = f"((const float *){self._param(m.bias.detach().float())})[c]" if m.bias is not None else "0.f"
        shape = tuple(m.weight.shape)
        if shape[1] == 1 and shape[0] == m.groups and tuple(m.stride) in ((1, 1), (2, 2)) and \
                x.layout is not None and x.layout.origin >= m.padding[1]:  # its first loads start at -padding
            self.lines.append(self._loop(window_ops.depthwise_conv(
                x, y, res, wt, bias, shape, m.stride, m.padding, m.act, self.vw), rows=True))
            return
        self.lines.append(self._loop(window_ops.grouped_conv(
            x, y, res, wt, bias, shape, m.groups, m.stride, m.padding, m.act), rows=True))

    def _pool(self, node: fx.Node, kind: str, kernel, stride, padding, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None) -> None:
        """Max or average pooling (ceil_mode is read off the output shape the trace recorded)."""
        if dilation not in (1, (1, 1), [1, 1]):
            raise Unsupported(f"{node.name}: pooling with dilation")
        k, s, p = window_ops.pool_geometry(kernel, stride, padding)
        x = self._padded_input(node.args[0])
        y = self._new_buf(node, True)
        if kind == "max":
            self.lines.append(self._loop(window_ops.max_pool(x, y, k, s, p), rows=True))
            return
        (_, h, w), (_, ho, wo) = x.shape, y.shape
        inv = window_ops.avg_divisors(h, w, ho, wo, k, s, p, count_include_pad, divisor_override)
        table = f"((const float *){self._param(torch.tensor(inv, dtype=torch.float32))})"
        self.lines.append(self._loop(window_ops.avg_pool(x, y, k, s, p, table), rows=True))

    def _adaptive(self, node: fx.Node) -> None:
        x = self._padded_input(node.args[0])
        out = _shape(node)
        y = self._new_buf(node, not (len(out) != 3 or out[1:] == (1, 1)))
        if len(out) != 3:  # a mean over (2, 3) without keepdim: (C,)
            y.shape = (out[0], 1, 1)
        self.lines.append(self._loop(window_ops.adaptive_avg_pool(x, y, self.vw)))

    def _broadcast_mul(self, node: fx.Node) -> None:
        """x * g with g of shape (C, 1, 1): the squeeze-excitation gate."""
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
        y = self._new_buf(node, True)
        _, h, w = y.shape
        if x.layout == y.layout and not y.layout.copy and y.layout.pitch in (w, w + 1):
            # the rows run contiguously (the pad column is zero and stays zero: 0 * s)
            n = h * y.layout.pitch
            self.lines.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) {{ const float s = {g.expr}[c];
        const float *xr = &{x.at("c", "0", "0")}; float *yr = &{y.at("c", "0", "0")};
        for (int j = 0; j < {n}; j++) yr[j] = xr[j] * s; }}"""))
            return
        self.lines.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) {{ const float s = {g.expr}[c];
        for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++) {{ const float v = {x.at("c", "i", "j")} * s;
            {y.put("c", "i", "j", "v")} }} }}"""))

    def _activation(self, node: fx.Node, act: str) -> None:
        x = self.where[node.args[0]]
        if x.padded and not keeps_zero(act):  # borders must stay zero: pixels only
            y = self._new_buf(node, True)
            c, h, w = y.shape
            self.lines.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++) {{
        float v = {x.at("c", "i", "j")};{c_scalar(act)} {y.put("c", "i", "j", "v")} }}"""))
            return
        self._elementwise(node, "float v = {0};" + c_scalar(act), [node.args[0]])

    def _loop(self, loop: str, rows: bool = False) -> str:
        """A worksharing loop of the network body and its join: OpenMP's implicit barrier, or ``nowait`` and the
        spinning barrier (the same rule as :meth:`ConvRenderer.omp_for` for the convs)."""
        note = "  /* rows across threads, like the conv tiles */" if rows else ""
        join = f"\n    {self.sync}" if self.sync else ""
        return f"#pragma omp for schedule(static){' nowait' if self.sync else ''}{note}\n    {loop.lstrip()}{join}"

    def _elementwise(self, node: fx.Node, expr: str, inputs: list[fx.Node]) -> None:
        ins = [self.where[a] for a in inputs]
        if len({(b.padded, b.shape, b.layout) for b in ins}) != 1:
            raise Unsupported(f"{node.name}: operands in different layouts")
        y = self._new_buf(node, ins[0].padded)
        n = y.floats
        self.lines.append(self._loop(f"""
    for (long i = 0; i < {n}; i++) {{ {expr.format(*[f"{a.expr}[i]" for a in ins])} ; {y.expr}[i] = v; }}"""))

    def render(self) -> str:
        self._plan_layouts()
        out_nodes = None
        for node in self.gm.graph.nodes:
            if node.op == "output":
                out = node.args[0]
                out_nodes = list(out) if isinstance(out, tuple | list) else [out]
                if self.survey:
                    return ""
                if not out_nodes or not all(isinstance(o, fx.Node) and o in self.where for o in out_nodes):
                    bad = next((o for o in out_nodes if isinstance(o, fx.Node) and o not in self.where), node)
                    raise _at(Unsupported("an output that is not a tensor"), bad)
                continue
            emitted = len(self.lines)
            try:
                try:
                    self._node(node)
                except KeyError:  # an operand that has no native buffer
                    raise Unsupported("reads a value that is not a float32 image or vector tensor") from None
            except Unsupported as exc:
                if not self.survey:
                    raise _at(exc, node) from None
                del self.lines[emitted:]
                self.torch_nodes[_at(exc, node).node] = str(exc)
                self._arrives(node)
                continue
            self.line_nodes.extend([node] * (len(self.lines) - emitted))
            if len(self.lines) > emitted:
                self.statements.append((node, {self.where[a].index for a in node.all_input_nodes},
                                        {self.where[node].index} if node in self.where else set()))
            self._release(node)
        if out_nodes is None:
            raise Unsupported("no output")
        return self._finish(out_nodes)

    def _timed(self, lines: list[str], copies: int) -> list[str]:
        """``lines`` with a clock tick after each: thread 0 adds the time since the previous tick to its node's
        row of a table of doubles in the last scratch (rows in :attr:`profiled`; the output copy last)."""
        owners = [n.name for n in self.line_nodes] + ["output copy"] * copies
        rows = list(dict.fromkeys(owners))
        self.profiled = rows
        k = len(self.scratch)
        self.scratch.append(2 * len(rows))
        out = ["if (omp_get_thread_num() == 0) tsr_last_ = tsr_now();"]
        for ln, owner in zip(lines, owners, strict=True):
            out += [ln, f"if (omp_get_thread_num() == 0) {{ const double t_ = tsr_now(); "
                        f"((double *)S[{k}])[{rows.index(owner)}] += t_ - tsr_last_; tsr_last_ = t_; }}"]
        return out

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

    def _node(self, node: fx.Node) -> None:
        """Emit the statement(s) of one graph node (none for aliases)."""
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

    def _input(self, node: fx.Node) -> None:
        if not _has_shape(node) or node.meta["tensor_meta"].dtype != torch.float32:
            raise Unsupported("an input that is not a float32 tensor")
        shape = _shape(node)
        if len(shape) not in (1, 3):
            raise Unsupported("an input that is neither an image batch (N, C, H, W) nor a vector batch (N, C)")
        b = self._new_buf(node, len(shape) == 3)
        self.input_indices.add(b.index)  # written at the start of every image: never handed to another value
        k = len(self.inputs)
        self.inputs.append(b)
        if len(shape) == 1:
            self.lines.append(self._loop(f"""
    for (long i = 0; i < {shape[0]}; i++) {b.expr}[i] = xb{k}[i];"""))
            return
        c, h, w = shape
        self.lines.append(self._loop(f"""
    for (int i = 0; i < {h}; i++) for (int c = 0; c < {c}; c++) for (int j = 0; j < {w}; j++)
        {b.put("c", "i", "j", f"xb{k}[(long)c * {h * w} + i * {w} + j]")}""", rows=True))

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

    def _finish(self, out_nodes: list[fx.Node]) -> str:
        """The copy of the outputs and the whole C unit around the statements."""
        self.out_floats = [_numel(o) for o in out_nodes]
        self.in_floats = [_numel(n) for n in self.gm.graph.nodes if n.op == "placeholder"]
        self.out_shapes = [_shape(o) for o in out_nodes]
        copies = []
        for k, o in enumerate(out_nodes):
            ob = self.where[o]
            if ob.padded:
                c, h, w = ob.shape
                copies.append(self._loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++)
        yb{k}[(long)c * {h * w} + i * {w} + j] = {ob.at("c", "i", "j")};"""))
            else:
                copies.append(self._loop(f"""
    for (long i = 0; i < {self.out_floats[k]}; i++) yb{k}[i] = {ob.expr}[i];"""))
        self.free = self._barrier_free()
        lines = [self._call(ln, self.free) if isinstance(ln, _ConvCall) else ln for ln in self.lines] + copies
        self.conv_scratch = len(self.scratch)  # one scratch per conv; the barrier's counters after them
        prelude, start = ConvRenderer.prelude(self.vw), ""
        if self.sync:
            prelude += SPIN_BARRIER
            start = f"tsr_bar_ = (tsr_bar *)S[{len(self.scratch)}]; tsr_nthr_ = omp_get_num_threads();"
            self.scratch.append(16)  # the barrier's two counters, on a cache line of their own
        if self.profile:
            lines, start = self._timed(lines, len(copies)), start + " double tsr_last_ = 0.0; (void)tsr_last_;"
            prelude += PROFILE_CLOCK
        body = "\n    ".join(lines)
        ptrs = "".join(f"\n    const float *xb{k} = X[{k}] + (long)b * {f};" for k, f in enumerate(self.in_floats))
        ptrs += "".join(f"\n    float *yb{k} = Y[{k}] + (long)b * {f};" for k, f in enumerate(self.out_floats))
        return prelude + "".join(self.funcs) + f"""
void net_forward(int n, const float *const *X, float *const *Y, void **B, void **S, void **P, int nthreads) {{
    #pragma omp parallel num_threads(nthreads)
    {{
    {start}
    for (int b = 0; b < n; b++) {{{ptrs}
    {body}
    }}
    }}
}}
"""


PROFILE_CLOCK = """#include <time.h>
static inline double tsr_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }
"""


def _at(exc: Unsupported, node: fx.Node) -> Unsupported:
    if exc.node is None:
        exc.node = node
    return exc


def _has_shape(node) -> bool:
    return isinstance(node, fx.Node) and hasattr(node.meta.get("tensor_meta"), "shape")


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


class NetworkKernel:
    """A graph (the whole model, or one native segment of it) as one native call; buffers are per image, so any
    batch size runs. Takes and returns as many tensors as the graph has inputs and outputs."""

    def __init__(self, gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target, threads: int,
                 renderer: NetworkRenderer | None = None):
        r = renderer or render_network(gm, params_for, target, threads)
        self.source, self.target = r.source, target
        self.renderer = r  # what an export prints its library from
        self.barriers_removed = len(r.free)
        self.path = compile_cached(self.source, target)
        self.fn = load_library(str(self.path)).net_forward
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int, _P, _P, _P, _P, _P, ctypes.c_int]
        self.threads = threads
        self.out_shapes = [tuple(s) for s in r.out_shapes]
        self.in_floats = r.in_floats
        self.single = len(r.in_floats) == 1 and len(self.out_shapes) == 1
        self.tight_buffers = sum(b.layout is not None and b.layout.tight for b in r.bufs)  # read in place, no copy
        self.prep_copies = sum(n > 0 for n in r.scratch[:r.conv_scratch])  # convs that copy their input first
        self.spin_barrier = bool(r.sync)
        self._keep = [*r.params]
        self._bufs = [torch.zeros(b.floats) for b in r.bufs]  # zero borders, never written non-zero
        self._scratch = [torch.zeros(n) for n in r.scratch]
        self._P = (_P * max(1, len(r.params)))(*[t.data_ptr() for t in r.params])
        self._B = (_P * max(1, len(self._bufs)))(*[t.data_ptr() for t in self._bufs])
        self._S = (_P * max(1, len(self._scratch)))(*[t.data_ptr() if t.numel() else 0 for t in self._scratch])
        self._X = (_P * len(r.in_floats))()
        self._Y = (_P * len(self.out_shapes))()
        self._lock = threading.Lock()  # buffers are shared: one call at a time

    def __call__(self, *xs: torch.Tensor):
        if self.single:  # the whole model: one tensor in, one out (microseconds count at batch 1)
            x = xs[0].contiguous()
            y = torch.empty(x.shape[0], *self.out_shapes[0])
            if x.shape[0]:
                with self._lock:
                    self._X[0], self._Y[0] = x.data_ptr(), y.data_ptr()
                    self.fn(x.shape[0], self._X, self._Y, self._B, self._S, self._P, self.threads)
            return y
        xs = [x.contiguous() for x in xs]  # named: the copies must live until the call returns
        n = xs[0].shape[0]
        ys = [torch.empty(n, *s) for s in self.out_shapes]
        if n:
            with self._lock:
                for k, x in enumerate(xs):
                    self._X[k] = x.data_ptr()
                for k, y in enumerate(ys):
                    self._Y[k] = y.data_ptr()
                self.fn(n, self._X, self._Y, self._B, self._S, self._P, self.threads)
        return ys[0] if len(ys) == 1 else tuple(ys)


def render_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target,
                   threads: int, profile: bool = False, spin: bool | None = None) -> NetworkRenderer:
    """Render (no compiler call): raises :class:`Unsupported` naming the first node it cannot emit. ``spin``:
    the spinning barrier (default: when every thread has a core of this machine)."""
    spin = threads <= (os.cpu_count() or 1) if spin is None else spin
    r = NetworkRenderer(gm, params_for, target, spin=spin, profile=profile)
    r.source = r.render()
    return r


def build_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target,
                  threads: int) -> tuple[NetworkKernel | None, str]:
    """The network kernel, or None and the reason the graph has to run layer by layer."""
    try:
        return NetworkKernel(gm, params_for, target, threads), "whole network in one native call"
    except Unsupported as exc:
        return None, f"layer-by-layer: {exc} is not supported natively"
