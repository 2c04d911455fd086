"""ImageNet-class networks as users have them (torchvision/timm-style builders of tessera.models.imagenet), at
1x3x224x224, pruned as issue 14 says (3x3: 8 patterns + 1/3.6 kernels; 1x1 and Linear: 1x4 unaligned blocks keep
0.2; stem, depthwise and squeeze-excitation dense), vs torch and ONNX Runtime dense on the same weights, in one
process, interleaved. Usage: ``python benchmarks/real_networks.py [--threads 1,2] [--models a,b] [--no-tune]``.

DeepSparse and MNN are measured by their own harness when set up; this script says when they are not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tessera.runtime  # noqa: E402
from common import interleaved, machine, ort_session, save_json, stamp, write_section  # noqa: E402
from tessera.models import create_model  # noqa: E402
from tessera.text import markdown_table  # noqa: E402

STEMS = {"tv_resnet18": "conv1", "tv_resnet50": "conv1", "tv_mobilenet_v2": r"features\.0\.0",
         "timm_efficientnet_b0": "conv_stem"}


def pruned(name: str) -> torch.nn.Module:
    from test_real_networks import prune_like_the_issue, randomize_bn

    torch.manual_seed(0)
    return prune_like_the_issue(randomize_bn(create_model(name)), STEMS[name])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(STEMS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results/real_networks.json")
    args = ap.parse_args()
    if args.render_only:
        import json

        saved = json.loads((Path(__file__).resolve().parent / "results" / "real_networks.json").read_text())
        return render(saved["machine"], saved["rows"], saved.get("size", 224), saved.get("tuned", True))
    info = machine()
    rows = []
    for name in args.models.split(","):
        m = pruned(name)
        x = torch.randn(1, 3, args.size, args.size)
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            cm = tessera.runtime.compile(m, x, threads=threads, tune=not args.no_tune)
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            tessera.runtime.compile(m, x, threads=threads, tune=not args.no_tune)
            cached_s = time.perf_counter() - t0
            with torch.no_grad():
                ref = m(x)
                err = float((cm(x) - ref).norm() / ref.norm())
                t = interleaved({"torch": lambda m=m, x=x: m(x), "ort": ort_session(m, x, threads),
                                 "tessera": lambda cm=cm, x=x: cm(x)}, args.rounds, 5)
            torch_nodes = cm.torch_nodes()
            rows.append({"model": name, "threads": threads, "rel_err": err, "compile_s": compile_s,
                         "cached_s": cached_s, "execution": cm.network_reason[:160],
                         "torch_nodes": len(torch_nodes), **t})
            print(rows[-1], flush=True)
    save_json("real_networks", {"machine": info, "rows": rows, "size": args.size, "tuned": not args.no_tune})
    render(info, rows, args.size, not args.no_tune)


def render(info: dict, rows: list[dict], size: int, tuned: bool) -> None:
    body = [[r["model"], r["threads"], f"{r['torch']:.2f}", f"{r['ort']:.2f}", f"{r['tessera']:.2f}",
             f"{r['ort'] / r['tessera']:.2f}x", f"{r['torch'] / r['tessera']:.2f}x", f"{r['rel_err']:.1e}",
             f"{r['compile_s']:.1f} / {r['cached_s']:.1f}", r["torch_nodes"], r["execution"]] for r in rows]
    write_section("real_networks", f"""## Real networks at {size}x{size} (issue 14)

{stamp(info)}. Batch 1, fp32, ms (median of per-round medians, contenders interleaved in one process). Pruned:
3x3 8 patterns + 1/3.6 kernels, 1x1/Linear 1x4 blocks keep 0.2, stem/depthwise/SE dense; random weights,
randomised BN statistics; tuned: {tuned}. "execution" is the compiler's own choice and its measurement (whole
network in one native call, or layer by layer when that measured faster). DeepSparse 1.8 and MNN were not set up
in this run (no figures for them here).

{markdown_table(["model", "threads", "torch", "ORT", "tessera", "vs ORT", "vs torch", "rel err",
                 "compile s cold / cached", "torch nodes", "execution"], body)}
""")


if __name__ == "__main__":
    main()
