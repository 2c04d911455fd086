"""C loops of the whole-network function for the layers that slide a window per channel: depthwise and grouped
convs, max and average pooling (any kernel, stride, padding, ceil_mode), adaptive average pooling.

They are memory-bound, so the shape is one pass: one (channel, output row) per work item (a depthwise conv: a whole
channel where it can, see :func:`depthwise_conv`), the row accumulated on the stack or in registers, the epilogue
(bias, residual, activation) fused into the store. Padding is never materialised: for each tap the range of output
columns whose input column is inside the image is a compile-time constant, so the inner loop has no branch and gcc
vectorises it (stride 1: contiguous loads). Buffers are the network plan's
``Buffer`` objects (``at`` / ``put`` / ``expr``), whatever their layout.
"""

from __future__ import annotations

from tessera.compiler.activations import c_scalar, c_vector
from tessera.compiler.codegen import even_load


def _cols(wo: int, w: int, stride: int, pad: int, v: int) -> tuple[int, int]:
    """Output columns j with 0 <= j*stride - pad + v < w."""
    j0 = max(0, -(-(pad - v) // stride))
    j1 = min(wo, (w - 1 + pad - v) // stride + 1)
    return j0, max(j0, j1)


def _taps(x, chan: str, kernel, wo: int, stride, padding, body) -> str:
    """The statements of every tap of one output row of input buffer ``x`` (channel expression ``chan``): rows
    outside the image skipped at run time, columns clipped to constants. ``body(u, v, ptr, j0, j1)`` is the loop
    for one tap, ``ptr`` the C pointer to input column ``v - pad`` of row ``iy``."""
    (kh, kw), s, p = kernel, tuple(stride), tuple(padding)
    h, w = x.shape[1:]
    out = []
    for u in range(kh):
        inner = []
        for v in range(kw):
            j0, j1 = _cols(wo, w, s[1], p[1], v)
            if j1 > j0:
                inner.append(body(u, v, f"&{x.at(chan, 'iy', f'{v} - {p[1]}')}", j0, j1))
        if inner:
            out.append(f"{{ const int iy = i * {s[0]} - {p[0]} + {u}; if (iy >= 0 && iy < {h}) {{\n            "
                       + "\n            ".join(inner) + " } }")
    return "\n        ".join(out)


def grouped_conv(x, y, res, weight: str, bias: str, shape: tuple[int, ...], groups: int, stride, padding,
                 act: str) -> str:
    """A grouped (depthwise when groups == channels) conv: ``shape`` = (cout, cin/groups, kh, kw)."""
    cout, cing, kh, kw = shape
    _, ho, wo = y.shape
    sw = tuple(stride)[1]

    def body(u, v, ptr, j0, j1):
        return (f"{{ const float wv = wt[{u * kw + v}]; const float *xr = {ptr}; "
                f"for (int j = {j0}; j < {j1}; j++) acc[j] += wv * xr[j * {sw}]; }}")
    taps = _taps(x, "ci", (kh, kw), wo, stride, padding, body)
    res_add = f" v += {res.at('c', 'i', 'j')};" if res is not None else ""
    return f"""
    for (int q = 0; q < {cout * ho}; q++) {{
        const int c = q / {ho}, i = q - c * {ho};
        float acc[{wo}];
        const float bc = {bias};
        for (int j = 0; j < {wo}; j++) acc[j] = bc;
        for (int k = 0; k < {cing}; k++) {{
        const int ci = c / {cout // groups} * {cing} + k;
        const float *wt = {weight} + ((long)c * {cing} + k) * {kh * kw};
        {taps}
        }}
        for (int j = 0; j < {wo}; j++) {{ float v = acc[j];{res_add}{c_scalar(act)} {y.put('c', 'i', 'j', 'v')} }}
    }}"""


def _row_load(x, col: str, v: int, sw: int, pw: int, vw: int) -> str:
    """A vector of ``vw`` output columns' inputs for tap column ``v`` (``col``: the C expression of the first
    output column; row ``iy``): one load, or at stride 2 two loads and a shuffle that keeps the even lanes."""
    ptr = f"&{x.at('c', 'iy', f'({col}) * {sw} + {v - pw}')}"
    return f"ld({ptr})" if sw == 1 else even_load(ptr, vw)


def _partial_store(y, jc: str, wo: int, vw: int, value: str) -> str:
    """The row's last, partial chunk: the lanes past the row belong to the next row's work item."""
    return (f"{{ float t_[{vw}] __attribute__((aligned(64))); st(t_, {value}); for (int j = {jc}; j < {wo}; j++) "
            f"{{ const float v = t_[j - {jc}]; {y.put('c', 'i', 'j', 'v')} }} }}")


def _chunk_plan(wo: int, vw: int, masks) -> tuple[list[int], list[int], int, int]:
    """Chunk starts of an output row and the run of whole, unmasked chunks in its middle (``lo`` .. ``hi``) that
    one loop can cover; the chunks before and after it are rendered one by one."""
    starts = list(range(0, wo, vw))
    plain = [jc for jc in starts if jc + vw <= wo and not masks(jc)]
    lo, hi = (plain[0], plain[-1] + vw) if plain else (wo, wo)
    if plain and len(plain) != (hi - lo) // vw:  # masked chunks in the middle (never for these geometries)
        plain, lo, hi = [], wo, wo
    return starts, plain, lo, hi


def _rows_overrun(y, ho: int, wo: int, vw: int) -> bool:
    """Whether a row's last vector may be stored whole, its lanes past the row zeroed: in a layout without a
    second copy they fall on zero columns, on later rows of the same plane (which the same work item stores after
    it) or, past the last row, on the plane's bottom zero rows and the next plane's top (never its pixels)."""
    lay = y.layout if y.padded else None
    if lay is None or lay.copy or lay.pitch < wo:
        return False
    return (ho - 1) * lay.pitch + -(-wo // vw) * vw <= lay.plane


def depthwise_conv(x, y, res, weight: str, bias: str, shape: tuple[int, ...], stride, padding, act: str,
                   vw: int, chunks: int = 4, channel: str | None = None) -> str:
    """A depthwise conv (one input channel per output channel), stride 1 or 2, in vectors: per (channel, output
    row), chunks of ``vw`` output columns held in registers across all taps (up to ``chunks`` at once in the
    middle of the row; stride 2: two loads and a shuffle keep the even lanes). A chunk at a border ANDs each tap's
    load with a constant lane mask where the tap reads outside the image (pad columns the layout keeps zero need
    none); lanes past the row's end are computed, and where the output layout allows (:func:`_rows_overrun`)
    stored as zeros with the row — then a work item is a whole channel, its rows in order and its weights in
    registers — else left unstored. ``channel``: the C expression of one channel, whose rows alone the loop runs
    (``x`` then holds that channel's plane)."""
    cout, _, kh, kw = shape
    _, ho, wo = y.shape
    h, w = x.shape[1:]
    (sh, sw), (ph, pw) = tuple(stride), tuple(padding)
    zero_cols = {-1, w} if x.padded and x.layout is not None and not x.layout.tight else set()
    shift = y.layout.copy_shift if y.padded and y.layout else 0
    overrun = _rows_overrun(y, ho, wo, vw)
    held = overrun and kh * kw <= 9  # the weights as vectors in registers for the channel's rows

    def lane_ok(j: int, v: int) -> bool:
        col = j * sw - pw + v
        return j >= wo or 0 <= col < w or col in zero_cols

    def masks(jc: int) -> dict[int, list[int]]:
        """tap column -> lane mask, for the taps of chunk ``jc`` that read outside the image."""
        out = {}
        for v in range(kw):
            lanes = [-1 if jc + t < wo and 0 <= (jc + t) * sw - pw + v < w else 0 for t in range(vw)]
            if not all(lane_ok(jc + t, v) for t in range(vw)):
                out[v] = lanes
        return out

    def chunk(jc: str, nv: int, mk: dict[int, list[int]], tail: int, m: int = 1) -> str:
        """``tail``: 0 for whole chunks, else the chunk's lanes inside the row. ``m``: output rows i .. i+m-1 at
        once (stride 1), each input row loaded once for all of them."""
        # kernel rows into `sums` partial sums per vector: a chain of kh * kw dependent FMAs is latency-bound (5x5
        # on 14x14 rows: one vector a row); about 8 independent accumulators keep the FMA units busy
        sums = max(1, min(kh, 8 // (nv * m)))

        def acc(q: int, r: int, u: int) -> str:
            return f"a{q}_{r}" + (f"_{u % sums}" if u % sums else "")
        accs = " ".join(f"vf a{q}_{r} = z + bc;" + "".join(f" vf a{q}_{r}_{p} = z;" for p in range(1, sums))
                        for q in range(m) for r in range(nv))
        consts = "".join(f" const vi m{v} = (vi){{{', '.join(map(str, lanes))}}};" for v, lanes in mk.items())
        rows = []
        for t in range(kh + m - 1):
            taps = []
            for v in range(kw):
                loads = []
                for r in range(nv):
                    xv = _row_load(x, f"{jc} + {r * vw}", v, sw, pw, vw)
                    loads.append(f"const vf x{r} = {f'(vf)((vi)({xv}) & m{v})' if v in mk else xv};")
                fmas = []
                for q in range(m):
                    u = t - q
                    if 0 <= u < kh:
                        wv = f"w{u * kw + v}" if held else f"wt[{u * kw + v}]"
                        fmas += [f"{acc(q, r, u)} += {wv} * x{r};" for r in range(nv)]
                taps.append(f"{{ {' '.join(loads)} {' '.join(fmas)} }}")
            rows.append(f"{{ const int iy = i * {sh} - {ph} + {t}; if (iy >= 0 && iy < {h}) {{ {' '.join(taps)} }} }}")
        if sums > 1:
            rows.append(" ".join(f"a{q}_{r} += {' + '.join(f'a{q}_{r}_{p}' for p in range(1, sums))};"
                                 for q in range(m) for r in range(nv)))
        stores = []
        for q in range(m):
            row = f"i + {q}" if q else "i"
            for r in range(nv):
                e = f"a{q}_{r}" + (f" + ld(&{res.at('c', row, f'{jc} + {r * vw}')})" if res is not None else "")
                if not tail:
                    dst = f"&{y.at('c', row, f'{jc} + {r * vw}')}"
                    copy = f" st({dst} + {shift}, ld({dst}));" if shift else ""
                    stores.append(f"st({dst}, {c_vector(act, e)});{copy}")
                elif overrun:
                    lanes = ", ".join("-1" if lane < tail else "0" for lane in range(vw))
                    stores.append(f"st(&{y.at('c', row, jc)}, (vf)((vi)({c_vector(act, e)}) & (vi){{{lanes}}}));")
                else:
                    stores.append(_partial_store(y, jc, wo, vw, c_vector(act, e)))
        return (f"{{{consts} {accs}\n            " + "\n            ".join(rows) + "\n            "
                + " ".join(stores) + " }")

    starts, plain, lo, hi = _chunk_plan(wo, vw, masks)

    def tail(jc: int) -> int:
        return min(vw, wo - jc) % vw

    def row_body(m: int) -> str:
        """The chunks of ``m`` output rows from row ``i``; with two rows the row's last, partial chunk first (its
        zeroed lanes past row i fall on row i+1, whose chunks are stored after it)."""
        parts = [chunk(str(jc), 1, masks(jc), tail(jc), m) for jc in starts if jc < lo]
        if plain:
            big = max(1, min(chunks // m, len(plain)))
            parts.append(f"for (int jc = {lo}; jc + {big * vw} <= {hi}; jc += {big * vw}) "
                         f"{chunk('jc', big, {}, 0, m)}")
            if len(plain) % big:
                first = lo + len(plain) // big * big * vw
                parts.append(f"for (int jc = {first}; jc < {hi}; jc += {vw}) {chunk('jc', 1, {}, 0, m)}")
        parts += [chunk(str(jc), 1, masks(jc), tail(jc), m) for jc in starts if jc >= hi]
        if m > 1 and tail(starts[-1]):  # the partial chunk is the row's last start, never in the plain run
            parts.insert(0, parts.pop())
        return "\n        ".join(parts)
    weights = "".join(f" const vf w{k} = z + wt[{k}];" for k in range(kh * kw)) if held else ""
    setup = f"""const float bc = {bias};
        const float *wt = {weight} + (long)c * {kh * kw};
        const vf z = {{0}};{weights}"""
    if overrun:  # a channel per work item, its rows in order (a row's overrun is stored before the next row)
        head = f"{{\n        const int c = {channel};" if channel is not None else \
            f"for (int c = 0; c < {cout}; c++) {{"
        pairs = sh == 1 and ho > 1
        rows = (f"int i = 0;\n        for (; i + 1 < {ho}; i += 2) {{\n        {row_body(2)}\n        }}"
                + (f"\n        {{\n        {row_body(1)}\n        }}" if ho % 2 else "")) if pairs else \
            f"for (int i = 0; i < {ho}; i++) {{\n        {row_body(1)}\n        }}"
        return f"""
    {head}
        {setup}
        {rows}
    }}"""
    head = f"for (int i = 0; i < {ho}; i++) {{\n        const int c = {channel};" if channel is not None else \
        f"for (int q = 0; q < {cout * ho}; q++) {{\n        const int c = q / {ho}, i = q - c * {ho};"
    return f"""
    {head}
        {setup}
        {row_body(1)}
    }}"""


def _pool(x, y, kernel, stride, padding, init: str, tap: str, out: str) -> str:
    """A pooling window per (channel, output row): ``m[j]`` starts at ``init``, ``tap`` folds ``q`` into it (C
    with ``q`` and ``m[j]``), ``out`` is the stored value."""
    c = x.shape[0]
    _, ho, wo = y.shape
    sw = tuple(stride)[1]

    def body(u, v, ptr, j0, j1):
        return (f"{{ const float *xr = {ptr}; for (int j = {j0}; j < {j1}; j++) {{ const float q = xr[j * {sw}]; "
                f"{tap} }} }}")
    taps = _taps(x, "c", kernel, wo, stride, padding, body)
    return f"""
    for (int q = 0; q < {c * ho}; q++) {{
        const int c = q / {ho}, i = q - c * {ho};
        float m[{wo}];
        for (int j = 0; j < {wo}; j++) m[j] = {init};
        {taps}
        for (int j = 0; j < {wo}; j++) {{ const float v = {out}; {y.put('c', 'i', 'j', 'v')} }}
    }}"""


def max_pool(x, y, kernel, stride, padding, vw: int = 0) -> str:
    """Max pooling, NaN propagating as torch's does. With ``vw`` (stride 1 or 2, an input layout whose origin
    leaves room for loads at -padding): chunks of ``vw`` output columns in registers across the window's taps,
    as :func:`depthwise_conv` runs them, lanes that read outside the image masked to -inf (a zero border would
    win over negative pixels); else one scalar loop per tap that gcc vectorises where the stride allows."""
    (sh, sw), (ph, pw) = tuple(stride), tuple(padding)
    if not vw or sw not in (1, 2) or x.layout is None or x.layout.origin < pw:
        return _pool(x, y, kernel, stride, padding, "-INFINITY", "m[j] = q > m[j] || q != q ? q : m[j];", "m[j]")
    kh, kw = kernel
    c = x.shape[0]
    h, w = x.shape[1:]
    _, ho, wo = y.shape

    def chunk(jc: str, masks: dict[int, list[int]], whole: bool) -> str:
        consts = "".join(f" const vi k{v} = (vi){{{', '.join(map(str, lanes))}}};" for v, lanes in masks.items())
        rows = []
        for u in range(kh):
            taps = []
            for v in range(kw):
                xv = _row_load(x, jc, v, sw, pw, vw)
                q = f"(vf)(((vi){xv} & k{v}) | ((vi)ninf & ~k{v}))" if v in masks else xv
                taps.append(f"{{ const vf q = {q}; const vi t = (q > a) | (q != q); a = (vf)(((vi)q & t) | "
                            f"((vi)a & ~t)); }}")
            rows.append(f"{{ const int iy = i * {sh} - {ph} + {u}; if (iy >= 0 && iy < {h}) {{ {' '.join(taps)} }} }}")
        if whole:
            dst = f"&{y.at('c', 'i', jc)}"
            shift = y.layout.copy_shift if y.padded and y.layout else 0
            store = f"st({dst}, a);" + (f" st({dst} + {shift}, a);" if shift else "")
        else:
            store = _partial_store(y, jc, wo, vw, "a")
        return f"{{{consts} vf a = ninf;\n            " + "\n            ".join(rows) + f"\n            {store} }}"

    def masks(jc: int) -> dict[int, list[int]]:
        out = {}
        for v in range(kw):
            lanes = [-1 if jc + t >= wo or 0 <= (jc + t) * sw - pw + v < w else 0 for t in range(vw)]
            if not all(lanes):
                out[v] = lanes
        return out

    starts, plain, lo, hi = _chunk_plan(wo, vw, masks)
    parts = [chunk(str(jc), masks(jc), jc + vw <= wo) for jc in starts if jc < lo]
    if plain:
        parts.append(f"for (int jc = {lo}; jc < {hi}; jc += {vw}) {chunk('jc', {}, True)}")
    parts += [chunk(str(jc), masks(jc), jc + vw <= wo) for jc in starts if jc >= hi]
    body = "\n        ".join(parts)
    return f"""
    for (int q = 0; q < {c * ho}; q++) {{
        const int c = q / {ho}, i = q - c * {ho};
        const vf ninf = (vf){{0}} - INFINITY;
        {body}
    }}"""


def avg_divisors(h: int, w: int, ho: int, wo: int, kernel, stride, padding, count_include_pad: bool,
                 divisor_override: int | None) -> list[float]:
    """1 / the divisor torch uses at each output position (row-major ho x wo)."""
    out = []
    for i in range(ho):
        for j in range(wo):
            if divisor_override:
                out.append(1.0 / divisor_override)
                continue
            y0, x0 = i * stride[0] - padding[0], j * stride[1] - padding[1]
            y1, x1 = min(y0 + kernel[0], h + padding[0]), min(x0 + kernel[1], w + padding[1])
            if count_include_pad:
                n = (y1 - y0) * (x1 - x0)
            else:
                n = (min(y1, h) - max(y0, 0)) * (min(x1, w) - max(x0, 0))
            out.append(1.0 / max(n, 1))
    return out


def avg_pool(x, y, kernel, stride, padding, inv_div: str) -> str:
    """Window sums times a per-position 1/divisor table (``inv_div``, ho*wo floats: see :func:`avg_divisors`)."""
    return _pool(x, y, kernel, stride, padding, "0.f", "m[j] += q;", f"m[j] * {inv_div}[i * {y.shape[2]} + j]")


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _plane_sum(x, vw: int) -> str:
    """C statements leaving in ``s`` the sum of channel ``c``'s pixels: the rows of a whole-network buffer run
    contiguously from pixel (0, 0) (the padded layout's pad column between rows is zero), summed in vectors
    with the last one masked to the span (the caller checked the rows are at most one zero column apart)."""
    _, h, w = x.shape
    n = h * (x.layout.pitch if x.padded and x.layout is not None else w)
    full, tail = divmod(n, vw)
    big = full // 4 * 4
    mask = "(vi){" + ", ".join("-1" if t < tail else "0" for t in range(vw)) + "}"
    tail_add = f" a0 += (vf)((vi)ld(p + {full * vw}) & {mask});" if tail else ""
    return (f"const float *p = &{x.at('c', '0', '0')}; vf a0 = {{0}}, a1 = {{0}}, a2 = {{0}}, a3 = {{0}};\n"
            f"        for (int j = 0; j < {big * vw}; j += {4 * vw}) {{ a0 += ld(p + j); a1 += ld(p + j + {vw}); "
            f"a2 += ld(p + j + {2 * vw}); a3 += ld(p + j + {3 * vw}); }}\n"
            f"        for (int j = {big * vw}; j < {full * vw}; j += {vw}) a0 += ld(p + j);{tail_add}\n"
            f"        const vf a = (a0 + a1) + (a2 + a3); float s = 0.f; for (int l = 0; l < {vw}; l++) s += a[l];")


def adaptive_avg_pool(x, y, vw: int = 0) -> str:
    """Adaptive average pooling; to 1x1 (a global mean) with ``vw``: one vector pass over the channel's rows."""
    c, h, w = x.shape
    _, ho, wo = y.shape
    if vw and (ho, wo) == (1, 1) and (not x.padded or x.layout is None or x.layout.pitch in (w, w + 1)):
        return f"""
    for (int c = 0; c < {c}; c++) {{
        {_plane_sum(x, vw)}
        const float v = s * {1.0 / (h * w)!r}f; {y.put('c', '0', '0', 'v')}
    }}"""
    rows, cols = adaptive_bins(h, ho), adaptive_bins(w, wo)
    stmts = []
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(cols):
            n = (y1 - y0) * (x1 - x0)
            stmts.append(f"{{ float s = 0.f; for (int a = {y0}; a < {y1}; a++) for (int b = {x0}; b < {x1}; b++) "
                         f"s += {x.at('c', 'a', 'b')}; const float v = s * {1.0 / n!r}f; "
                         f"{y.put('c', str(i), str(j), 'v')} }}")
    body = "\n        ".join(stmts)
    return f"""
    for (int c = 0; c < {c}; c++) {{
        {body}
    }}"""


def pool_geometry(kernel, stride, padding) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Normalise pooling arguments (ints or pairs; stride None or [] means the kernel)."""
    def pair(v):
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))
    k = pair(kernel)
    s = k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else pair(stride)
    return k, s, pair(padding)


def pointwise_planes(src: str, ldx: int, dst: str, pitch: int, vals: str, cols: str, group_ptr: str, bias: str,
                     mask: str, span: int, act: str, vw: int, group: str, planes: int, unroll: int) -> str:
    """Channels ``group`` * ``planes`` ... + ``planes`` - 1 of a sparse 1x1 conv into ``planes`` planes at
    ``dst`` (``pitch`` floats apart), over ``span`` floats (whole ``unroll`` vectors): the bias, plus for every
    input any of them keeps (``group_ptr``, ``cols``) its plane (``src`` + col * ``ldx``) times each channel's weight
    (``vals``, ``planes`` a kept input; 0 where a channel lacks it), the activation, and the int32 lane ``mask`` (0
    where a float of the layout is not a pixel: it stays zero). One input load feeds ``planes`` multiply-adds."""
    accs = " ".join(f"vf a{c}_{u} = z + bias_[{c}];" for c in range(planes) for u in range(unroll))
    loads = " ".join(f"const vf x{u} = ld(s + {u * vw});" for u in range(unroll))
    fmas = " ".join(f"{{ const float wv = w_[{c}]; " + " ".join(f"a{c}_{u} += wv * x{u};" for u in range(unroll))
                    + " }" for c in range(planes))
    stores = " ".join(f"st({dst} + {c * pitch} + p + {u * vw}, (vf)((vi)({c_vector(act, f'a{c}_{u}')}) & m{u}));"
                      for c in range(planes) for u in range(unroll))
    masks = " ".join(f"const vi m{u} = *(const vi *)({mask} + p + {u * vw});" for u in range(unroll))
    return f"""{{ const int32_t k0 = {group_ptr}[{group}], k1 = {group_ptr}[{group} + 1];
        const float *bias_ = {bias} + (long){group} * {planes};
        const vf z = {{0}};
        for (long p = 0; p < {span}; p += {unroll * vw}) {{
            {accs}
            for (int32_t k = k0; k < k1; k++) {{
                const float *s = {src} + (long){cols}[k] * {ldx} + p; const float *w_ = {vals} + (long)k * {planes};
                {loads}
                {fmas}
            }}
            {masks}
            {stores}
        }} }}"""
