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
from pathlib import Path

import torch

from tessera.compiler.block_kernel import BlockLibrary
from tessera.compiler.geometry import ConvGeometry
from tessera.compiler.kernel import LayerLibrary
from tessera.compiler.kernels import default_registers, params_to_dict
from tessera.compiler.kernels.channel_blocked import ChannelBlockedParams, blocked_tiles
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


def median_ms(fn, repeats: int, warmup_s: float = 0.005, budget_s: float = 0.25, pause: bool = True) -> float:
    """Median of ``repeats`` calls after a short pause (another runtime's spinning threads go idle first; not
    needed when the previous measurement ran on the same thread pool) and ``warmup_s`` of untimed calls (caches
    and the core's clock back up)."""
    if pause:
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


def _record(layer: LayerLibrary | BlockLibrary, threads: int, batch: int) -> Path:
    return cache_dir() / f"{_key(layer, threads, batch)}.json"


def cached_decision(layer: LayerLibrary | BlockLibrary, threads: int, batch: int,
                    path: Path | None = None) -> Decision | None:
    """The decision :func:`tune_layer` measured before for ``layer`` (None: none, or an unreadable record)."""
    path = path or _record(layer, threads, batch)
    if path.exists():
        try:
            return Decision(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    return None


def tune_layer(layer: LayerLibrary | BlockLibrary, torch_fn, x: torch.Tensor, res: torch.Tensor | None, threads: int,
               repeats: int = 15, use_cache: bool = True) -> Decision:
    """Time torch and each candidate on ``x`` (and ``res``); return the decision (cached on disk)."""
    path = _record(layer, threads, x.shape[0])
    cached = cached_decision(layer, threads, x.shape[0], path) if use_cache else None
    if cached is not None:
        return cached
    with torch.no_grad():
        t_torch = median_ms(lambda: torch_fn(x, res), repeats)
        best = (float("inf"), -1)
        for i in range(len(layer.candidates)):
            k = layer.kernel(i)
            best = min(best, (median_ms(lambda k=k: k(x, res, threads), repeats, pause=i == 0), i))
    t_sparse, idx = best
    if t_sparse < t_torch:
        d = Decision("sparse", f"{t_torch / t_sparse:.2f}x faster than dense", idx,
                     params_to_dict(layer.candidates[idx]), t_torch, t_sparse)
    else:
        d = Decision("dense", f"sparse kernel slower ({t_sparse:.3f} ms vs {t_torch:.3f} ms)", -1, None,
                     t_torch, t_sparse)
    if use_cache:
        atomic_write_bytes(path, json.dumps(d.to_json()).encode())
    return d


def row_band_params(geom: ConvGeometry, threads: int, vw: int, registers: int | None = None) -> ChannelBlockedParams:
    """Parameters that split a layer across threads by rows only: a channel-blocked tile whose count is a
    multiple of ``threads``, every filter of a tile on the thread that owns it, one channel block. Inside the
    whole-network function each thread then reads mostly rows it wrote itself in the previous layer. Per layer
    (tuned alone, input in the caller's cache) this is rarely the fastest; for a whole small network it can be
    (Xeon, resnet20 at 2 threads: 0.27 ms vs 0.45 ms with each layer's own best tile)."""
    nvec = geom.vectors(vw)
    rmax = max(blocked_tiles(registers or default_registers(vw)))
    k = 1
    while -(-nvec // (threads * k)) > rmax:
        k += 1
    return ChannelBlockedParams(-(-nvec // (threads * k)), vw, geom.cin)
