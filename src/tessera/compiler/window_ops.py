"""C loops of the whole-network function for the layers that slide a window per channel: depthwise and grouped
convs, max and average pooling (any kernel, stride, padding, ceil_mode), adaptive average pooling.

They are memory-bound, so the shape is one pass: one (channel, output row) per work item, the row accumulated on
the stack, the epilogue (bias, residual, activation) fused into the store. Padding is never materialised: for each
tap the range of output columns whose input column is inside the image is a compile-time constant, so the inner
loop has no branch and gcc vectorises it (stride 1: contiguous loads). Buffers are the network's ``_Buf`` objects
(``at`` / ``put`` / ``expr``), whatever their layout.
"""

from __future__ import annotations

from tessera.compiler.activations import c_scalar, c_vector


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


def depthwise_conv(x, y, res, weight: str, bias: str, shape: tuple[int, ...], stride, padding, act: str,
                   vw: int) -> str:
    """A depthwise conv (one input channel per output channel), stride 1 or 2, in vectors: per (channel, output
    row), the output columns whose every tap reads inside the image run in chunks of up to 4 vectors held in
    registers across all taps (stride 2: two loads and a shuffle keep the even lanes); the few border columns
    and the remainder run the clipped scalar loop of :func:`grouped_conv`."""
    cout, _, kh, kw = shape
    _, ho, wo = y.shape
    h, w = x.shape[1:]
    (sh, sw), (ph, pw) = tuple(stride), tuple(padding)
    ranges = [_cols(wo, w, sw, pw, v) for v in range(kw)]
    jl, jr = max(r[0] for r in ranges), min(r[1] for r in ranges)
    nvec = max(0, jr - jl) // vw
    jt = jl + nvec * vw  # scalar columns: [0, jl) and [jt, wo)
    evens = "(vi){" + ", ".join(str(2 * i) for i in range(vw)) + "}"

    def load(v, off):
        ptr = f"&{x.at('c', 'iy', f'(jc + {off}) * {sw} + {v - pw}')}"
        if sw == 1:
            return f"ld({ptr})"
        return f"__builtin_shuffle(ld({ptr}), ld({ptr} + {vw}), {evens})"

    def chunk(nv):
        accs = " ".join(f"vf a{r} = z + bc;" for r in range(nv))
        rows = []
        for u in range(kh):
            taps = " ".join(f"{{ const float wv = wt[{u * kw + v}]; " +
                            " ".join(f"a{r} += wv * {load(v, r * vw)};" for r in range(nv)) + " }"
                            for v in range(kw))
            rows.append(f"{{ const int iy = i * {sh} - {ph} + {u}; if (iy >= 0 && iy < {h}) {{ {taps} }} }}")
        shift = y.layout.copy_shift if y.padded and y.layout else 0
        stores = []
        for r in range(nv):
            e = f"a{r}" + (f" + ld(&{res.at('c', 'i', f'jc + {r * vw}')})" if res is not None else "")
            dst = f"&{y.at('c', 'i', f'jc + {r * vw}')}"
            stores.append(f"st({dst}, {c_vector(act, e)});" + (f" st({dst} + {shift}, ld({dst}));" if shift else ""))
        return f"{{ {accs}\n            " + "\n            ".join(rows) + "\n            " + " ".join(stores) + " }"

    big = min(4, nvec) if nvec else 0
    vec = ""
    if nvec:
        vec = f"""
        int jc = {jl};
        for (; jc + {big * vw} <= {jt}; jc += {big * vw}) {chunk(big)}"""
        if nvec % big:
            vec += f"""
        for (; jc + {vw} <= {jt}; jc += {vw}) {chunk(1)}"""

    def scalar(lo, hi):
        if hi <= lo:
            return ""
        def body(u, v, ptr, j0, j1):
            a, b = max(j0, lo), min(j1, hi)
            if b <= a:
                return ""
            return (f"{{ const float wv = wt[{u * kw + v}]; const float *xr = {ptr}; "
                    f"for (int j = {a}; j < {b}; j++) acc[j - {lo}] += wv * xr[j * {sw}]; }}")
        taps = _taps(x, "c", (kh, kw), wo, stride, padding, body)
        res_add = f" v += {res.at('c', 'i', 'j')};" if res is not None else ""
        store = f"float v = acc[j - {lo}];{res_add}{c_scalar(act)} {y.put('c', 'i', 'j', 'v')}"
        return f"""
        {{ float acc[{hi - lo}];
        for (int j = 0; j < {hi - lo}; j++) acc[j] = bc;
        {taps}
        for (int j = {lo}; j < {hi}; j++) {{ {store} }} }}"""
    return f"""
    for (int q = 0; q < {cout * ho}; q++) {{
        const int c = q / {ho}, i = q - c * {ho};
        const float bc = {bias};
        const float *wt = {weight} + (long)c * {kh * kw};
        const vf z = {{0}}; (void)z;{vec}{scalar(0, jl if nvec else wo)}{scalar(jt, wo) if nvec else ""}
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


def max_pool(x, y, kernel, stride, padding) -> str:
    return _pool(x, y, kernel, stride, padding, "-INFINITY", "m[j] = q > m[j] || q != q ? q : m[j];", "m[j]")


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


def adaptive_avg_pool(x, y) -> str:
    c, h, w = x.shape
    _, ho, wo = y.shape
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

