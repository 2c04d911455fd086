"""dx-shifted accumulators on aligned rows: one aligned row load feeds every tap of a pattern on that row, each
tap's column shift kept in its own accumulator set and the sets combined once per filter and tile; stride 2 on
phase planes, 7-wide images on rows of half a vector (two input copies), tight rows without zero columns where
the image width allows (see :mod:`tessera.compiler.geometry`). Applies where :func:`shift_applies` says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tessera.compiler.formats import pack_pattern_blocks
from tessera.compiler.geometry import (
    KernelParams,
    channel_block,
    layer_geometry,
    shift_applies,
    tight_rows,
    tight_tile,
)
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class ShiftedParams(KernelParams):
    """Tiles of R aligned vectors per accumulator set, ``cblock`` input channels per block."""

    cblock: int = 1
    family: ClassVar[str] = "shifted"
    shift: ClassVar[bool] = True


class Shifted:
    name, format, params = "shifted", "fkw", ShiftedParams

    def candidates(self, vw, group, geom, taps, registers) -> list[KernelParams]:
        """16 registers (AVX2): 4 vectors x 3 sets (+ halo) fill them; 2 and 3 never won. 32 (AVX-512, NEON):
        8 vectors a set, and one channel block (no partial sums) beside the L1-sized one — measured on a Xeon
        (48 KB L1d) 256x14² at 12%: 0.36 ms in one block vs 0.52 ms in L1-sized blocks (R=4: 1.03 ms); 7x7 images
        run on rows of 8 = half a vector (two input copies, see geometry.shift_copies): 512x7² 0.68 ms vs 0.99 ms
        on rows padded to 16 and 0.78 ms for the best unaligned kernel."""
        if geom is None or taps is None or not shift_applies(geom, group, vw):
            return []
        nvec = layer_geometry(geom, ShiftedParams(4, vw, 1)).vectors(vw)
        rs = [min(r, nvec) for r in ((4,) if registers <= 16 else (4, 8))]  # no tile past the image
        if tight_rows(geom, vw):  # tiles of whole rows (see geometry.tight_rows)
            rs = [tight_tile(geom, vw, r) for r in rs]
        out = []
        for r in dict.fromkeys(rs):
            cb = channel_block(layer_geometry(geom, ShiftedParams(r, vw, 1)), taps, r * vw)
            out += [ShiftedParams(r, vw, c) for c in dict.fromkeys((cb, geom.cin) if vw > 8 else (cb,))]
        return out

    def arrays(self, packed, geom, params):
        wt, ptr, off = pack_pattern_blocks(packed, layer_geometry(geom, params).plane, params.cblock)
        return wt, ptr, off, packed.reorder, packed.bias

    def _shifted_taps(self, cr, q: int, n_vec: int, halo: bool) -> str:
        """One kernel of pattern q: each row it reads is loaded as aligned vectors once, and each tap on that row
        accumulates into its set; sets d > 0 take one more vector when the tile needs it (the halo)."""
        taps, g, vw = cr.p.patterns[q], cr.g, cr.k.vw
        rows: dict[int, list[tuple[int, int]]] = {}
        for i, t in enumerate(taps):
            off, d = cr.tap_place(t)
            rows.setdefault(off, []).append((d, i))
        lines = []
        for off, lst in sorted(rows.items()):
            nv = n_vec + 1 if halo and any(d for d, _ in lst) else n_vec
            c = (off % vw) // (vw // cr.copies)  # the copy in which this row starts on a vector boundary
            base = c * cr.copy_stride + off - c * g.wph
            loads = " ".join(f"const vf x{j} = lda(s + {base + j * vw});" for j in range(nv))
            fmas = []
            for d, i in lst:
                n = n_vec + 1 if halo and d else n_vec
                fmas.append(f"{{ const float wi = w[{i}]; " + " ".join(f"c{d}_{j} += wi * x{j};" for j in range(n))
                            + " }")
            lines.append(f"                {{ {loads} {' '.join(fmas)} }}")
        return "\n".join(lines)

    def _tight_masks(self, cr) -> tuple[str, dict[tuple[int, int], str], int]:
        """Lane masks of the tight combine: set 0 (reads column x-1) is cut at every row's first column, the last
        set (x+1) at its last. A tile starts a row, so vector j's columns repeat with j modulo the vectors a row
        holds (1 when a vector holds whole rows)."""
        vw, W = cr.k.vw, cr.g.wo
        period = W // vw if W >= vw else 1
        decl, names = [], {}
        edges = [(0, 0)] + ([(cr.nsets - 1, W - 1)] if cr.nsets > 2 else [])  # stride 2: set 1 reads column j
        for jm in range(period):
            cols = [(jm * vw + i) % W for i in range(vw)]
            for d, edge in edges:
                if edge in cols:
                    names[(d, jm)] = f"m{d}_{jm}"
                    lanes = ", ".join("0" if c == edge else "-1" for c in cols)
                    decl.append(f"const vi m{d}_{jm} = {{{lanes}}};")
        return " ".join(decl) + " ", names, period

    def _tight_epilogue(self, cr, acc: str) -> str:
        """Bias, residual and ReLU on whole rows of a tight tile, as explicit vector ops (:meth:`_row_ops`)."""
        g, T, W = cr.g, cr.tile, cr.g.wo
        plane, row = cr.out_rows()
        ops = cr.row_ops(W, "tmp + j", "d", "rr" if cr.residual else None)
        return cr.tile_out(acc, plane) + f"""
        const int n = {g.wide} - t * {T} < {T} ? {g.wide} - t * {T} : {T};
        for (int j = 0; j < n; j += {W}) {{
            const int yo = (t * {T} + j) / {W};
            float *d = yf + {row};
            const float *rr = {"res + (long)perm[f] * " + str(plane) + " + " + row if cr.residual else "0"};
            (void)rr;
            {ops}
        }}"""

    def render_body(self, cr, name: str) -> str:
        """dx-shifted accumulators on aligned rows. A tap (dy, dx) adds w * x[p + dy*P + dx] to output p; written
        as c_dx[q] += w * x[q + dy*P] with q = p + dx, every load is an aligned vector of one input row (the row
        pitch P is a multiple of VW) and one row load feeds all of a pattern's taps in that row. The three sets
        are combined once per filter and tile: out[p] = c0[p] + c1[p+1] + c2[p+2]. A tile whose last outputs need
        c1/c2 beyond it computes one extra vector for those sets (its "halo"). Channel blocks as in
        ``_blocked_body``; kernels are grouped per (filter, channel block, pattern) so taps stay constants."""
        g, k, p = cr.g, cr.k, cr.p
        r, vw, T, tmax, P = k.r, k.vw, cr.tile, p.tmax, len(p.patterns)
        nb = -(-g.cin // k.cblock)
        fc, nchunk = cr.filter_chunks
        tight = g.tight  # no zero columns: every tile starts a row, taps past an edge are masked, no halo
        if tight:
            assert T % g.wo == 0 or vw % g.wo == 0, "tight tiles hold whole rows"
        ns = cr.nsets
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
            decl, mask, period = self._tight_masks(cr)

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
{self._shifted_taps(cr, q, r, halo)}
            }}""")
            return "\n".join(out)

        if tight:
            halo, taps = "", loops(False)
        else:
            halo = (f"const int pa = t * {T} + {T - 2}, pb = pa + 1;\n        const int halo = (pa < {g.wide} && "
                    f"pa % {g.wph} < {g.wo}) || (pb < {g.wide} && pb % {g.wph} < {g.wo});")
            taps = f"        if (halo) {{\n{loops(True)}\n        }} else {{\n{loops(False)}\n        }}"
        return cr.prep(f"{name}_prep") + f"""
static {cr.signature(name)} {{
        {name}_prep(xb, xp);
        const vf z = {{0}};
        {cr.omp_for(compute=True)}
        for (int q = 0; q < {cr.ntiles * nchunk}; q++) {{
        const int t = q / {nchunk}, c0 = (q - t * {nchunk}) * {fc};
        const int c1 = c0 + {fc} < {p.cout} ? c0 + {fc} : {p.cout};
        const float *xt = {"xb" if cr.in_place else "xp"} + (long)t * {T};
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
        {combine}{self._tight_epilogue(cr, "o_") if tight else cr.epilogue("o_")}
        }}
        }}
        }}
        }}{cr.join(compute=True)}
}}
"""


register_family(Shifted())
