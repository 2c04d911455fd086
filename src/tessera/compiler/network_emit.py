"""Prints the whole-network C function from a :class:`~tessera.compiler.network_plan.NetworkPlan`, nothing else.

One parallel region per call, each step a set of orphaned worksharing loops joined by a barrier (a spinning one
of our own when every thread has a core: a small model has one or two per layer, and OpenMP's cost 0.2-0.4 us
each here), none after a conv the plan marks barrier-free; images processed one after another through the
plan's per-image buffers. Convs with the same geometry, patterns, tile, epilogue and join share one function.
"""

from __future__ import annotations

from tessera.compiler import window_ops
from tessera.compiler.activations import c_scalar, c_vector
from tessera.compiler.codegen import ConvRenderer
from tessera.compiler.kernels import family_of
from tessera.compiler.network_plan import (
    PLANES,
    AdaptiveMean,
    BlockMatvec,
    Elementwise,
    Flatten,
    Gate,
    InputCopy,
    Linear,
    NetworkPlan,
    OutputCopy,
    PixelActivation,
    PlanarBlocks,
    PlanarCopy,
    PointwiseDepthwise,
    Pool,
    ScaleBlocks,
    SparseConv,
    WindowConv,
    param,
)

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

PROFILE_CLOCK = """#include <time.h>
static inline double tsr_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }
"""


def _f(i: int) -> str:
    return f"(const float *){param(i)}"


def _i32(i: int) -> str:
    return f"(const int32_t *){param(i)}"


_COLUMN_VECTORS = 8  # output vectors a dense Linear's work item holds in registers


def _window_args(op: WindowConv) -> tuple[str, str]:
    """C of a window conv's weights and of channel ``c``'s bias."""
    bias = f"((const float *){param(op.bias)})[c]" if op.bias is not None else "0.f"
    return f"(const float *){param(op.weight)}", bias


class _Emitter:
    def __init__(self, plan: NetworkPlan):
        self.plan, self.sync = plan, plan.sync
        self.funcs: list[str] = []
        self.bodies: dict[str, str] = {}  # body source -> function name
        self.free_names = {n.name for n in plan.barrier_free}

    def loop(self, loop: str, rows: bool = False) -> str:
        """A worksharing loop of the network body and its join: OpenMP's implicit barrier, or ``nowait`` and the
        spinning barrier (the same rule as :meth:`ConvRenderer.omp_for` for the convs)."""
        note = "  /* rows across threads, like the conv tiles */" if rows else ""
        join = f"\n    {self.sync}" if self.sync else ""
        return f"#pragma omp for schedule(static){' nowait' if self.sync else ''}{note}\n    {loop.lstrip()}{join}"

    def function(self, body: str, args: str) -> str:
        """The call of a kernel function whose body is ``body`` (named CONV): one function per distinct body."""
        if body not in self.bodies:
            self.bodies[body] = f"conv{len(self.bodies)}"
            self.funcs.append(body.replace("CONV", self.bodies[body]))
        return self.bodies[body] + args

    # -- one method per step kind ------------------------------------------------------------------------------
    def input_copy(self, op: InputCopy, node: str) -> str:
        b = op.y
        if len(b.shape) == 1:
            return self.loop(f"""
    for (long i = 0; i < {b.shape[0]}; i++) {b.expr}[i] = xb{op.k}[i];""")
        c, h, w = b.shape
        return self.loop(f"""
    for (int i = 0; i < {h}; i++) for (int c = 0; c < {c}; c++) for (int j = 0; j < {w}; j++)
        {b.put("c", "i", "j", f"xb{op.k}[(long)c * {h * w} + i * {w} + j]")}""", rows=True)

    def sparse_conv(self, op: SparseConv, node: str) -> str:
        r = ConvRenderer(op.packed, op.geom, op.params, op.act, op.residual, padded_io=True, in_layout=op.in_layout,
                         out_layout=op.out_layout, sync=self.sync, input_view=op.input_view)
        r.no_barrier = node in self.free_names
        w, gp, ci, order, bias = op.arrays
        res = f"{op.res.expr}, " if op.res is not None else ""
        cmask = f"{_f(op.colmask)}, " if op.colmask is not None else ""
        return self.function(r.render_body("CONV"),
                             f"({op.x.expr}, {op.y.expr}, {res}{_f(w)}, {_i32(gp)}, {_i32(ci)}, {_i32(order)}, "
                             f"{_f(bias)}, {cmask}(float *)S[{op.scratch}]);")

    def planar_copy(self, op: PlanarCopy, node: str) -> str:
        lout, s = op.out_layout, op.stride
        return self.loop(f"""
    for (int q = 0; q < {op.channels * op.rows}; q++) {{
        const int c = q / {op.rows}, i = q - c * {op.rows};
        float *d = ((float *)S[{op.scratch}]) + (long)c * {lout.plane} + {lout.origin} + i * {lout.pitch};
        for (int j = 0; j < {op.cols}; j++) d[j] = {op.x.at("c", f"i * {s}", f"j * {s}")};
    }}""", rows=True)

    def planar_blocks(self, op: PlanarBlocks, node: str) -> str:
        body = family_of(op.params).render_planar(op.blocks, op.params, op.act, op.residual, "CONV", op.origin,
                                                  op.ldx, op.ldy, op.length, self.sync, node in self.free_names)
        v, cols, rp, bias = op.arrays
        res = op.res.expr if op.res is not None else "0"
        vals = f"(const float *)S[{op.scaled}]" if op.scaled is not None else _f(v)
        return self.function(body, f"({op.src}, {op.y.expr}, {res}, {vals}, {_i32(cols)}, {_i32(rp)}, "
                                   f"{_f(bias)}, {_i32(op.mask)});")

    def scale_blocks(self, op: ScaleBlocks, node: str) -> str:
        return self.loop(f"""
    for (long k = 0; k < {op.blocks}; k++) {{ const float s = {op.g.expr}[({_i32(op.cols)})[k]];
        const float *v = {_f(op.values)} + k * {op.n}; float *d = (float *)S[{op.scratch}] + k * {op.n};
        for (int l = 0; l < {op.n}; l++) d[l] = v[l] * s; }}""")

    def block_matvec(self, op: BlockMatvec, node: str) -> str:
        """Work items are bands of 64 rows, each summing the blocks that start in its band or up to N-1 rows
        above it."""
        x, n, rows, band = op.x, op.n, op.rows, 64
        xi = x.at("ci", "0", "0") if x.padded else f"{x.expr}[ci]"
        vals, cols, rp = (param(i) for i in op.arrays)
        return self.loop(f"""
    for (int r0 = 0; r0 < {rows}; r0 += {band}) {{
        const int r1 = r0 + {band} < {rows} ? r0 + {band} : {rows};
        float a[{band + 2 * n}] = {{0}};
        for (int r = r0 - {n - 1} > 0 ? r0 - {n - 1} : 0; r < r1; r++)
            for (int k = ((const int32_t *){rp})[r]; k < ((const int32_t *){rp})[r + 1]; k++) {{
                const int ci = ((const int32_t *){cols})[k]; const float xv = {xi};
                const float *v = (const float *){vals} + (long)k * {n};
                float *ar = a + r - r0 + {n - 1};
                for (int l = 0; l < {n}; l++) ar[l] += v[l] * xv;
            }}
        for (int r = r0; r < r1; r++) {op.acc.expr}[r] = a[r - r0 + {n - 1}];
    }}""")

    def linear(self, op: Linear, node: str) -> str:
        x, y, res = op.x, op.y, op.res
        act = c_scalar(op.act, "s")
        b = f"((const float *){param(op.bias)})[o]" if op.bias is not None else "0.f"
        radd = "" if res is None else f" s += {res.at('o', '0', '0') if res.padded else res.expr + '[o]'};"
        store = y.put("o", "0", "0", "s") if y.padded else f"{y.expr}[o] = s;"
        if op.sums is not None:
            return self.loop(f"""
    for (int o = 0; o < {op.cout}; o++) {{ float s = {op.sums.expr}[o];
        s += {b};{radd}{act} {store} }}""")
        if op.columns:
            return self._linear_columns(op, radd, act, store)
        # each thread first gathers the input vector (a padded buffer keeps one value a plane) onto its stack; the
        # dot products then run in vectors, two accumulators (a scalar sum is one chain of dependent adds: gcc
        # may not reorder a float reduction)
        xi = x.at("i", "0", "0") if x.padded else f"{x.expr}[i]"
        vw, cin = self.plan.target.vector_width, op.cin
        whole = cin // (2 * vw) * 2 * vw
        pairs = f"for (int i = 0; i < {whole}; i += {2 * vw}) {{ a0 += ld(w + i) * lda(xs_ + i); " \
                f"a1 += ld(w + i + {vw}) * lda(xs_ + i + {vw}); }}" if whole else ""
        rest = f" a0 += ld(w + {whole}) * lda(xs_ + {whole});" if cin - whole >= vw else ""
        tail = whole + vw if rest else whole
        scalar = f" for (int i = {tail}; i < {cin}; i++) s += w[i] * xs_[i];" if tail < cin else ""
        return f"""{{ float xs_[{-(-cin // vw) * vw}] __attribute__((aligned(64)));
    for (int i = 0; i < {cin}; i++) xs_[i] = {xi};
    """ + self.loop(f"""
    for (int o = 0; o < {op.cout}; o++) {{ const float *w = (const float *){param(op.weight)} + (long)o * {cin};
        vf a0 = {{0}}, a1 = {{0}}; {pairs}{rest}
        a0 += a1; float t_[{vw}] __attribute__((aligned(64))); st(t_, a0);
        float s = 0.f; for (int l = 0; l < {vw}; l++) s += t_[l];{scalar}
        s += {b};{radd}{act} {store} }}""") + " }"

    def _linear_columns(self, op: Linear, radd: str, act: str, store: str) -> str:
        """Work items are groups of up to ``_COLUMN_VECTORS`` vectors of outputs, each summing input i times row i
        of the transposed weights; the activation runs in vectors unless a residual comes first."""
        x, vw, cin = op.x, self.plan.target.vector_width, op.cin
        nvec = -(-op.cout // vw)
        g = min(_COLUMN_VECTORS, nvec)
        xi = x.at("i", "0", "0") if x.padded else f"{x.expr}[i]"
        bias = f"({_f(op.bias)})" if op.bias is not None else None  # padded to whole vectors by the plan
        late = op.res is not None  # the residual comes before the activation: both then per output

        def group(n: int, o0: str) -> str:
            init = " ".join(f"vf a{k} = " + (f"ld({bias} + {o0} + {k * vw});" if bias else "z;") for k in range(n))
            fmas = " ".join(f"a{k} += xv * ld(w + {k * vw});" for k in range(n))
            outs = " ".join(f"st(t_ + {k * vw}, {f'a{k}' if late else c_vector(op.act, f'a{k}')});" for k in range(n))
            return f"""{{ {init}
        for (int i = 0; i < {cin}; i++) {{ const float xv = {xi};
            const float *w = (const float *){param(op.weight)} + (long)i * {nvec * vw} + {o0}; {fmas} }}
        float t_[{n * vw}] __attribute__((aligned(64))); {outs}
        for (int o = {o0}; o < {o0} + {n * vw} && o < {op.cout}; o++) {{
            float s = t_[o - ({o0})];{radd + act if late else ""} {store} }} }}"""
        full, last = divmod(nvec, g)
        body = f"for (int q = 0; q < {full + (last > 0)}; q++) {{\n        const vf z = {{0}}; (void)z;\n        "
        body += (f"if (q < {full}) {group(g, f'q * {g * vw}')}\n        else {group(last, str(full * g * vw))}"
                 if last else group(g, f"q * {g * vw}"))
        return self.loop(body + "\n    }")

    def window_conv(self, op: WindowConv, node: str) -> str:
        return self.loop(family_of(op.params).render(op, *_window_args(op)))

    def pointwise_depthwise(self, op: PointwiseDepthwise, node: str) -> str:
        """Each thread zeroes its planes' borders once; then per group of PLANES channels, the 1x1 conv into the
        planes and the depthwise conv's rows of each channel from its plane."""
        vw, dw, origin, n = self.plan.target.vector_width, op.dw, op.dw.x.layout.origin, PLANES
        vals, cols, gp, bias = op.arrays
        pointwise = window_ops.pointwise_planes(
            f"({op.x.expr} + {origin})", op.x.layout.plane, f"(P_ + {origin})", op.floats,
            f"((const float *){param(vals)})", f"({_i32(cols)})", f"({_i32(gp)})", f"((const float *){param(bias)})",
            f"({_i32(op.mask)})", op.span, op.act, vw, "g", n, op.unroll)
        depthwise = window_ops.depthwise_conv(dw.x, dw.y, dw.res, *_window_args(dw), dw.shape, dw.stride, dw.padding,
                                              dw.act, vw, dw.params.r, channel="ch")
        end, cout = origin + op.span, dw.shape[0]
        return f"""{{ float P_[{n * op.floats}] __attribute__((aligned(64)));
    for (int l = 0; l < {n}; l++) {{ memset(P_ + l * {op.floats}, 0, sizeof(float) * {origin});
        memset(P_ + l * {op.floats} + {end}, 0, sizeof(float) * {op.floats - end}); }}
    """ + self.loop(f"""
    for (int g = 0; g < {-(-cout // n)}; g++) {{
        {pointwise}
        for (int l = 0; l < {n} && g * {n} + l < {cout}; l++) {{
        const int ch = g * {n} + l; const float *Q_ = P_ + l * {op.floats};
        {depthwise.strip()}
        }}
    }}""") + " }"

    def pool(self, op: Pool, node: str) -> str:
        if op.kind == "max":
            return self.loop(window_ops.max_pool(op.x, op.y, op.kernel, op.stride, op.padding,
                                                 self.plan.target.vector_width), rows=True)
        table = f"((const float *){param(op.divisors)})"
        return self.loop(window_ops.avg_pool(op.x, op.y, op.kernel, op.stride, op.padding, table), rows=True)

    def adaptive_mean(self, op: AdaptiveMean, node: str) -> str:
        return self.loop(window_ops.adaptive_avg_pool(op.x, op.y, self.plan.target.vector_width))

    def flatten(self, op: Flatten, node: str) -> str:
        x, y = op.x, op.y
        c, h, w = x.shape
        return self.loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++)
        {y.expr}[(long)c * {h * w} + i * {w} + j] = {x.at("c", "i", "j")};""")

    def gate(self, op: Gate, node: str) -> str:
        x, g, y = op.x, op.g, op.y
        c, h, w = y.shape
        if op.rows:
            return self.loop(f"""
    for (int c = 0; c < {c}; c++) {{ const float s = {g.expr}[c];
        const float *xr = &{x.at("c", "0", "0")}; float *yr = &{y.at("c", "0", "0")};
        for (int j = 0; j < {op.rows}; j++) yr[j] = xr[j] * s; }}""")
        return self.loop(f"""
    for (int c = 0; c < {c}; c++) {{ const float s = {g.expr}[c];
        for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++) {{ const float v = {x.at("c", "i", "j")} * s;
            {y.put("c", "i", "j", "v")} }} }}""")

    def pixel_activation(self, op: PixelActivation, node: str) -> str:
        x, y = op.x, op.y
        c, h, w = y.shape
        return self.loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++) {{
        float v = {x.at("c", "i", "j")};{c_scalar(op.act)} {y.put("c", "i", "j", "v")} }}""")

    def elementwise(self, op: Elementwise, node: str) -> str:
        expr = op.expr.format(*[f"{a.expr}[i]" for a in op.ins])
        return self.loop(f"""
    for (long i = 0; i < {op.y.floats}; i++) {{ {expr} ; {op.y.expr}[i] = v; }}""")

    def output_copy(self, op: OutputCopy, node: str) -> str:
        ob, k = op.x, op.k
        if ob.padded:
            c, h, w = ob.shape
            return self.loop(f"""
    for (int c = 0; c < {c}; c++) for (int i = 0; i < {h}; i++) for (int j = 0; j < {w}; j++)
        yb{k}[(long)c * {h * w} + i * {w} + j] = {ob.at("c", "i", "j")};""")
        return self.loop(f"""
    for (long i = 0; i < {op.floats}; i++) yb{k}[i] = {ob.expr}[i];""")

    def timed(self, lines: list[str]) -> list[str]:
        """``lines`` with a clock tick after each: thread 0 adds the time since the previous tick to its step's
        row of a table of doubles in the last scratch (rows in the plan's ``profiled``)."""
        p, k = self.plan, self.plan.profile_scratch
        out = ["if (omp_get_thread_num() == 0) tsr_last_ = tsr_now();"]
        for ln, step in zip(lines, p.steps, strict=True):
            out += [ln, f"if (omp_get_thread_num() == 0) {{ const double t_ = tsr_now(); "
                        f"((double *)S[{k}])[{p.profiled.index(step.node)}] += t_ - tsr_last_; tsr_last_ = t_; }}"]
        return out

    def unit(self) -> str:
        p = self.plan
        lines = [getattr(self, _METHOD[type(s.op)])(s.op, s.node) for s in p.steps]
        prelude, start = ConvRenderer.prelude(p.target.vector_width), ""
        if p.spin:
            prelude += SPIN_BARRIER
            start = f"tsr_bar_ = (tsr_bar *)S[{p.barrier_scratch}]; tsr_nthr_ = omp_get_num_threads();"
        if p.profile:
            lines, start = self.timed(lines), start + " double tsr_last_ = 0.0; (void)tsr_last_;"
            prelude += PROFILE_CLOCK
        body = "\n    ".join(lines)
        ptrs = "".join(f"\n    const float *xb{k} = X[{k}] + (long)b * {f};" for k, f in enumerate(p.in_floats))
        ptrs += "".join(f"\n    float *yb{k} = Y[{k}] + (long)b * {f};" for k, f in enumerate(p.out_floats))
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


_METHOD = {InputCopy: "input_copy", SparseConv: "sparse_conv", PlanarCopy: "planar_copy",
           PlanarBlocks: "planar_blocks", ScaleBlocks: "scale_blocks", BlockMatvec: "block_matvec", Linear: "linear",
           WindowConv: "window_conv", PointwiseDepthwise: "pointwise_depthwise", Pool: "pool",
           AdaptiveMean: "adaptive_mean", Flatten: "flatten", Gate: "gate", PixelActivation: "pixel_activation",
           Elementwise: "elementwise", OutputCopy: "output_copy"}


def emit_network(plan: NetworkPlan) -> str:
    """The C translation unit of ``plan``: the kernel functions and ``net_forward``."""
    return _Emitter(plan).unit()
