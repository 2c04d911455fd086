"""Per-layer choice by measurement: every candidate kernel and torch's dense conv run on the layer's real input;
the fastest wins. A layer where sparse is slower stays dense, and the decision says so. Decisions are cached by
the layer's source hash, thread count and batch size, so a recompile does not re-measure.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from tessera.compiler.block_kernel import BlockLibrary
from tessera.compiler.geometry import (
    ConvGeometry,
    KernelParams,
    channel_block,
    layer_geometry,
    shift_applies,
    tight_rows,
    tight_tile,
)
from tessera.compiler.kernel import LayerLibrary
from tessera.compiler.toolchain import cache_dir, find_compiler, flags
from tessera.io import atomic_write_bytes


@dataclass(frozen=True)
class Decision:
    """What runs a layer and why; times are medians in milliseconds on the example input."""

    backend: str  # "sparse" | "dense"
    reason: str
    index: int = -1
    params: dict | None = None
    torch_ms: float | None = None
    sparse_ms: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def warm_up(fn, seconds: float) -> None:
    """Untimed calls (at least one) for ``seconds``: caches, worker threads and the core's clock back up."""
    fn()
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        fn()


def median_ms(fn, repeats: int, warmup_s: float = 0.005, budget_s: float = 0.25) -> float:
    """Median of ``repeats`` calls after a short pause (another runtime's spinning threads go idle first) and
    ``warmup_s`` of untimed calls (caches and the core's clock back up)."""
    time.sleep(0.005)
    warm_up(fn, warmup_s)
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _key(layer: LayerLibrary | BlockLibrary, threads: int, batch: int) -> str:
    cc = find_compiler() or ""
    h = hashlib.sha256((layer.source + " ".join(flags(cc, layer.target) if cc else ())).encode()).hexdigest()[:32]
    return f"tune-{h}-t{threads}-b{batch}"


def tune_layer(layer: LayerLibrary | BlockLibrary, torch_fn, x: torch.Tensor, res: torch.Tensor | None, threads: int,
               repeats: int = 15, use_cache: bool = True) -> Decision:
    """Time torch and each candidate on ``x`` (and ``res``); return the decision (cached on disk)."""
    path = cache_dir() / f"{_key(layer, threads, x.shape[0])}.json"
    if use_cache and path.exists():
        try:
            return Decision(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    with torch.no_grad():
        t_torch = median_ms(lambda: torch_fn(x, res), repeats)
        best = (float("inf"), -1)
        for i in range(len(layer.candidates)):
            k = layer.kernel(i)
            best = min(best, (median_ms(lambda k=k: k(x, res, threads), repeats), i))
    t_sparse, idx = best
    if t_sparse < t_torch:
        d = Decision("sparse", f"{t_torch / t_sparse:.2f}x faster than dense", idx,
                     asdict(layer.candidates[idx]), t_torch, t_sparse)
    else:
        d = Decision("dense", f"sparse kernel slower ({t_sparse:.3f} ms vs {t_torch:.3f} ms)", -1, None,
                     t_torch, t_sparse)
    if use_cache:
        atomic_write_bytes(path, json.dumps(d.to_json()).encode())
    return d


def fitted_tile(geom: ConvGeometry, vw: int, lo: int = 4, hi: int = 15) -> int:
    """Accumulator vectors per tile (lo..hi) that cover the layer's wide rows at the least cost: tiles x (R + 2),
    padded positions plus a per-tile overhead of about two vectors' work (the tap loop's loads and branches).
    Measured on 512x7² (63 positions): 8 vectors (1 tile of 64) ran 25% faster than 10 (a tile of 80)."""
    n = geom.vectors(vw)
    return min(range(hi, lo - 1, -1), key=lambda r: -(-n // r) * (r + 2))


def blocked_tiles(vw: int) -> tuple[int, ...]:
    """Accumulator vectors per tile of the channel-blocked kernel: measured on Zen 3 (AVX2) and on a Xeon
    (AVX-512, where 28 vectors never won: 0.58x-0.95x of 14 or 20)."""
    return (10, 12, 14) if vw == 8 else (8, 14, 20)


def candidates(vw: int, group: int = 1, geom: ConvGeometry | None = None,
               taps: list[list[int]] | None = None) -> tuple[KernelParams, ...]:
    """Tile widths to try: accumulator vectors per filter, so that group x R accumulators plus the group's
    weights and one input vector fit the register file (16 vectors with AVX2, 32 with AVX-512). With the layer's
    geometry and taps, the channel-blocked kernel joins with three tile widths and the width that covers the
    layer's rows with the least padding (``fitted_tile``), and the dx-shifted kernel where
    it applies (measured on Zen 3: best on 128x28² pattern-only and 256x14² at 12%, slower elsewhere)."""
    if vw == 8:  # measured on Zen 3: the blocked kernel wins on ResNet-18 shapes; R decides the tile waste
        rs = {1: (6, 10), 2: (3, 4, 6)}.get(group, (1, 2, 3))
    else:
        rs = {1: (8, 14), 2: (4, 6, 12)}.get(group, (2, 4, 6))
    blocked = blocked_tiles(vw)
    out = [KernelParams(r, vw) for r in rs]
    if geom is not None and taps is not None:
        # a tile never wider than the image (7x7 with AVX-512: 4 vectors, not 14 or 20 of mostly padding)
        rs_blocked = list(dict.fromkeys(min(r, geom.vectors(vw))
                                        for r in (*blocked, fitted_tile(geom, vw, hi=max(blocked) + 1))))
        blocks = {r: channel_block(geom, taps, r * vw) for r in rs_blocked}
        out += [KernelParams(r, vw, cb) for r, cb in blocks.items()]
        if vw > 8:  # and in one channel block: no partial sums (AVX-512, small images, see shifted below)
            out += [KernelParams(r, vw, geom.cin) for r, cb in blocks.items() if cb < geom.cin]
        if shift_applies(geom, group, vw):
            # AVX2: 4 vectors x 3 sets (+ halo) fill the 16 registers; 2 and 3 never won. AVX-512 (32 registers):
            # 8 vectors a set, and one channel block (no partial sums) beside the L1-sized one — measured on a
            # Xeon (48 KB L1d) 256x14² at 12%: 0.36 ms in one block vs 0.52 ms in L1-sized blocks (R=4: 1.03 ms);
            # 7x7 images run on rows of 8 = half a vector (two input copies, see geometry.shift_copies): 512x7²
            # 0.68 ms vs 0.99 ms on rows padded to 16 and 0.78 ms for the best unaligned kernel
            nvec = layer_geometry(geom, KernelParams(4, vw, 1, True)).vectors(vw)
            rs = [min(r, nvec) for r in ((4,) if vw == 8 else (4, 8))]  # no tile past the image
            if tight_rows(geom, vw):  # tiles of whole rows (see geometry.tight_rows)
                rs = [tight_tile(geom, vw, r) for r in rs]
            for r in dict.fromkeys(rs):
                cb = channel_block(layer_geometry(geom, KernelParams(r, vw, 1, True)), taps, r * vw)
                out += [KernelParams(r, vw, c, True) for c in dict.fromkeys((cb, geom.cin) if vw > 8 else (cb,))]
    return tuple(out)


def row_band_params(geom: ConvGeometry, threads: int, vw: int) -> KernelParams:
    """Parameters that split a layer across threads by rows only: a channel-blocked tile whose count is a
    multiple of ``threads``, every filter of a tile on the thread that owns it, one channel block. Inside the
    whole-network function each thread then reads mostly rows it wrote itself in the previous layer. Per layer
    (tuned alone, input in the caller's cache) this is rarely the fastest; for a whole small network it can be
    (Xeon, resnet20 at 2 threads: 0.27 ms vs 0.45 ms with each layer's own best tile)."""
    nvec = geom.vectors(vw)
    rmax = max(blocked_tiles(vw))
    k = 1
    while -(-nvec // (threads * k)) > rmax:
        k += 1
    return KernelParams(-(-nvec // (threads * k)), vw, geom.cin)
