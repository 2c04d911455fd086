"""Wall time of `tessera prune` on 1 process vs 2 torchrun ranks (gloo) on this machine, same recipe and global
batch: ADMM (8 patterns + 1/3.6 kernels) for one epoch and one epoch of masked retraining of vgg6 on
Fashion-MNIST from the committed dense baseline. Also says whether the ranks' result matches the single process's
(masks, accuracy). Usage: ``python benchmarks/distributed.py [--epochs 1]``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, save_json, stamp, write_section  # noqa: E402
from tessera.io import load_tensors  # noqa: E402
from tessera.text import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def recipe(out: Path, epochs: int, batch: int) -> dict:
    train = {"epochs": epochs, "batch_size": batch, "lr": 0.01, "schedule": "cosine"}
    return {"name": "ddp-bench", "data": {"name": "fashion_mnist"}, "model": {"name": "vgg6", "args": {"width": 32}},
            "baseline": {"checkpoint": str(ROOT / "checkpoints" / "vgg6-fashion_mnist.safetensors")},
            "pruning": {"algorithm": "admm",
                        "defaults": {"scheme": "pattern_connectivity", "num_patterns": 8, "keep": 0.2778},
                        "targets": [{"op": "Conv2d", "kernel": 3, "exclude": [r"features\.0"]}],
                        "admm": {"train": train}, "retrain": train},
            "output": str(out)}


def run(tmp: Path, tag: str, ranks: int, threads: int, epochs: int, batch: int) -> dict:
    out = tmp / tag
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(recipe(out, epochs, batch)))
    cmd = [sys.executable, "-m", "tessera.cli", "prune", str(path), "--quiet"]
    if ranks > 1:
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(ranks),
               "-m", "tessera.cli", "prune", str(path), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    _, meta = load_tensors(out / "model.safetensors")
    print(tag, f"{seconds:.1f} s", meta["accuracy"], flush=True)
    return {"config": tag, "ranks": ranks, "threads_per_rank": threads, "seconds": seconds,
            "accuracy": meta["accuracy"], "out": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [run(tmp, "1 process, 2 threads", 1, 2, args.epochs, args.batch),
                run(tmp, "1 process, 1 thread", 1, 1, args.epochs, args.batch),
                run(tmp, "2 ranks x 1 thread", 2, 1, args.epochs, args.batch)]
        ref = load_tensors(Path(rows[1]["out"]) / "model.safetensors")[0]
        for r in rows:
            got = load_tensors(Path(r["out"]) / "model.safetensors")[0]
            r["masks_equal_to_1_process_1_thread"] = all(torch.equal(ref[k] == 0, got[k] == 0) for k in ref)
            del r["out"]
    save_json("distributed", {"machine": info, "rows": rows, "epochs": args.epochs, "batch": args.batch})
    body = [[r["config"], f"{r['seconds']:.1f}", f"{rows[0]['seconds'] / r['seconds']:.2f}x", f"{r['accuracy']:.2f}",
             "yes" if r["masks_equal_to_1_process_1_thread"] else "no"] for r in rows]
    write_section("distributed", f"""## Pruning on 1 process vs 2 torchrun ranks (issue 17)

{stamp(info)}. `tessera prune` wall time (process start to model written, data loading and evaluation included):
vgg6 (width 32) on Fashion-MNIST from the committed baseline, ADMM (8 patterns + 1/3.6 kernels) {args.epochs}
epoch(s) + masked retraining {args.epochs} epoch(s), global batch {args.batch}; the 2 ranks use gloo on this
machine's {os.cpu_count()} cores, one thread each.

{markdown_table(["configuration", "seconds", "speed vs 1 process x 2 threads", "accuracy %",
                 "masks = 1 process x 1 thread"], body)}
""")


if __name__ == "__main__":
    main()
