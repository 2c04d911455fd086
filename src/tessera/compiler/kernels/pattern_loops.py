"""PatDNN's per-pattern loops over FKW storage: filters in units sharing (kernel count, pattern), one loop per
pattern with its taps as compile-time constants, each tap's input vectors loaded once for every filter of the unit
(load-redundancy elimination). Runs any sparse conv; the default when nothing was tuned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tessera.compiler.geometry import KernelParams
from tessera.compiler.kernels import register_family


@dataclass(frozen=True)
class PatternLoopsParams(KernelParams):
    """R accumulator vectors per filter of a unit; taps are compile-time constants."""

    family: ClassVar[str] = "pattern_loops"


class PatternLoops:
    name, format, params = "pattern_loops", "fkw", PatternLoopsParams

    def candidates(self, vw, group, geom, taps, registers) -> list[KernelParams]:
        """Accumulator vectors per filter, so that group x R accumulators plus the group's weights and one input
        vector fit the register file (16 vectors: AVX2, SSE; 32: AVX-512, NEON)."""
        if registers <= 16:  # measured on Zen 3 (AVX2): R decides the tile waste
            rs = {1: (6, 10), 2: (3, 4, 6)}.get(group, (1, 2, 3))
        else:
            rs = {1: (8, 14), 2: (4, 6, 12)}.get(group, (2, 4, 6))
        return [PatternLoopsParams(r, vw) for r in rs]

    def arrays(self, packed, geom, params):
        return packed.weights, packed.group_ptr, packed.cin_index, packed.reorder, packed.bias

    def _pattern_loop(self, r, q: int, taps: tuple[int, ...]) -> str:
        """One pattern's kernels: each tap's input vectors are loaded once and feed every filter of the unit."""
        R, vw, F = r.k.r, r.k.vw, r.p.group
        plane = r.input_view[0] if r.input_view else r.g.plane
        lines = [f"        for (int k = gp[{q}]; k < gp[{q + 1}]; k++) {{",
                 f"            const float *s = xt + (long)cidx[k] * {plane};",
                 f"            const float *wk = wt + (long)k * {F * r.p.tmax};"]
        for i, tap in enumerate(taps):
            off = r.g.tap_offset(tap)
            ws = " ".join(f"const float w{f} = wk[{f * r.p.tmax + i}];" for f in range(F))
            lines.append(f"            {{ {ws}")
            for j in range(R):
                if F == 1:
                    lines.append(f"              a0_{j} += w0 * ld(s + {off + j * vw});")
                else:
                    fmas = " ".join(f"a{f}_{j} += w{f} * x;" for f in range(F))
                    lines.append(f"              {{ const vf x = ld(s + {off + j * vw}); {fmas} }}")
            lines.append("            }")
        lines.append("        }")
        return "\n".join(lines)

    def render_body(self, r, name: str) -> str:
        p, k = r.p, r.k
        P = len(p.patterns)
        loops = "\n".join(self._pattern_loop(r, q, taps) for q, taps in enumerate(p.patterns))
        F, units = p.group, p.units
        accs = " ".join(f"vf a{f}_{j} = {{0}};" for f in range(F) for j in range(k.r))
        epilogues = "\n".join(f"        {{ const int f = u * {F} + {i};{r.epilogue(f'a{i}_')}\n        }}"
                              for i in range(F))
        src = "xb" if r.direct else f"xp + {r.input_view[1]}" if r.input_view else "xp"
        return r.prep(f"{name}_prep") + f"""
static {r.signature(name)} {{
        {name}_prep(xb, xp);
        const float *xin = {src};
        {r.omp_for("static, 1", compute=True)}
        for (int q = 0; q < {r.ntiles * units}; q++) {{
        const int u = q / {r.ntiles}, t = q - u * {r.ntiles};
        const int32_t *gp = gptr + (long)u * {P};
        const float *xt = xin + (long)t * {r.tile};
        {accs}
{loops}
{epilogues}
        }}{r.join(compute=True)}
}}
"""


register_family(PatternLoops())
