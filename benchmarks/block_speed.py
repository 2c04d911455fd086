"""Speed of the block-sparse kernel on 1x1 convs (issue: UBP), one process, ratios of medians.

ResNet-50 and MobileNetV2 (224x224 input) 1x1 layer shapes, batch 1, fp32, 1 and 2 threads. From one dense random
weight per layer: unaligned blocks (BED) and aligned blocks, N = 4, 80% sparsity; each compiled with tessera
(tuned: the tile width is measured, and the layer would stay dense if that were faster). Contenders: torch dense,
ONNX Runtime dense, tessera aligned, tessera unaligned, timed in interleaved rounds (see common.interleaved).
Usage: python benchmarks/block_speed.py [--quick]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import tessera
from common import geomean, interleaved, machine, ort_session, save_json, stamp, write_section
from tessera.report import markdown_table
from tessera.sparsity.blocks import select_blocks

QUICK = "--quick" in sys.argv
ROUNDS, PER_ROUND = (3, 5) if QUICK else (9, 15)
RESNET50 = [(64, 256, 56), (256, 64, 56), (128, 512, 28), (512, 128, 28), (256, 1024, 14), (1024, 256, 14),
            (512, 2048, 7), (2048, 512, 7)]  # (Cin, Cout, H=W)
MOBILENETV2 = [(96, 24, 56), (24, 144, 56), (144, 32, 28), (192, 64, 14), (384, 96, 14), (576, 160, 7),
               (960, 320, 7)]
KEEP, N = 0.2, 4


def conv_with(w: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False).eval()
    with torch.no_grad():
        conv.weight.copy_(w[:, :, None, None])
    return conv


def run(threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for net, shapes in (("ResNet-50", RESNET50), ("MobileNetV2", MOBILENETV2)):
        for cin, cout, hw in shapes[:2] if QUICK else shapes:
            g = torch.Generator().manual_seed(cin * 7 + cout)
            w = torch.randn(cout, cin, generator=g) * 0.05
            x = torch.randn(1, cin, hw, hw, generator=g)
            k = round(KEEP * cout * cin / N)
            dense = conv_with(w)
            fns = {"torch dense": lambda m=dense, x=x: m(x), "ort dense": ort_session(dense, x, threads)}
            plans = {}
            for method in ("aligned", "bed"):
                sparse = conv_with(w * select_blocks(w.square(), N, k, method).mask)
                cm = tessera.compile(sparse, x, threads=threads, network=False)
                plans[method] = cm.plans[0]
                fns[f"tessera {method}"] = lambda cm=cm, x=x: cm(x)
            with torch.no_grad():
                t = interleaved(fns, ROUNDS, PER_ROUND)
            rows.append({"net": net, "layer": f"{cin}->{cout} @{hw}x{hw}", "threads": threads, **t,
                         "decisions": {m: (p.kind, p.decision.backend, p.decision.params)
                                       for m, p in plans.items()}})
            print(rows[-1], flush=True)
    return rows


def report(rows: list[dict], info: dict) -> str:
    table, summary = [], []
    for r in rows:
        d, u, a, o = r["torch dense"], r["tessera bed"], r["tessera aligned"], r["ort dense"]
        table.append([r["net"], r["layer"], r["threads"], f"{d:.3f}", f"{o:.3f}", f"{a:.3f}", f"{u:.3f}",
                      f"{d / u:.2f}x", f"{o / u:.2f}x", f"{u / a:.3f}",
                      "/".join(f"{m}:{k}-{b}" for m, (k, b, _) in r["decisions"].items())])
    for threads in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == threads]
        summary.append([threads, len(rs), f"{geomean([r['torch dense'] / r['tessera bed'] for r in rs]):.2f}x",
                        f"{min(r['torch dense'] / r['tessera bed'] for r in rs):.2f}x",
                        f"{geomean([r['torch dense'] / r['tessera aligned'] for r in rs]):.2f}x",
                        f"{geomean([r['ort dense'] / r['tessera bed'] for r in rs]):.2f}x",
                        f"{geomean([r['tessera bed'] / r['tessera aligned'] for r in rs]):.3f}",
                        f"{max(r['tessera bed'] / r['tessera aligned'] for r in rs):.3f}"])
    return "\n".join([
        "## Block-sparse 1x1 kernel speed (issue: UBP)", "",
        f"Measured {stamp(info)}. Batch 1, fp32, N = {N}, {100 * (1 - KEEP):.0f}% sparsity, random weights; "
        f"median of {ROUNDS} interleaved rounds x {PER_ROUND} calls. Targets: unaligned >= 3x faster than torch "
        "dense (limit 5x); unaligned latency <= 1.10 x aligned.", "",
        markdown_table(["threads", "layers", "dense/unaligned geomean", "min", "dense/aligned geomean",
                        "ORT/unaligned geomean", "unaligned/aligned geomean", "max"], summary), "",
        markdown_table(["net", "layer", "threads", "torch ms", "ORT ms", "aligned ms", "unaligned ms",
                        "vs torch", "vs ORT", "unaligned/aligned", "kind-backend"], table),
    ])


def main() -> None:
    info = machine()
    rows = run(1) + run(2)
    save_json("block_speed", {"machine": info, "rows": rows})
    md = report(rows, info)
    if not QUICK:
        write_section("block_speed", md)
    print(md)


if __name__ == "__main__":
    main()
