"""C code generation for block-sparse 1x1 convs and linear layers (see ``block_format`` for the dataflow).

Vectors run along pixels (batch entries for a linear layer): a tile is R vectors of one image's pixels. For each
tile, the kernel sweeps start rows top to bottom holding N x R accumulators in registers; a block costs R input
loads, N weight broadcasts and N*R fused multiply-adds — the same for aligned and unaligned blocks, which is the
point of rotating the weights. The aligned kernel (every block starts at a multiple of N) is the baseline: it
runs one loop per N rows and flushes N rows at once. Work items are (tile, chunk of rows) for OpenMP; a chunk of
an unaligned layer starts N rows early so blocks reaching into it from above are counted (their rows above the
chunk are discarded). A partial last tile is copied into a zero-padded scratch tile so every tile is whole.
"""

from __future__ import annotations

from tessera.compiler.activations import c_vector, canon
from tessera.compiler.block_format import PackedBlocks
from tessera.compiler.codegen import ConvRenderer
from tessera.compiler.geometry import KernelParams


def _row_chunks(rows: int, n: int, ntiles: str) -> str:
    """C declaring ``chunks`` and ``per``: each tile's rows split into chunks of ``per`` (a multiple of N) so that
    ``nthreads`` threads get about four work items each; one chunk at one thread."""
    return f"""    int chunks = (4 * nthreads + {ntiles} - 1) / {ntiles};
    if (nthreads == 1 || chunks < 1) chunks = 1;
    if (chunks > {rows // n}) chunks = {rows // n};
    const int per = ({rows // n} + chunks - 1) / chunks * {n};
    chunks = ({rows} + per - 1) / per;"""


class BlockRenderer:
    def __init__(self, packed: PackedBlocks, params: KernelParams, act: str | bool, residual: bool,
                 masked: bool = False):
        """``masked``: every store is ANDed with an int32 lane mask (``mk``, the tile's own), so the positions
        of a whole-network buffer that are not pixels (pad columns, the rows after the last) stay exactly zero
        whatever the epilogue makes of them."""
        self.p, self.k, self.act, self.residual, self.masked = packed, params, canon(act), residual, masked

    @property
    def tile(self) -> int:
        return self.k.r * self.k.vw

    @property
    def padded_rows(self) -> int:
        return int(self.p.row_ptr.size - 1)

    def _block(self, r: int) -> str:
        n, vw = self.p.n, self.k.vw
        loads = " ".join(f"const vf x{j} = ld(s + {j * vw});" for j in range(r))
        fmas = "\n".join(f"                {{ const float w = v[{lane}]; "
                         + " ".join(f"a{lane}_{j} += w * x{j};" for j in range(r)) + " }"
                         for lane in range(n))
        return f"""            {{ const float *s = xt + (long)cols[k] * ldx; const float *v = vals + (long)k * {n};
                {loads}
{fmas}
            }}"""

    def _flush(self, lane: int, row: str, r: int, cout: str) -> str:
        vw = self.k.vw
        outs = []
        for j in range(r):
            e = f"a{lane}_{j} + b" + (f" + ld(rr + {j * vw})" if self.residual else "")
            v = c_vector(self.act, e)
            outs.append(f"st(yr + {j * vw}, (vf)((vi)({v}) & *(const vi *)(mk + {j * vw})));" if self.masked
                        else f"st(yr + {j * vw}, {v});")
        res = f"const float *rr = rt + (long)({row}) * ldy; " if self.residual else ""
        zero = " ".join(f"a{lane}_{j} = z;" for j in range(r))
        return (f"            if ({row} >= r0 && {row} < {cout}) {{ const vf b = z + bias[{row}]; "
                f"float *yr = yt + (long)({row}) * ldy; {res}{' '.join(outs)} }}\n            {zero}")

    def render_tile(self, name: str, r: int, shared: bool = False) -> str:
        """The row sweep for a tile of ``r`` vectors (the layer's R, or fewer for the last, partial tile).
        ``shared``: for a unit of its own that layers of any shape link (the row count an argument, the function
        visible to the rest of the library)."""
        n = self.p.n
        cout = "cout" if shared else str(self.p.cout)
        accs = " ".join(f"vf a{lane}_{j} = z;" for lane in range(n) for j in range(r))
        if self.p.aligned:
            sweep = (f"        for (int k = rp[rb]; k < rp[rb + {n}]; k++)\n{self._block(r)}\n"
                     + "\n".join(self._flush(lane, f"rb + {lane}", r, cout) for lane in range(n)))
            start = "r0"
        else:
            sweep = "\n".join(f"        for (int k = rp[rb + {lane}]; k < rp[rb + {lane + 1}]; k++)\n"
                              f"{self._block(r)}\n" + self._flush(lane, f"rb + {lane}", r, cout) for lane in range(n))
            start = f"(r0 >= {n} ? r0 - {n} : 0)"
        return f"""
{self._tile_signature(name, shared)} {{
    const vf z = {{0}};
    (void)rt;
    {accs}
    for (int rb = {start}; rb < r1; rb += {n}) {{
{sweep}
    }}
}}
"""

    def _tile_signature(self, name: str, shared: bool) -> str:
        mask_arg = ", const int32_t *restrict mk" if self.masked else ""
        head = f"{_HIDDEN}void" if shared else "static void"
        return f"""{head} {name}(const float *xt, long ldx, float *yt, long ldy, const float *rt,
                   int r0, int r1, const float *restrict vals, const int32_t *restrict cols,
                   const int32_t *restrict rp, const float *restrict bias{mask_arg}{", int cout" if shared else ""})"""

    def render_function(self, name: str, tile: str, shared: bool = False) -> str:
        """``tile`` names the tile functions: ``{tile}_{r}`` for r = 1 .. R (``shared``: in a unit of their own,
        see :meth:`render_tile`)."""
        p, T = self.p, self.tile
        more = f", {p.cout}" if shared else ""
        args = f"(xs, {T}, ys, {T}, rs, r0, r1, vals, cols, rp, bias{more})"
        tails = "\n".join(f"                case {r}: {tile}_{r}{args}; break;" for r in range(1, self.k.r)) + \
            f"\n                default: {tile}_{self.k.r}{args};"
        cin, cout, rows, n = p.cin, p.cout, self.padded_rows, p.n
        res_copy = f"""
            #pragma omp for schedule(static) nowait
            for (int c = 0; c < {cout}; c++) {{
                memcpy(rs + (long)c * {T}, rb + (long)c * P + (long)full * {T}, sizeof(float) * tail);
                memset(rs + (long)c * {T} + tail, 0, sizeof(float) * ({T} - tail));
            }}""" if self.residual else ""
        return f"""
void {name}(int P, int nimg, const float *x, float *y, const float *res,
         const float *restrict vals, const int32_t *restrict cols, const int32_t *restrict rp,
         const float *restrict bias, float *scratch, int nthreads) {{
    if (P <= 0 || nimg <= 0) return;  /* an empty batch: nothing to split (and no division by zero tiles) */
    const int full = P / {T}, tail = P - full * {T}, ntiles = full + (tail > 0);
{_row_chunks(rows, n, "ntiles")}
    float *xs = scratch, *ys = scratch + {cin * T}, *rs = ys + {cout * T};
    (void)res; (void)rs;
    #pragma omp parallel num_threads(nthreads)
    for (int b = 0; b < nimg; b++) {{
        const float *xb = x + (long)b * {cin} * P;
        float *yb = y + (long)b * {cout} * P;
        const float *rb = res ? res + (long)b * {cout} * P : 0;
        (void)rb;
        if (tail) {{
            #pragma omp for schedule(static) nowait
            for (int c = 0; c < {cin}; c++) {{
                memcpy(xs + (long)c * {T}, xb + (long)c * P + (long)full * {T}, sizeof(float) * tail);
                memset(xs + (long)c * {T} + tail, 0, sizeof(float) * ({T} - tail));
            }}{res_copy}
            #pragma omp barrier
        }}
        #pragma omp for schedule(static, 1)
        for (int q = 0; q < ntiles * chunks; q++) {{
            const int t = q / chunks, ch = q - t * chunks;
            const int r0 = ch * per, r1 = r0 + per < {rows} ? r0 + per : {rows};
            if (t < full)
                {tile}_{self.k.r}(xb + (long)t * {T}, P, yb + (long)t * {T}, P, rb ? rb + (long)t * {T} : 0, r0, r1,
                       vals, cols, rp, bias{more});
            else switch ((tail + {self.k.vw - 1}) / {self.k.vw}) {{  /* the partial tile: only the vectors it needs */
{tails}
            }}
        }}
        if (tail) {{
            #pragma omp for schedule(static)
            for (int c = 0; c < {cout}; c++)
                memcpy(yb + (long)c * P + (long)full * {T}, ys + (long)c * {T}, sizeof(float) * tail);
        }}
    }}
}}
"""

    def render_planar(self, name: str, origin: int, ldx: int, ldy: int, length: int, sync: str,
                      no_barrier: bool) -> str:
        """The whole-network function's call for a stride-1 1x1 conv whose input and output planes share
        ``origin`` and row pitch: the ``length`` floats from ``origin`` of every plane (pixels and the zero
        columns between rows) are one long row of tiles, read and written in place; the last, partial tile runs
        the narrower tile function. Needs ``masked`` (the mask is ``ntiles * T`` int32 lanes, 0 off-pixel)."""
        if not self.masked:
            raise ValueError("a planar block conv writes pad positions: it needs the lane mask")
        T, rows, n = self.tile, self.padded_rows, self.p.n
        full, tail = divmod(length, T)
        ntiles = full + (tail > 0)
        tiles = "".join(self.render_tile(f"{name}_tile_{r}", r) for r in sorted({self.k.r, -(-tail // self.k.vw)})
                        if r > 0)
        call = "(xb + o, {ldx}, yb + o, {ldy}, rb, r0, r1, vals, cols, rp, bias, mk + (long)t * {T})"
        call = call.format(ldx=ldx, ldy=ldy, T=T)
        last = f"if (t < {full}) {name}_tile_{self.k.r}{call}; else {name}_tile_{-(-tail // self.k.vw)}{call};" \
            if tail else f"{name}_tile_{self.k.r}{call};"
        join = "" if no_barrier or not sync else f"\n    {sync}"
        wait = " nowait" if sync or no_barrier else ""
        return tiles + f"""
static void {name}(const float *xb, float *yb, const float *res, const float *restrict vals,
                   const int32_t *restrict cols, const int32_t *restrict rp, const float *restrict bias,
                   const int32_t *restrict mk) {{
    (void)res;
    const int nthreads = omp_get_num_threads();
{_row_chunks(rows, n, str(ntiles))}
    #pragma omp for schedule(static, 1){wait}
    for (int q = 0; q < {ntiles} * chunks; q++) {{
        const int t = q / chunks, ch = q - t * chunks;
        const int r0 = ch * per, r1 = r0 + per < {rows} ? r0 + per : {rows};
        const long o = {origin} + (long)t * {T};
        const float *rb = res ? res + o : 0;
        {last}
    }}{join}
}}
"""

    @property
    def scratch_floats(self) -> int:
        return (self.p.cin + 2 * self.p.cout) * self.tile


def render_block_layer(packed: PackedBlocks, candidates: tuple[KernelParams, ...], act: str | bool,
                       residual: bool) -> tuple[str, str]:
    """Two translation units: the tiles (``tile_w`` for every width up to the largest R: the code of every
    candidate and of every layer with the same block size, blocks alignment, epilogue and vector width, so it
    is compiled once for all of them) and the layer's own ``run_i`` per candidate and ``scratch_size``."""
    rs = [BlockRenderer(packed, c, act, residual) for c in candidates]
    widths = range(1, max(r.k.r for r in rs) + 1)
    prelude = ConvRenderer.prelude(candidates[0].vw)
    tiles = prelude + "".join(rs[0].render_tile(f"tile_{w}", w, shared=True) for w in widths)
    parts = [prelude, "".join(rs[0]._tile_signature(f"tile_{w}", True) + ";\n" for w in widths)]
    for i, r in enumerate(rs):
        parts.append(r.render_function(f"run_{i}", "tile", shared=True))
    parts.append(f"long scratch_size(void) {{ return {max(r.scratch_floats for r in rs)}; }}\n")
    return tiles, "".join(parts)


_HIDDEN = '__attribute__((visibility("hidden"))) '  # linked into one library, not exported from it
