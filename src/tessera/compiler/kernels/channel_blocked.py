"""Channel-blocked tap lists: per tile and chunk of filters, input channels in blocks whose slice of the input stays
in L1 while every filter of the chunk consumes it; each kernel is TMAX (offset, weight) pairs read from tables (no
per-pattern loops), partial sums on the stack between blocks. Runs any sparse conv."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tessera.compiler.formats import pack_taps
from tessera.compiler.geometry import ConvGeometry, KernelParams, channel_block
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class ChannelBlockedParams(KernelParams):
    """Tiles of R vectors, ``cblock`` input channels per block (each block's input slice stays in L1 while every
    filter of a work chunk consumes it)."""

    cblock: int = 1
    family: ClassVar[str] = "channel_blocked"


def fitted_tile(geom: ConvGeometry, vw: int, lo: int = 4, hi: int = 15) -> int:
    """Accumulator vectors per tile (lo..hi) that cover the layer's wide rows at the least cost: tiles x (R + 2),
    padded positions plus a per-tile overhead of about two vectors' work (the tap loop's loads and branches).
    Measured on 512x7² (63 positions): 8 vectors (1 tile of 64) ran 25% faster than 10 (a tile of 80)."""
    n = geom.vectors(vw)
    return min(range(hi, lo - 1, -1), key=lambda r: -(-n // r) * (r + 2))


def blocked_tiles(registers: int) -> tuple[int, ...]:
    """Accumulator vectors per tile with 16 or 32 vector registers: measured on Zen 3 (AVX2) and on a Xeon
    (AVX-512, where 28 vectors never won: 0.58x-0.95x of 14 or 20)."""
    return (10, 12, 14) if registers <= 16 else (8, 14, 20)


class ChannelBlocked:
    name, format, params = "channel_blocked", "fkw", ChannelBlockedParams

    def candidates(self, vw, group, geom, taps, registers) -> list[KernelParams]:
        """Three tile widths and the one that covers the layer's rows with the least padding, never wider than the
        image (7x7 with AVX-512: 4 vectors, not 14 or 20 of mostly padding); with AVX-512 also in one channel
        block (no partial sums: small images)."""
        if geom is None or taps is None:
            return []
        blocked = blocked_tiles(registers)
        widths = (*blocked, fitted_tile(geom, vw, hi=max(blocked) + 1))
        rs = list(dict.fromkeys(min(r, geom.vectors(vw)) for r in widths))
        blocks = {r: channel_block(geom, taps, r * vw) for r in rs}
        out = [ChannelBlockedParams(r, vw, cb) for r, cb in blocks.items()]
        if vw > 8:
            out += [ChannelBlockedParams(r, vw, geom.cin) for r, cb in blocks.items() if cb < geom.cin]
        return out

    def arrays(self, packed, geom, params):
        offsets = [[geom.tap_offset(t) for t in pat] for pat in packed.patterns]
        tl = pack_taps(packed, offsets, geom.plane, params.cblock)
        return tl.tw, tl.kptr, tl.toff, packed.reorder, packed.bias

    def render_body(self, rr, name: str) -> str:
        g, k, p = rr.g, rr.k, rr.p
        r, vw, T, tmax = k.r, k.vw, rr.tile, p.tmax
        nb = -(-g.cin // k.cblock)
        fc, nchunk = rr.filter_chunks
        zero = " ".join(f"a0_{j} = z;" for j in range(r))
        load = " ".join(f"a0_{j} = ld(pf + {j * vw});" for j in range(r))
        save = " ".join(f"st(pf + {j * vw}, a0_{j});" for j in range(r))
        fmas = " ".join(f"a0_{j} += wi * ld(s + {j * vw});" for j in range(r))
        src = "xb" if rr.direct else "xp"
        return rr.prep(f"{name}_prep") + f"""
static {rr.signature(name)} {{
        {name}_prep(xb, xp);
        const float *xin = {src};
        const vf z = {{0}};
        {rr.omp_for(compute=True)}
        for (int q = 0; q < {rr.ntiles * nchunk}; q++) {{
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
        else {{{rr.epilogue("a0_")}
        }}
        }}
        }}
        }}{rr.join(compute=True)}
}}
"""


register_family(ChannelBlocked())
