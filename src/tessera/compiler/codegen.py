"""C code generation for sparse conv layers: codegen as data, one ``render() -> str``.

The kernel (DESIGN.md, "what made it fast"):
- the input is copied once per call into a zero-padded, *phase-split* flat layout: for stride s the padded image
  is split into s*s phase planes (row parity x column parity), so every tap (dy, dx) of every output position is
  one constant 1-D offset from the position's index in a "wide" output row of width WPH. Stride 1 is one phase.
- output positions are processed in tiles of R vectors (T = R*VW floats) held in registers across all kernels of
  a filter; for each pattern, a loop over that pattern's kernels does taps x R fused multiply-adds whose offsets
  are compile-time constants.
- the epilogue (bias from folded BatchNorm, residual add, ReLU) runs while copying a tile's valid columns out.
- OpenMP over (filter, tile) with filters outermost: a filter's kept channels are streamed along the image
  (sequential, prefetchable), which measured 5-10% faster than tiles outermost on ResNet-18 layer shapes.
  The channel-blocked kernels run tiles outermost in contiguous blocks per thread (``schedule(static)``): each
  thread owns a band of rows in every layer, so inside the whole-network function a layer's input mostly sits
  in the cache of the core that wrote it. Measured against round-robin items (``static, 1``) on 2 threads:
  resnet20 0.287 -> 0.236 ms, 64x56² layer 0.434 -> 0.382 ms.
"""

from __future__ import annotations

from functools import cached_property

from tessera.compiler.activations import C_HELPERS, c_scalar, c_vector, canon
from tessera.compiler.formats import PackedConv
from tessera.compiler.geometry import (
    FILTER_CHUNK,
    ConvGeometry,
    KernelParams,
    Layout,
    layer_geometry,
    padded_layout,
    padded_pitch,
    shift_copies,
    tight_layout,
)


class ConvRenderer:
    """Renders one sparse conv layer with one parameter set; :func:`render_layer` joins several candidates
    into a library and the whole-network renderer calls :meth:`render_body` directly. Its layout facts
    (``in_place_layout``, ``reach``, ``copy_stride``) are fixed once it is built and cached: the emitters ask for
    them per tap row."""

    header = """#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else  /* built without OpenMP (an export may be): one thread, the pragmas are ignored */
static inline int omp_get_num_threads(void) {{ return 1; }}
static inline int omp_get_thread_num(void) {{ return 0; }}
#endif
typedef float vf __attribute__((vector_size({vbytes}), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size({vbytes}), aligned(4), may_alias));
typedef float va __attribute__((vector_size({vbytes}), aligned({vbytes}), may_alias));
static inline vf ld(const float *p) {{ return *(const vf *)p; }}
static inline vf lda(const float *p) {{ return *(const va *)p; }}
static inline void st(float *p, vf v) {{ *(vf *)p = v; }}
typedef float vh __attribute__((vector_size({hbytes}), aligned(4), may_alias));
typedef int32_t vhi __attribute__((vector_size({hbytes}), aligned(4), may_alias));
static inline vh ldh(const float *p) {{ return *(const vh *)p; }}
static inline void sth(float *p, vh v) {{ *(vh *)p = v; }}
"""

    @classmethod
    def prelude(cls, vw: int) -> str:
        """Types and helpers every generated unit starts with: vectors of ``vw`` floats and of half as many, and
        the activations in both widths and as scalars."""
        return cls.header.format(vbytes=vw * 4, hbytes=vw * 2) + C_HELPERS

    def __init__(self, packed: PackedConv, geom: ConvGeometry, params: KernelParams, act: str | bool, residual: bool,
                 padded_io: bool = False, in_layout: Layout | None = None, out_layout: Layout | None = None,
                 sync: str = "", input_view: tuple[int, int] | None = None):
        """``padded_io``: input and output activations are in whole-network buffer layouts (see :class:`Layout`;
        :func:`padded_layout` unless given) instead of NCHW. ``sync``: the C statement that joins the threads (the
        whole network's spinning barrier); every worksharing loop is then ``nowait`` and followed by it.
        ``input_view``: (channel stride, offset) of this layer's input planes inside another layer's prepared
        input, passed as ``xp`` (a 1x1 stride-2 shortcut reads the phase plane its stride-2 neighbour copied):
        no copy of its own; per-pattern loops only."""
        self.p, self.g, self.k, self.residual = packed, layer_geometry(geom, params), params, residual
        self.act = canon(act)
        if params.shift and self.g.stride != 1 and not self.g.tight:
            raise ValueError("the shifted variant runs stride-2 convs on tight phase planes only (tight_rows)")
        self.padded_io = padded_io
        self.sync, self.input_view = sync, input_view
        self.no_barrier = False  # set by the whole network when its next statement does not read this output
        if input_view and (params.cblock or params.shift):
            raise ValueError("an input view is read by the per-pattern loops only")
        self.copies = shift_copies(geom, params)
        self.in_layout = in_layout or padded_layout(geom.h, geom.w)
        self.out_layout = out_layout or padded_layout(self.g.ho, self.g.wo)

    def _omp_for(self, schedule: str = "static", compute: bool = False) -> str:
        """A worksharing loop's pragma: ``nowait`` when the caller's sync joins the threads instead, or for the
        layer's compute loop when nothing after it needs a barrier."""
        wait = self.sync or (compute and self.no_barrier)
        return f"#pragma omp for schedule({schedule})" + (" nowait" if wait else "")

    def _join(self, compute: bool = False) -> str:
        """What follows a worksharing loop: the caller's sync statement, or nothing (the loop's own barrier)."""
        return "" if not self.sync or (compute and self.no_barrier) else f"\n        {self.sync}"

    @cached_property
    def in_place_layout(self) -> Layout | None:
        """The network buffer layout this variant reads as its own input planes, with no prep copy: the padded
        one for a stride-1 3x3 pad-1 conv (exactly its geometry), the tight one for the shifted kernel on tight
        rows (with its second copy on rows of half a vector); None for every other variant."""
        g = self.g
        if not self.padded_io or (g.stride, g.kh, g.kw, g.pad_h, g.pad_w) != (1, 3, 3, 1, 1):
            return None
        if not self.k.shift:
            return padded_layout(g.h, g.w) if g.wph == padded_pitch(g.w) else None
        lay = tight_layout(g.cin, g.h, g.w, self.k.vw)
        return lay if g.tight and lay.plane == g.plane and (lay.copy != 0) == (self.copies == 2) else None

    @property
    def in_place(self) -> bool:
        """Reads its input buffer in place (see :attr:`in_place_layout`)."""
        return self.in_layout == self.in_place_layout

    @property
    def direct(self) -> bool:
        """Reads its padded input in place, so its wide rows are the padded rows (vector stores may follow)."""
        return self.in_place and not self.k.shift

    @property
    def vector_out(self) -> bool:
        """Writes whole vectors into the padded output: its wide rows are the output's padded rows."""
        return self.direct and self.out_layout == padded_layout(self.g.ho, self.g.wo)

    def colmask(self) -> list[float]:
        """1.0 where a wide position is a real output (column < WO, inside the image), else 0.0."""
        g = self.g
        return [1.0 if j < g.wide and j % g.wph < g.wo else 0.0 for j in range(self.ntiles * self.tile)]

    @property
    def tile(self) -> int:
        return self.k.r * self.k.vw

    @property
    def ntiles(self) -> int:
        return -(-self.g.wide // self.tile)

    @property
    def filter_chunks(self) -> tuple[int, int]:
        """Filters per work item of the channel-blocked kernels and the number of chunks: at most FILTER_CHUNK,
        and enough work items for two threads or more even when a layer has a single tile (small images)."""
        cout = self.p.cout
        fc = min(cout, FILTER_CHUNK, max(8, -(-cout // -(-8 // self.ntiles))))
        return fc, -(-cout // fc)

    @property
    def scratch_floats(self) -> int:
        """Size of the padded input buffer: every channel's plane plus slack for the last tile's reach."""
        if self.in_place or self.input_view:
            return 0
        return self.copies * self.copy_stride

    @cached_property
    def copy_stride(self) -> int:
        """Floats between the shifted variant's input copies (a whole number of vectors: copies stay aligned);
        the input buffer's own copy when it reads that in place."""
        if self.in_place and self.in_layout.copy:
            return self.in_layout.copy
        vw = self.k.vw
        return -(-(self.g.cin * self.g.plane + self.reach) // vw) * vw

    @cached_property
    def reach(self) -> int:
        """Floats read past the last channel's plane: the last tile's overhang plus the largest tap offset."""
        taps = [t for pat in self.p.patterns for t in pat]
        max_off = max(max(self.g.tap_offset(t) for t in taps),  # the shifted variant's own row offsets too
                      max(self.tap_place(t)[0] for t in taps) if self.k.shift else 0)
        return self.ntiles * self.tile - self.g.wide + max_off + self.tile

    @property
    def prep_phases(self) -> list[tuple[int, int]]:
        """The phase planes (padded row parity, column parity) some tap reads: the ones the prep copies."""
        g, s = self.g, self.g.stride
        return sorted({divmod(self.tap_place(t)[0] // g.phase_stride, s) if self.k.shift and s > 1
                       else (dy % s, dx % s) for pat in self.p.patterns for t in pat for dy, dx in (divmod(t, g.kw),)})

    def _prep(self, name: str = "prep") -> str:
        g = self.g
        s = g.stride
        if self.in_place or self.input_view:
            return f"\nstatic void {name}(const float *x, float *xp) {{ (void)x; (void)xp; }}\n"
        lay = self.in_layout
        src_plane, src_row, src_off = (lay.plane, lay.pitch, lay.origin) if self.padded_io else (g.h * g.w, g.w, 0)
        phases = self.prep_phases
        copies = []
        for py, px in phases:  # only the planes some tap reads; a row of a phase plane is a strided input row
            j0, j1 = max(0, -(-(g.col0 - px) // s)), min(g.wph, (g.w - 1 + g.col0 - px) // s + 1)
            # two copies (half-vector rows): each row also goes one row up in the second copy, in the same pass
            up = self.copy_stride - g.wph
            second = "" if self.copies != 2 else \
                f"\n                for (int j = {j0}; j < {j1}; j++) row[{up} + j] = sr[j * {s}];"
            copies.append(f"""            if (r % {s} == {py}) {{
                float *row = dst + {(py * s + px) * g.phase_stride} + (r / {s}) * {g.wph};
                const float *sr = srow + {px - g.col0};
                for (int j = {j0}; j < {j1}; j++) row[j] = sr[j * {s}];{second}
            }}""")
        nl = "\n"
        shifted = "".join(f"""
    {self._omp_for()}  /* copy {c}: the input shifted by {c} row(s), so those rows load aligned */
    for (long i = 0; i < {self.copy_stride - c * g.wph}; i++)
        xp[{c * self.copy_stride} + i] = xp[i + {c * g.wph}];{self._join()}"""
                          for c in range(1, self.copies)) if self.copies > 2 else ""
        return f"""
static void {name}(const float *x, float *xp) {{
    /* interior of the zero-padded, phase-split planes; borders were zeroed once and never change. Rows are
       split across threads, as the conv's tiles are: each thread copies the band of rows it then reads. */
    {self._omp_for()}
    for (int iy = 0; iy < {g.h}; iy++) {{
        const int r = iy + {g.pad_h};
        for (int c = 0; c < {g.cin}; c++) {{
            const float *srow = x + (long)c * {src_plane} + {src_off} + iy * {src_row};
            float *dst = xp + (long)c * {g.plane};
{nl.join(copies)}
        }}
    }}{self._join()}{shifted}
}}
"""

    def _pattern_loop(self, q: int, taps: tuple[int, ...]) -> str:
        """One pattern's kernels: each tap's input vectors are loaded once and feed every filter of the unit."""
        r, vw, F = self.k.r, self.k.vw, self.p.group
        plane = self.input_view[0] if self.input_view else self.g.plane
        lines = [f"        for (int k = gp[{q}]; k < gp[{q + 1}]; k++) {{",
                 f"            const float *s = xt + (long)cidx[k] * {plane};",
                 f"            const float *wk = wt + (long)k * {F * self.p.tmax};"]
        for i, tap in enumerate(taps):
            off = self.g.tap_offset(tap)
            ws = " ".join(f"const float w{f} = wk[{f * self.p.tmax + i}];" for f in range(F))
            lines.append(f"            {{ {ws}")
            for j in range(r):
                if F == 1:
                    lines.append(f"              a0_{j} += w0 * ld(s + {off + j * vw});")
                else:
                    fmas = " ".join(f"a{f}_{j} += w{f} * x;" for f in range(F))
                    lines.append(f"              {{ const vf x = ld(s + {off + j * vw}); {fmas} }}")
            lines.append("            }")
        lines.append("        }")
        return "\n".join(lines)

    def _out_rows(self) -> tuple[int, str]:
        """Floats per output channel, and the C offset of output row ``yo`` in it: the network buffer's layout
        (``padded_io``) or NCHW."""
        if self.padded_io:
            lay = self.out_layout
            return lay.plane, f"{lay.origin} + yo * {lay.pitch}"
        return self.g.ho * self.g.wo, f"yo * {self.g.wo}"

    def _tile_out(self, acc: str, plane: int) -> str:
        """A scalar epilogue's start: the tile's accumulators to the stack, the filter's bias and output plane."""
        return f"""
        float tmp[{self.tile}] __attribute__((aligned(64)));
        {" ".join(f"st(tmp + {j * self.k.vw}, {acc}{j});" for j in range(self.k.r))}
        const float bf = bias[f];
        float *yf = yb + (long)perm[f] * {plane};"""

    @property
    def _copy_shift(self) -> int:
        """Offset from an output pixel to its second copy in the network buffer (0: no copy, or NCHW output)."""
        return self.out_layout.copy_shift if self.padded_io else 0

    def _scalar_row(self, u0: int | str, n: int | str, src: str, dst: str, res: str | None) -> str:
        """Bias, residual, ReLU and the store (both copies) of floats u0 <= u < n of an output row, one at a time."""
        act = c_scalar(self.act)
        r = f" v += ({res})[u];" if res else ""
        copy = f" ({dst})[u + {self._copy_shift}] = v;" if self._copy_shift else ""
        return f"for (int u = {u0}; u < {n}; u++) {{ float v = ({src})[u] + bf;{r}{act} ({dst})[u] = v;{copy} }}"

    def _row_ops(self, n: int, src: str, dst: str, res: str | None) -> str:
        """Bias, residual, ReLU and the store (both copies) of one output row of ``n`` floats read from the
        stack at ``src``: whole vectors, then a half vector, then scalars. Measured on resnet20's 1x1 stride-2
        shortcut (Zen 5): the same row as a scalar loop for gcc to vectorise took 5.1 us, these ops 3.5 us."""
        vw, shift = self.k.vw, self._copy_shift
        out, u = [], 0
        for width, ty, ld, st, half in ((vw, "vf", "ld", "st", False), (vw // 2, "vh", "ldh", "sth", True)):
            while n - u >= width:
                e = f"{ld}({src} + {u}) + bf" + (f" + {ld}({res} + {u})" if res else "")
                e = c_vector(self.act, e, half)
                copy = f" {st}({dst} + {u + shift}, v);" if shift else ""
                out.append(f"{{ const {ty} v = {e}; {st}({dst} + {u}, v);{copy} }}")
                u += width
        if u < n:
            out.append(self._scalar_row(u, n, src, dst, res))
        return " ".join(out)

    def _epilogue(self, acc: str = "a0_") -> str:
        g, T = self.g, self.tile
        if self.vector_out:
            return self._vector_epilogue(acc)
        plane, row = self._out_rows()
        res = f"rb + {row}" if self.residual else None
        whole = self._row_ops(g.wo, "tmp + j - j0", f"yf + {row}", res)
        part = self._scalar_row(0, "valid", "tmp + j - j0", f"yf + {row} + xo", res and f"{res} + xo")
        return self._tile_out(acc, plane) + f"""
        const float *rb = {"res + (long)perm[f] * " + str(plane) if self.residual else "0"};
        (void)rb;
        int j0 = t * {T}, j1 = j0 + {T} < {g.wide} ? j0 + {T} : {g.wide};
        for (int j = j0; j < j1; ) {{
            int yo = j / {g.wph}, xo = j - yo * {g.wph};
            int run = {g.wph} - xo; if (run > j1 - j) run = j1 - j;
            int valid = xo < {g.wo} ? ({g.wo} - xo < run ? {g.wo} - xo : run) : 0;
            if (valid == {g.wo}) {{  /* a whole row (then xo = 0): explicit vector ops */
                {whole}
            }} else {{
                {part}
            }}
            j += run;
        }}"""

    def _vector_epilogue(self, acc: str) -> str:
        """Whole-vector stores into the padded output; columns past the image get 0 (they are its border)."""
        g, T, vw, r = self.g, self.tile, self.k.vw, self.k.r
        plane, shift = self.out_layout.plane, self.out_layout.origin  # wide rows are the padded rows
        full = g.wide // T  # tiles that end inside the image
        lines = [f"""
        const float bf = bias[f];
        const long base = (long)perm[f] * {plane} + (long)t * {T} + {shift};
        float *yo = yb + base;
        const float *mk = cmask + (long)t * {T};"""]
        if self.residual:
            lines.append("        const float *ro = res + base;")
        body = []
        for j in range(r):
            e = f"{acc}{j} + bf" + (f" + ld(ro + {j * vw})" if self.residual else "")
            e = c_vector(self.act, e)
            body.append(f"st(yo + {j * vw}, {e} * ld(mk + {j * vw}));")
        lines.append(f"        if (t < {full}) {{ {' '.join(body)} }}")
        act = c_scalar(self.act)
        res = "v += ro[u];" if self.residual else ""
        lines.append(f"""        else {{
            float tmp[{T}] __attribute__((aligned(64)));
            {" ".join(f"st(tmp + {j * vw}, {acc}{j});" for j in range(r))}
            for (int u = 0; u < {g.wide} - t * {T} && u < {T}; u++) {{
                float v = tmp[u] + bf; {res} {act}
                yo[u] = v * mk[u];
            }}
        }}""")
        return "\n".join(lines)

    def signature(self, name: str) -> str:
        """Only the read-only weight tables are ``restrict``. Activation buffers and scratch are written by other
        threads between barriers; once gcc inlines a layer into the network function, a restrict buffer
        argument lets -O3 move its loads above the barrier (an atomic on another pointer) and read stale rows."""
        res = "const float *res, " if self.residual else ""
        cm = "const float *restrict cmask, " if self.vector_out else ""
        return (f"void {name}(const float *xb, float *yb, {res}const float *restrict wt, "
                "const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm, "
                f"const float *restrict bias, {cm}float *xp)")

    def tap_offsets(self) -> list[list[int]]:
        return [[self.g.tap_offset(t) for t in pat] for pat in self.p.patterns]

    def _blocked_body(self, name: str) -> str:
        """Channel-blocked variant: per tile and chunk of filters, channel blocks outermost; each kernel is TMAX
        (offset, weight) taps read from tables (no per-pattern loops), partial sums kept on the stack."""
        g, k, p = self.g, self.k, self.p
        r, vw, T, tmax = k.r, k.vw, self.tile, p.tmax
        nb = -(-g.cin // k.cblock)
        fc, nchunk = self.filter_chunks
        zero = " ".join(f"a0_{j} = z;" for j in range(r))
        load = " ".join(f"a0_{j} = ld(pf + {j * vw});" for j in range(r))
        save = " ".join(f"st(pf + {j * vw}, a0_{j});" for j in range(r))
        fmas = " ".join(f"a0_{j} += wi * ld(s + {j * vw});" for j in range(r))
        src = "xb" if self.direct else "xp"
        return self._prep(f"{name}_prep") + f"""
static {self.signature(name)} {{
        {name}_prep(xb, xp);
        const float *xin = {src};
        const vf z = {{0}};
        {self._omp_for(compute=True)}
        for (int q = 0; q < {self.ntiles * nchunk}; q++) {{
        const int t = q / {nchunk}, c0 = (q - t * {nchunk}) * {fc};
        const int c1 = c0 + {fc} < {p.cout} ? c0 + {fc} : {p.cout};
        const float *xt = xin + (long)t * {T};
        float part[{fc * T if nb > 1 else vw}] __attribute__((aligned(64)));
        (void)part;
        for (int b = 0; b < {nb}; b++) {{
        for (int f = c0; f < c1; f++) {{
        float *pf = part + (f - c0) * {T};
        (void)pf;
        vf {", ".join(f"a0_{j}" for j in range(r))};
        if (b == 0) {{ {zero} }} else {{ {load} }}
        for (int k = gptr[f * {nb} + b]; k < gptr[f * {nb} + b + 1]; k++) {{
            const int32_t *o = cidx + (long)k * {tmax};
            const float *w = wt + (long)k * {tmax};
            #pragma GCC unroll 16
            for (int i = 0; i < {tmax}; i++) {{ const float *s = xt + o[i]; const float wi = w[i]; {fmas} }}
        }}
        if (b < {nb - 1}) {{ {save} }}
        else {{{self._epilogue("a0_")}
        }}
        }}
        }}
        }}{self._join(compute=True)}
}}
"""

    @property
    def nsets(self) -> int:
        """Accumulator sets of the shifted variant: one per column shift a tap reads (see :meth:`tap_place`)."""
        return self.g.kw if self.g.stride == 1 else 2

    def tap_place(self, tap: int) -> tuple[int, int]:
        """Where tap (dy, dx) reads, relative to a tile's start in its channel's planes, and its accumulator set.
        Set d adds w * x[q + offset] into c_d[q]; output p takes c_d[p + d - 1]. Stride 1: row dy, set dx. Stride 2
        (tight phase planes of even and odd padded rows, and of even and odd image columns): output (i, j) reads
        padded row 2i + dy, which is row i + dy // 2 of row phase dy % 2, and image column 2j + dx - 1: column j
        of the even-column plane (dx 1) or column j - 1 / j of the odd one (dx 0 / 2)."""
        g = self.g
        dy, dx = divmod(tap, g.kw)
        if g.stride == 1:
            return dy * g.wph, dx
        return ((dy % 2) * 2 + (dx + 1) % 2) * g.phase_stride + (dy // 2) * g.wph, (dx + 1) // 2

    def _shifted_taps(self, q: int, n_vec: int, halo: bool) -> str:
        """One kernel of pattern q: each row it reads is loaded as aligned vectors once, and each tap on that row
        accumulates into its set; sets d > 0 take one more vector when the tile needs it (the halo)."""
        taps, g, vw = self.p.patterns[q], self.g, self.k.vw
        rows: dict[int, list[tuple[int, int]]] = {}
        for i, t in enumerate(taps):
            off, d = self.tap_place(t)
            rows.setdefault(off, []).append((d, i))
        lines = []
        for off, lst in sorted(rows.items()):
            nv = n_vec + 1 if halo and any(d for d, _ in lst) else n_vec
            c = (off % vw) // (vw // self.copies)  # the copy in which this row starts on a vector boundary
            base = c * self.copy_stride + off - c * g.wph
            loads = " ".join(f"const vf x{j} = lda(s + {base + j * vw});" for j in range(nv))
            fmas = []
            for d, i in lst:
                n = n_vec + 1 if halo and d else n_vec
                fmas.append(f"{{ const float wi = w[{i}]; " + " ".join(f"c{d}_{j} += wi * x{j};" for j in range(n))
                            + " }")
            lines.append(f"                {{ {loads} {' '.join(fmas)} }}")
        return "\n".join(lines)

    def _tight_masks(self) -> tuple[str, dict[tuple[int, int], str], int]:
        """Lane masks of the tight combine: set 0 (reads column x-1) is cut at every row's first column, the last
        set (x+1) at its last. A tile starts a row, so vector j's columns repeat with j modulo the vectors a row
        holds (1 when a vector holds whole rows)."""
        vw, W = self.k.vw, self.g.wo
        period = W // vw if W >= vw else 1
        decl, names = [], {}
        edges = [(0, 0)] + ([(self.nsets - 1, W - 1)] if self.nsets > 2 else [])  # stride 2: set 1 reads column j
        for jm in range(period):
            cols = [(jm * vw + i) % W for i in range(vw)]
            for d, edge in edges:
                if edge in cols:
                    names[(d, jm)] = f"m{d}_{jm}"
                    lanes = ", ".join("0" if c == edge else "-1" for c in cols)
                    decl.append(f"const vi m{d}_{jm} = {{{lanes}}};")
        return " ".join(decl) + " ", names, period

    def _tight_epilogue(self, acc: str) -> str:
        """Bias, residual and ReLU on whole rows of a tight tile, as explicit vector ops (:meth:`_row_ops`)."""
        g, T, W = self.g, self.tile, self.g.wo
        plane, row = self._out_rows()
        ops = self._row_ops(W, "tmp + j", "d", "rr" if self.residual else None)
        return self._tile_out(acc, plane) + f"""
        const int n = {g.wide} - t * {T} < {T} ? {g.wide} - t * {T} : {T};
        for (int j = 0; j < n; j += {W}) {{
            const int yo = (t * {T} + j) / {W};
            float *d = yf + {row};
            const float *rr = {"res + (long)perm[f] * " + str(plane) + " + " + row if self.residual else "0"};
            (void)rr;
            {ops}
        }}"""

    def _shifted_body(self, name: str) -> str:
        """dx-shifted accumulators on aligned rows. A tap (dy, dx) adds w * x[p + dy*P + dx] to output p; written
        as c_dx[q] += w * x[q + dy*P] with q = p + dx, every load is an aligned vector of one input row (the row
        pitch P is a multiple of VW) and one row load feeds all of a pattern's taps in that row. The three sets
        are combined once per filter and tile: out[p] = c0[p] + c1[p+1] + c2[p+2]. A tile whose last outputs need
        c1/c2 beyond it computes one extra vector for those sets (its "halo"). Channel blocks as in
        ``_blocked_body``; kernels are grouped per (filter, channel block, pattern) so taps stay constants."""
        g, k, p = self.g, self.k, self.p
        r, vw, T, tmax, P = k.r, k.vw, self.tile, p.tmax, len(p.patterns)
        nb = -(-g.cin // k.cblock)
        fc, nchunk = self.filter_chunks
        tight = g.tight  # no zero columns: every tile starts a row, taps past an edge are masked, no halo
        if tight:
            assert T % g.wo == 0 or vw % g.wo == 0, "tight tiles hold whole rows"
        ns = self.nsets
        nacc = [r] * ns if tight else [r] + [r + 1] * (ns - 1)  # sets d > 0 may need the halo vector
        names = [f"c{d}_{j}" for d in range(ns) for j in range(nacc[d])]
        zero = " ".join(f"{a} = z;" for a in names)
        load = " ".join(f"{a} = ld(pf + {i * vw});" for i, a in enumerate(names))
        save = " ".join(f"st(pf + {i * vw}, {a});" for i, a in enumerate(names))
        span = (r + 1) * vw
        temps = ", ".join(f"t{d}[{span + vw}] __attribute__((aligned(64)))" for d in range(ns))
        if tight:  # out[p] = c0[p-1] & (column > 0) + c1[p] + c2[p+1] & (column < W-1); sets stored a vector in
            stores = "st(t0, z); " + " ".join(f"st(t{d} + {(j + 1) * vw}, c{d}_{j});"
                                               for d in range(ns) for j in range(r))
            decl, mask, period = self._tight_masks()

            def term(d: int, j: int) -> str:
                v = f"ld(t{d} + {(j + 1) * vw + d - 1})"
                m = mask.get((d, j % period))
                return f"(vf)((vi){v} & {m})" if m else v
            combine = decl + " ".join(f"const vf o_{j} = " + " + ".join(term(d, j) for d in range(ns)) + ";"
                                      for j in range(r))
        else:
            stores = " ".join(f"st(t{d} + {j * vw}, c{d}_{j});" for d in range(ns) for j in range(nacc[d]))
            combine = " ".join(f"const vf o_{j} = " + " + ".join(f"ld(t{d} + {j * vw + d})" for d in range(ns))
                               + ";" for j in range(r))

        def loops(halo: bool) -> str:
            out = []
            for q in range(P):
                out.append(f"""            for (int k = gp[{q}]; k < gp[{q + 1}]; k++) {{
                const float *s = xt + cidx[k];
                const float *w = wt + (long)k * {tmax};
{self._shifted_taps(q, r, halo)}
            }}""")
            return "\n".join(out)

        if tight:
            halo, taps = "", loops(False)
        else:
            halo = (f"const int pa = t * {T} + {T - 2}, pb = pa + 1;\n        const int halo = (pa < {g.wide} && "
                    f"pa % {g.wph} < {g.wo}) || (pb < {g.wide} && pb % {g.wph} < {g.wo});")
            taps = f"        if (halo) {{\n{loops(True)}\n        }} else {{\n{loops(False)}\n        }}"
        return self._prep(f"{name}_prep") + f"""
static {self.signature(name)} {{
        {name}_prep(xb, xp);
        const vf z = {{0}};
        {self._omp_for(compute=True)}
        for (int q = 0; q < {self.ntiles * nchunk}; q++) {{
        const int t = q / {nchunk}, c0 = (q - t * {nchunk}) * {fc};
        const int c1 = c0 + {fc} < {p.cout} ? c0 + {fc} : {p.cout};
        const float *xt = {"xb" if self.in_place else "xp"} + (long)t * {T};
        {halo}
        float part[{fc * len(names) * vw if nb > 1 else vw}] __attribute__((aligned(64)));
        (void)part;
        for (int b = 0; b < {nb}; b++) {{
        for (int f = c0; f < c1; f++) {{
        float *pf = part + (f - c0) * {len(names) * vw};
        (void)pf;
        vf {", ".join(names)};
        if (b == 0) {{ {zero} }} else {{ {load} }}
        const int32_t *gp = gptr + ((long)f * {nb} + b) * {P};
{taps}
        if (b < {nb - 1}) {{ {save} }}
        else {{
        float {temps};
        {stores}
        {combine}{self._tight_epilogue("o_") if tight else self._epilogue("o_")}
        }}
        }}
        }}
        }}{self._join(compute=True)}
}}
"""

    def render_body(self, name: str) -> str:
        """One image through the layer, as orphaned worksharing loops: call it inside a parallel region."""
        if self.k.shift:
            return self._shifted_body(name)
        if self.k.cblock:
            return self._blocked_body(name)
        p, k = self.p, self.k
        P = len(p.patterns)
        loops = "\n".join(self._pattern_loop(q, taps) for q, taps in enumerate(p.patterns))
        F, units = p.group, p.units
        accs = " ".join(f"vf a{f}_{j} = {{0}};" for f in range(F) for j in range(k.r))
        epilogues = "\n".join(f"        {{ const int f = u * {F} + {i};{self._epilogue(f'a{i}_')}\n        }}"
                              for i in range(F))
        src = "xb" if self.direct else f"xp + {self.input_view[1]}" if self.input_view else "xp"
        return self._prep(f"{name}_prep") + f"""
static {self.signature(name)} {{
        {name}_prep(xb, xp);
        const float *xin = {src};
        {self._omp_for("static, 1", compute=True)}
        for (int q = 0; q < {self.ntiles * units}; q++) {{
        const int u = q / {self.ntiles}, t = q - u * {self.ntiles};
        const int32_t *gp = gptr + (long)u * {P};
        const float *xt = xin + (long)t * {self.tile};
        {accs}
{loops}
{epilogues}
        }}{self._join(compute=True)}
}}
"""

    def render_function(self, name: str, body: str) -> str:
        """Exported entry point for a batch: one parallel region around the body."""
        g = self.g
        rb = f"res0 + (long)b * {g.cout * g.ho * g.wo}, " if self.residual else ""
        res_arg = "const float *res0, " if self.residual else ""
        return f"""
void {name}(int n, const float *x, float *y, {res_arg}const float *restrict wt,
         const int32_t *restrict gptr, const int32_t *restrict cidx, const int32_t *restrict perm,
         const float *restrict bias, float *xp, int nthreads) {{
    #pragma omp parallel num_threads(nthreads)
    for (int b = 0; b < n; b++)
        {body}(x + (long)b * {g.cin * g.h * g.w}, y + (long)b * {g.cout * g.ho * g.wo}, {rb}wt, gptr, cidx,
               perm, bias, xp);
}}
"""


def render_layer(packed: PackedConv, geom: ConvGeometry, candidates: tuple[KernelParams, ...], act: str | bool,
                 residual: bool) -> str:
    """One translation unit with a function ``run_i`` per candidate, so tuning costs one compiler call."""
    vws = {c.vw for c in candidates}
    if len(vws) != 1:
        raise ValueError("all candidates of a layer share one vector width")
    rs = [ConvRenderer(packed, geom, c, act, residual) for c in candidates]
    parts = [ConvRenderer.prelude(candidates[0].vw)]
    for i, r in enumerate(rs):
        parts += [r.render_body(f"body_{i}"), r.render_function(f"run_{i}", f"body_{i}")]
    parts.append(f"long scratch_size(void) {{ return {max(r.scratch_floats for r in rs)}; }}\n")
    return "".join(parts)
