"""Block selection quality and cost: aligned vs BED vs exact (per-column DP + concave merge) vs the flat DP.

Score matrices: random (uniform^3, heavy-tailed like |w|) and trained layers (w**2 of the committed vgg6 checkpoint
viewed as Cout x Cin*9). Sizes 64..1024, N = 2 and 4, sparsity 50/70/90%. The flat DP (the paper-style reference,
O(M*L*K)) runs only where it finishes in seconds. Writes results/block_selection.json and its RESULTS.md section.
Usage: python benchmarks/block_selection.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from common import machine, save_json, stamp, write_section
from tessera.models import load_model
from tessera.report import markdown_table
from tessera.sparsity.blocks import select_blocks

ROOT = Path(__file__).resolve().parent.parent
QUICK = "--quick" in sys.argv
SIZES = [64, 256] if QUICK else [64, 256, 1024]
SPARSITY = [0.5, 0.7, 0.9]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def matrices():
    g = torch.Generator().manual_seed(0)
    for m in SIZES:
        yield f"random {m}x{m}", torch.rand(m, m, generator=g) ** 3
    model, _ = load_model(ROOT / "checkpoints" / "vgg6-fashion_mnist.safetensors")
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d) and mod.in_channels > 1:
            w = mod.weight.detach()
            yield f"vgg6 {name} {w.shape[0]}x{w.shape[1] * 9}", w.reshape(w.shape[0], -1).square()


def main() -> None:
    info = machine()
    rows = []
    for label, s in matrices():
        for n in (2, 4):
            for sp in SPARSITY:
                k = round((1 - sp) * s.numel() / n)
                opt, t_opt = timed(lambda s=s, n=n, k=k: select_blocks(s, n, k, "optimal"))
                bed, t_bed = timed(lambda s=s, n=n, k=k: select_blocks(s, n, k, "bed"))
                al, t_al = timed(lambda s=s, n=n, k=k: select_blocks(s, n, k, "aligned"))
                t_flat = None
                if s.numel() * k <= 3_000_000:
                    flat, t_flat = timed(lambda s=s, n=n, k=k: select_blocks(s, n, k, "optimal_flat"))
                    assert abs(flat.value - opt.value) <= 1e-6 * max(1.0, opt.value)
                rows.append({"matrix": label, "n": n, "sparsity": sp, "blocks": k,
                             "bed_over_opt": bed.value / opt.value, "aligned_over_opt": al.value / opt.value,
                             "t_opt": t_opt, "t_bed": t_bed, "t_aligned": t_al, "t_flat": t_flat})
                print(rows[-1], flush=True)
    save_json("block_selection", {"machine": info, "rows": rows})
    body = [[r["matrix"], r["n"], f"{r['sparsity']:.0%}", r["blocks"], f"{r['bed_over_opt']:.4f}",
             f"{r['aligned_over_opt']:.4f}", f"{r['t_opt'] * 1e3:.1f}", f"{r['t_bed'] * 1e3:.1f}",
             f"{r['t_aligned'] * 1e3:.1f}", "-" if r["t_flat"] is None else f"{r['t_flat'] * 1e3:.0f}"]
            for r in rows]
    bed = [r["bed_over_opt"] for r in rows]
    al = [r["aligned_over_opt"] for r in rows]
    md = ["## Block selection: quality and cost (issue: unaligned block pruning)", "",
          f"Measured {stamp(info)}. Retained importance relative to the exact optimum; times in ms (torch ops on "
          "the default threads, vectorised over columns). BED = the paper's expansion (greedy N-windows on "
          "remaining importance) followed by an exact division: the best K blocks within N-1 rows of the "
          "expanded runs (per-segment DP + concave merge); the paper's greedy run cutting measured min 0.9896, "
          "mean 0.9965 on this table (commit 1bd0225).", "",
          f"BED / optimal: min {min(bed):.4f}, mean {statistics.mean(bed):.4f}. "
          f"Aligned / optimal: min {min(al):.4f}, mean {statistics.mean(al):.4f}.", "",
          markdown_table(["matrix", "N", "sparsity", "blocks", "BED/opt", "aligned/opt", "optimal ms", "BED ms",
                          "aligned ms", "flat DP ms"], body)]
    write_section("block_selection", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
