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


def even_load(ptr: str, vw: int, offset: int | None = None) -> str:
    """C of a stride-2 row load: floats ``ptr[0], ptr[2], ... ptr[2 * vw - 2]`` (from ``ptr + offset`` when given)
    as one vector: two loads and a shuffle that keeps the even lanes."""
    lanes = ", ".join(str(2 * i) for i in range(vw))
    first, second = (ptr, f"{ptr} + {vw}") if offset is None else (f"{ptr} + {offset}", f"{ptr} + {offset + vw}")
    return f"__builtin_shuffle(ld({first}), ld({second}), (vi){{{lanes}}})"


class ConvRenderer:
    """Renders one sparse conv layer with one parameter set; :func:`render_layer` joins several candidates
    into a library and the whole-network emitter calls :meth:`render_body` directly. Its layout facts
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
        if params.shift and not (self.g.stride == 1 and self.g.kw <= 3 or self.g.stride == 2 and self.g.kw == 3):
            raise ValueError("the shifted variant runs stride-1 convs up to 3 wide and stride-2 3x3 convs only")
        self.padded_io = padded_io
        self.sync, self.input_view = sync, input_view
        self.no_barrier = False  # set by the whole network when its next statement does not read this output
        if input_view and (params.cblock or params.shift):
            raise ValueError("an input view is read by the per-pattern loops only")
        self.copies = shift_copies(geom, params)
        self.in_layout = in_layout or padded_layout(geom.h, geom.w)
        self.out_layout = out_layout or padded_layout(self.g.ho, self.g.wo)

    def omp_for(self, schedule: str = "static", compute: bool = False) -> str:
        """A worksharing loop's pragma: ``nowait`` when the caller's sync joins the threads instead, or for the
        layer's compute loop when nothing after it needs a barrier."""
        wait = self.sync or (compute and self.no_barrier)
        return f"#pragma omp for schedule({schedule})" + (" nowait" if wait else "")

    def join(self, compute: bool = False) -> str:
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

    def prep(self, name: str = "prep") -> str:
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
            vector = self._vector_row_copy(j0, j1)
            copies.append(f"""            if (r % {s} == {py}) {{
                float *row = dst + {(py * s + px) * g.phase_stride} + (r / {s}) * {g.wph};
                const float *sr = srow + {px - g.col0};
                {vector or f"for (int j = {j0}; j < {j1}; j++) row[j] = sr[j * {s}];"}{second}
            }}""")
        nl = "\n"
        shifted = "".join(f"""
    {self.omp_for()}  /* copy {c}: the input shifted by {c} row(s), so those rows load aligned */
    for (long i = 0; i < {self.copy_stride - c * g.wph}; i++)
        xp[{c * self.copy_stride} + i] = xp[i + {c * g.wph}];{self.join()}"""
                          for c in range(1, self.copies)) if self.copies > 2 else ""
        return f"""
static void {name}(const float *x, float *xp) {{
    /* interior of the zero-padded, phase-split planes; borders were zeroed once and never change. Rows are
       split across threads, as the conv's tiles are: each thread copies the band of rows it then reads. */
    {self.omp_for()}
    for (int iy = 0; iy < {g.h}; iy++) {{
        const int r = iy + {g.pad_h};
        for (int c = 0; c < {g.cin}; c++) {{
            const float *srow = x + (long)c * {src_plane} + {src_off} + iy * {src_row};
            float *dst = xp + (long)c * {g.plane};
{nl.join(copies)}
        }}
    }}{self.join()}{shifted}
}}
"""

    def _vector_row_copy(self, j0: int, j1: int) -> str | None:
        """A stride-2 phase row ``row[j] = sr[2j]`` (j0 <= j < j1) as whole vectors: two loads and an even-lane
        shuffle each, lanes outside the image ANDed to the zero the layout keeps there. Only where a phase row is
        whole vectors (its stores stay inside it) and the source is a network buffer (its slack takes the loads
        past the last row); None: the scalar copy."""
        g, vw = self.g, self.k.vw
        nvec = -(-j1 // vw)
        if g.stride != 2 or not self.padded_io or g.wph % vw or self.copies != 1 or nvec > 8:
            return None
        out = []
        for b in range(nvec):
            v = even_load("sr", vw, 2 * b * vw)
            lanes = [j0 <= b * vw + i < j1 for i in range(vw)]
            if not all(lanes):
                v = f"(vf)((vi){v} & (vi){{{', '.join('-1' if k else '0' for k in lanes)}}})"
            out.append(f"st(row + {b * vw}, {v});")
        return " ".join(out)

    def out_rows(self) -> tuple[int, str]:
        """Floats per output channel, and the C offset of output row ``yo`` in it: the network buffer's layout
        (``padded_io``) or NCHW."""
        if self.padded_io:
            lay = self.out_layout
            return lay.plane, f"{lay.origin} + yo * {lay.pitch}"
        return self.g.ho * self.g.wo, f"yo * {self.g.wo}"

    def tile_out(self, acc: str, plane: int) -> str:
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

    def row_ops(self, n: int, src: str, dst: str, res: str | None) -> str:
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

    def epilogue(self, acc: str = "a0_") -> str:
        g, T = self.g, self.tile
        if self.vector_out:
            return self._vector_epilogue(acc)
        plane, row = self.out_rows()
        res = f"rb + {row}" if self.residual else None
        whole = self.row_ops(g.wo, "tmp + j - j0", f"yf + {row}", res)
        part = self._scalar_row(0, "valid", "tmp + j - j0", f"yf + {row} + xo", res and f"{res} + xo")
        return self.tile_out(acc, plane) + f"""
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

    @property
    def nsets(self) -> int:
        """Accumulator sets of the shifted variant: one per column shift a tap reads (see :meth:`tap_place`)."""
        return self.g.kw if self.g.stride == 1 else 2

    def tap_place(self, tap: int) -> tuple[int, int]:
        """Where tap (dy, dx) reads, relative to a tile's start in its channel's planes, and its accumulator set.
        Set d adds w * x[q + offset] into c_d[q]; output p takes c_d[p + d] (c_d[p + d - 1] on tight rows). Stride 1:
        row dy, set dx. Stride 2 on padded phase planes: padded column 2j + dx is column j + dx // 2 of column
        phase dx % 2, set dx // 2. Stride 2
        (tight phase planes of even and odd padded rows, and of even and odd image columns): output (i, j) reads
        padded row 2i + dy, which is row i + dy // 2 of row phase dy % 2, and image column 2j + dx - 1: column j
        of the even-column plane (dx 1) or column j - 1 / j of the odd one (dx 0 / 2)."""
        g = self.g
        dy, dx = divmod(tap, g.kw)
        if g.stride == 1:
            return dy * g.wph, dx
        if not g.tight:  # padded phase planes: padded column 2j + dx is column j + dx // 2 of phase dx % 2
            return g.tap_offset(tap) - dx // 2, dx // 2
        return ((dy % 2) * 2 + (dx + 1) % 2) * g.phase_stride + (dy // 2) * g.wph, (dx + 1) // 2

    def render_body(self, name: str) -> str:
        """One image through the layer, as orphaned worksharing loops: call it inside a parallel region (the body
        of the kernel family that owns these parameters)."""
        from tessera.compiler.kernels import family_of

        return family_of(self.k).render_body(self, name)

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
