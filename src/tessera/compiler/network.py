"""Whole-network code generation: every layer of a supported graph in one native function.

Per-layer kernels still pay Python, allocation and an OpenMP fork/join per layer — on small CIFAR-size models that
overhead is as large as the sparse compute itself, and between layers torch's and our thread pools fight for the
cores. Here the fused graph becomes one C function: one parallel region per call, each layer a set of orphaned
worksharing loops joined by a barrier (a spinning one of our own when every thread has a core: a small model has
one or two per layer, and OpenMP's cost 0.2-0.4 us each here), none after a conv whose output the next statement
does not read; images processed one after another through preallocated per-image buffers. Supported nodes:
FusedConv, MaxPool2d, AdaptiveAvgPool2d(1), Linear, ReLU, residual add, flatten / view, Identity / Dropout.
Anything else: ``build_network`` returns None and the per-layer graph runs.
"""

from __future__ import annotations

import ctypes
import operator
import os
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

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
from tessera.compiler.graph import FusedConv, FusedLinear
from tessera.compiler.kernel import kernel_arrays
from tessera.compiler.toolchain import compile_cached, load_library
from tessera.compiler.tune import candidates

_P = ctypes.c_void_p
_ADD = {operator.add, operator.iadd, torch.add}
_RELU = {F.relu, torch.relu, torch.relu_}
_FLATTEN_FN = {torch.flatten}
_ALIAS_METHODS = {"flatten", "view", "reshape", "contiguous"}


class Unsupported(Exception):
    pass


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
    renderer: ConvRenderer
    args: str  # the call's argument list and semicolon


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

    def __init__(self, gm: fx.GraphModule, params_for: dict[str, KernelParams], vw: int, spin: bool = False):
        """``spin``: threads join at the spinning barrier of :data:`SPIN_BARRIER` instead of OpenMP's (only when
        every thread has a core of its own: a waiting thread burns its core)."""
        self.gm, self.params_for, self.vw = gm, params_for, vw
        self.sync = "tsr_sync();" if spin else ""
        self.statements: list[tuple[fx.Node, set[int]]] = []  # emitting node, buffers its statement reads
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
        b = _Buf(floats, shape, padded, len(self.bufs), layout)
        self.bufs.append(b)
        self.where[node] = b
        return b

    def _padded_input(self, node: fx.Node) -> _Buf:
        b = self.where[node]
        if not b.padded:
            raise Unsupported(f"{node.name}: a flat tensor feeds a spatial layer")
        return b

    def _conv_plan(self, node: fx.Node, m: FusedConv) -> tuple[PackedConv, ConvGeometry, KernelParams]:
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.stride[0] != m.stride[1] or m.in_shape is None \
                or isinstance(m.padding, str):
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
        self.conv_plans[node] = packed, geom, kp or candidates(self.vw, packed.group)[1]
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
                try:
                    packed, geom, kp = self._conv_plan(node, m)
                except Unsupported:
                    continue
                lay = ConvRenderer(packed, geom, kp, m.relu, m.residual, padded_io=True).in_place_layout
                if lay is not None:
                    votes.setdefault(src(args[0]), set()).add("tight" if lay.tight else "padded")
                if m.residual:
                    self._union(node, src(args[1]))
            elif (node.op == "call_function" and node.target in _ADD) or isinstance(m, nn.ReLU) or \
                    (node.op == "call_function" and node.target in _RELU) or \
                    (node.op == "call_method" and node.target in ("relu", "relu_")):
                for a in args:
                    self._union(node, src(a))
        group_votes: dict[fx.Node, set[str]] = {}
        for n, v in votes.items():
            group_votes.setdefault(self._group(n), set()).update(v)
        for root, v in group_votes.items():
            if v == {"tight"}:
                shape = _shape(root)
                self.layouts[root] = tight_layout(*shape, self.vw)

    def _conv(self, node: fx.Node, m: FusedConv) -> None:
        packed, geom, kp = self._conv_plan(node, m)
        xb = self._padded_input(node.args[0])
        sub = self.subsamples.get(xb.index)
        # a 1x1 stride-2 conv (resnet's shortcut) reads the subsample its stride-2 neighbour already copied
        view = sub if sub and (geom.kh, geom.kw, geom.stride, geom.pad_h, geom.pad_w) == (1, 1, 2, 0, 0) and \
            not kp.cblock and not kp.shift and sub[3] == geom.wo else None
        r = ConvRenderer(packed, geom, kp, m.relu, m.residual, padded_io=True, in_layout=xb.layout,
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
        x = self.where[node.args[0]]
        if x.padded:
            raise Unsupported("linear on a spatial tensor")
        if getattr(m, "residual", False):
            raise Unsupported("linear with a fused residual add")
        y = self._new_buf(node, False)
        wp = self._param(m.weight.detach().float().reshape(m.out_features, m.in_features))
        act = " s = s > 0.f ? s : 0.f;" if getattr(m, "relu", False) else ""
        b = f"((const float *){self._param(m.bias.detach().float())})[o]" if m.bias is not None else "0.f"
        self.lines.append(self._loop(f"""
    for (int o = 0; o < {m.out_features}; o++) {{ const float *w = (const float *){wp} + (long)o * {m.in_features};
        float s = 0.f; for (int i = 0; i < {m.in_features}; i++) s += w[i] * {x.expr}[i];
        s += {b};{act} {y.expr}[o] = s; }}"""))

    def _loop(self, loop: str, rows: bool = False) -> str:
        """A worksharing loop of the network body and its join: OpenMP's implicit barrier, or ``nowait`` and the
        spinning barrier (the same rule as :meth:`ConvRenderer._omp_for` for the convs)."""
        note = "  /* rows across threads, like the conv tiles */" if rows else ""
        join = f"\n    {self.sync}" if self.sync else ""
        return f"#pragma omp for schedule(static){' nowait' if self.sync else ''}{note}\n    {loop.lstrip()}{join}"

    def _elementwise(self, node: fx.Node, expr: str, inputs: list[fx.Node]) -> None:
        ins = [self.where[a] for a in inputs]
        if len({(b.padded, b.shape) for b in ins}) != 1:
            raise Unsupported(f"{node.name}: operands in different layouts")
        y = self._new_buf(node, ins[0].padded)
        n = y.floats
        self.lines.append(self._loop(f"""
    for (long i = 0; i < {n}; i++) {{ {expr.format(*[f"{a.expr}[i]" for a in ins])} ; {y.expr}[i] = v; }}"""))

    def render(self) -> str:
        self._plan_layouts()
        out_node = None
        for node in self.gm.graph.nodes:
            if node.op == "output":
                out_node = node.args[0]
                if not isinstance(out_node, fx.Node):
                    raise Unsupported("output is not a single tensor")
                continue
            emitted = len(self.lines)
            self._node(node)
            if len(self.lines) > emitted:
                self.statements.append((node, {self.where[a].index for a in node.all_input_nodes}))
        if out_node is None:
            raise Unsupported("no output")
        return self._finish(out_node)

    def _barrier_free(self) -> frozenset[fx.Node]:
        """Convs whose next statement does not read their output and whose previous statement keeps its
        barrier: their own barrier can go. In resnets the stride-2 conv and the 1x1 shortcut
        after it read the same input, so the first runs straight into the second."""
        free: set[fx.Node] = set()
        for i, (node, _) in enumerate(self.statements[:-1]):  # the last statement ends the image: keeps it
            m = self.gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(m, FusedConv) and not isinstance(m, FusedLinear) and \
                    self.where[node].index not in self.statements[i + 1][1] and \
                    (i == 0 or self.statements[i - 1][0] not in free):
                free.add(node)
        return frozenset(free)

    def _node(self, node: fx.Node) -> None:
        """Emit the statement(s) of one graph node (none for aliases)."""
        if node.op == "placeholder":
            if self.where:
                raise Unsupported("more than one input")
            shape = _shape(node)
            if len(shape) != 3:
                raise Unsupported("input is not an image batch")
            b = self._new_buf(node, True)
            c, h, w = shape
            self.lines.append(self._loop(f"""
    for (int i = 0; i < {h}; i++) for (int c = 0; c < {c}; c++) for (int j = 0; j < {w}; j++)
        {b.put("c", "i", "j", f"xb[(long)c * {h * w} + i * {w} + j]")}""", rows=True))
        elif node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if isinstance(m, FusedLinear):
                self._linear(node, m)
            elif isinstance(m, FusedConv):
                self._conv(node, m)
            elif isinstance(m, nn.MaxPool2d):
                self._maxpool(node, m)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                self._avgpool(node, m)
            elif isinstance(m, nn.Linear):
                self._linear(node, m)
            elif isinstance(m, nn.ReLU):
                self._elementwise(node, "float v = {0}; v = v > 0.f ? v : 0.f", [node.args[0]])
            elif isinstance(m, nn.Identity | nn.Dropout):
                self.where[node] = self.where[node.args[0]]
            elif isinstance(m, nn.Flatten):
                self._flatten(node)
            else:
                raise Unsupported(f"module {type(m).__name__}")
        elif node.op == "call_function" and node.target in _ADD and len(node.args) == 2 and \
                all(isinstance(a, fx.Node) for a in node.args):
            self._elementwise(node, "float v = {0} + {1}", list(node.args))
        elif node.op == "call_function" and node.target in _RELU:
            self._elementwise(node, "float v = {0}; v = v > 0.f ? v : 0.f", [node.args[0]])
        elif (node.op == "call_function" and node.target in _FLATTEN_FN) or \
                (node.op == "call_method" and node.target in _ALIAS_METHODS):
            if len(_shape(node)) == 1 or not self.where[node.args[0]].padded:
                self._flatten(node)
            else:
                raise Unsupported(f"{node.op} {node.target} to a spatial shape")
        elif node.op == "call_method" and node.target in ("relu", "relu_"):
            self._elementwise(node, "float v = {0}; v = v > 0.f ? v : 0.f", [node.args[0]])
        else:
            raise Unsupported(f"{node.op} {node.target}")

    def _finish(self, out_node: fx.Node) -> str:
        """The copy of the output and the whole C unit around the statements."""
        self.out_floats = _numel(out_node)
        self.in_floats = _numel(next(n for n in self.gm.graph.nodes if n.op == "placeholder"))
        ob = self.where[out_node]
        if ob.padded:
            c, h, w = ob.shape
            copy_out = self._loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++)
        yb[(long)c * {h * w} + i * {w} + j] = {ob.at("c", "i", "j")};""")
        else:
            copy_out = self._loop(f"""
    for (long i = 0; i < {self.out_floats}; i++) yb[i] = {ob.expr}[i];""")
        self.free = self._barrier_free()
        lines = [self._call(ln, self.free) if isinstance(ln, _ConvCall) else ln for ln in self.lines] + [copy_out]
        self.conv_scratch = len(self.scratch)  # one scratch per conv; the barrier's counters after them
        prelude, start = ConvRenderer.prelude(self.vw), ""
        if self.sync:
            prelude += SPIN_BARRIER
            start = f"tsr_bar_ = (tsr_bar *)S[{len(self.scratch)}]; tsr_nthr_ = omp_get_num_threads();"
            self.scratch.append(16)  # the barrier's two counters, on a cache line of their own
        body = "\n    ".join(lines)
        return prelude + "".join(self.funcs) + f"""
void net_forward(int n, const float *restrict x, float *restrict y, void **B, void **S, void **P, int nthreads) {{
    #pragma omp parallel num_threads(nthreads)
    {{
    {start}
    for (int b = 0; b < n; b++) {{
    const float *xb = x + (long)b * {self.in_floats};
    float *yb = y + (long)b * {self.out_floats};
    {body}
    }}
    }}
}}
"""


class NetworkKernel:
    """The whole model as one native call; buffers are per image, so any batch size runs."""

    def __init__(self, gm: fx.GraphModule, params_for: dict[str, KernelParams], vw: int, threads: int,
                 out_shape: tuple[int, ...]):
        spin = threads <= (os.cpu_count() or 1)
        r = NetworkRenderer(gm, params_for, vw, spin=spin)
        self.source = r.render()
        self.barriers_removed = len(r.free)
        self.path = compile_cached(self.source)
        self.fn = load_library(str(self.path)).net_forward
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int, _P, _P, _P, _P, _P, ctypes.c_int]
        self.threads = threads
        self.out_shape = tuple(out_shape[1:])
        self.in_floats = r.in_floats
        self.tight_buffers = sum(b.layout is not None and b.layout.tight for b in r.bufs)  # read in place, no copy
        self.prep_copies = sum(n > 0 for n in r.scratch[:r.conv_scratch])  # convs that copy their input first
        self.spin_barrier = bool(r.sync)
        self._keep = [*r.params]
        self._bufs = [torch.zeros(b.floats) for b in r.bufs]  # zero borders, never written non-zero
        self._scratch = [torch.zeros(n) for n in r.scratch]
        self._P = (_P * max(1, len(r.params)))(*[t.data_ptr() for t in r.params])
        self._B = (_P * max(1, len(self._bufs)))(*[t.data_ptr() for t in self._bufs])
        self._S = (_P * max(1, len(self._scratch)))(*[t.data_ptr() if t.numel() else 0 for t in self._scratch])
        self._lock = threading.Lock()  # buffers are shared: one call at a time

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n = x.shape[0]
        y = torch.empty(n, *self.out_shape)
        with self._lock:
            self.fn(n, x.data_ptr(), y.data_ptr(), self._B, self._S, self._P, self.threads)
        return y


def build_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], vw: int, threads: int,
                  out_shape: tuple[int, ...]) -> tuple[NetworkKernel | None, str]:
    """The network kernel, or None and the reason the graph has to run layer by layer."""
    try:
        return NetworkKernel(gm, params_for, vw, threads, out_shape), "whole network in one native call"
    except Unsupported as exc:
        return None, f"layer-by-layer: {exc} is not supported natively"
