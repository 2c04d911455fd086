"""ImageNet-class networks as users have them (torchvision/timm-style builders of tessera.models.imagenet), at
1x3x224x224, pruned as issue 14 says (3x3: 8 patterns + 1/3.6 kernels; 1x1 and Linear: 1x4 unaligned blocks keep
0.2; stem, depthwise and squeeze-excitation dense), vs torch and ONNX Runtime dense on the same weights, in one
process, interleaved. Usage: ``python benchmarks/real_networks.py [--threads 1,2] [--models a,b] [--no-tune]``.

DeepSparse and MNN are measured by their own harness when set up; this script says when they are not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tessera.runtime  # noqa: E402
from common import interleaved, machine, onnx_bytes, ort_session, save_json, stamp, write_section  # noqa: E402
from tessera.models import create_model  # noqa: E402
from tessera.models.batchnorm import randomize_bn_stats  # noqa: E402
from tessera.pruning.presets import prune_for_deployment  # noqa: E402
from tessera.text import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OTHERS = {"deepsparse": ROOT / ".venv-deepsparse" / "bin" / "python", "mnn": ROOT / ".venv-mnn" / "bin" / "python",
          "mnn-blocks": ROOT / ".venv-mnn" / "bin" / "python"}  # MNN's two sparse conversions: the best counts
STEMS = {"tv_resnet18": "conv1", "tv_resnet50": "conv1", "tv_mobilenet_v2": r"features\.0\.0",
         "timm_efficientnet_b0": "conv_stem"}


def pruned(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return prune_for_deployment(randomize_bn_stats(create_model(name)), STEMS[name])


def other_runtimes(model_onnx: bytes, x: torch.Tensor, y: torch.Tensor, threads: int,
                   rounds: int) -> dict[str, float | str]:
    """DeepSparse and MNN on the ONNX file ORT ran, each in its own venv: ms (output checked against torch's
    ``y``), or why not."""
    out: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as d:
        onnx, xin, ref = Path(d) / "model.onnx", Path(d) / "x.npy", Path(d) / "ref.npy"
        onnx.write_bytes(model_onnx)
        np.save(xin, x.numpy())
        np.save(ref, y.numpy())
        for name, py in OTHERS.items():
            if not py.exists():
                out[name] = f"not set up (make setup-{name.split('-')[0]})"
                continue
            run = subprocess.run([str(py), str(Path(__file__).with_name("other_runtimes.py")), name, str(onnx),
                                  str(xin), str(ref), "--threads", str(threads), "--rounds", str(rounds)],
                                 capture_output=True, text=True)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
            if run.returncode or not lines:
                out[name] = f"failed: {(run.stderr or run.stdout).strip().splitlines()[-1:]}"
                continue
            r = json.loads(lines[-1])
            out[name] = r["ms"] if r["rel_err"] < 1e-3 else f"wrong output (rel err {r['rel_err']:.1e})"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(STEMS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--warm-cache", action="store_true", help="keep the user's kernel cache (cold compile not cold)")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results/real_networks.json")
    args = ap.parse_args()
    if args.render_only:
        import json

        saved = json.loads((Path(__file__).resolve().parent / "results" / "real_networks.json").read_text())
        return render(saved["machine"], saved["rows"], saved.get("size", 224), saved.get("tuned", True))
    if not args.warm_cache:  # "cold" means cold: kernels built and layers tuned from nothing
        os.environ["TESSERA_CACHE"] = tempfile.mkdtemp(prefix="tessera-bench-cache-")
    info = machine()
    rows = []
    for name in args.models.split(","):
        m = pruned(name)
        x = torch.randn(1, 3, args.size, args.size)
        model_onnx = onnx_bytes(m, x)  # one file for ORT, DeepSparse and MNN
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
                t = interleaved({"torch": lambda m=m, x=x: m(x), "ort": ort_session(m, x, threads, model_onnx),
                                 "tessera": lambda cm=cm, x=x: cm(x)}, args.rounds, 15)
            others = other_runtimes(model_onnx, x, ref, threads, args.rounds)
            torch_nodes = cm.torch_nodes()
            rows.append({"model": name, "threads": threads, "rel_err": err, "compile_s": compile_s,
                         "cached_s": cached_s, "execution": cm.network_reason[:160],
                         "torch_nodes": len(torch_nodes), **t, **others})
            print(rows[-1], flush=True)
    save_json("real_networks", {"machine": info, "rows": rows, "size": args.size, "tuned": not args.no_tune})
    render(info, rows, args.size, not args.no_tune)


def _ms(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "—"


def render(info: dict, rows: list[dict], size: int, tuned: bool) -> None:
    body = []
    for r in rows:
        best_other = min((r[k] for k in OTHERS if isinstance(r.get(k), float)), default=None)
        mnn = min((r[k] for k in ("mnn", "mnn-blocks") if isinstance(r.get(k), float)), default=None)
        body.append([r["model"], r["threads"], f"{r['torch']:.2f}", f"{r['ort']:.2f}", _ms(r.get("deepsparse")),
                     _ms(mnn), f"{r['tessera']:.2f}", f"{r['ort'] / r['tessera']:.2f}x",
                     f"{best_other / r['tessera']:.2f}x" if best_other else "—", f"{r['rel_err']:.1e}",
                     f"{r['compile_s']:.1f} / {r['cached_s']:.1f}", r["torch_nodes"], r["execution"]])
    missing = sorted({f"{k}: {r[k]}" for r in rows for k in OTHERS if not isinstance(r.get(k), float)})
    note = ("Not measured: " + "; ".join(missing) + ".") if missing else \
        "DeepSparse 1.8.0 and MNN 3.6.1 each ran in its own venv (subprocess, same ONNX file, same input; output " \
        "checked against torch); MNN is the faster of its two sparse conversions (--detectSparseSpeedUp alone, and " \
        "with a --compressionParamsFile declaring 1x4 output-channel blocks)."
    write_section("real_networks", f"""## Real networks at {size}x{size} (issue 14)

{stamp(info)}. Batch 1, fp32, ms (median of per-round medians; torch, ORT and tessera interleaved in one process,
DeepSparse and MNN right after in their own processes). Pruned: 3x3 8 patterns + 1/3.6 kernels, 1x1/Linear 1x4
blocks keep 0.2, stem/depthwise/SE dense; random weights, randomised BN statistics; tuned: {tuned}. "execution"
is the compiler's own choice and its measurement (whole network in one native call, or layer by layer when that
measured faster). "cold" compiles start from an empty kernel cache (build and tune everything), "cached" is the
same compile again. {note}

{markdown_table(["model", "threads", "torch", "ORT", "DeepSparse", "MNN", "tessera", "vs ORT",
                 "vs best of DS/MNN", "rel err", "compile s cold / cached", "torch nodes", "execution"], body)}
""")


if __name__ == "__main__":
    main()
