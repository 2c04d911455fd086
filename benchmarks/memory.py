"""Peak memory (RSS) of compiling and of running the real networks, against torch dense, and of the exported C
library's standalone binary (issue 17). Each figure comes from a fresh process (``ru_maxrss`` is a process's peak),
so one step's allocations never hide another's. Usage: ``python benchmarks/memory.py [--models a,b] [--size 224]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, save_json, stamp, write_section  # noqa: E402
from real_networks import STEMS  # noqa: E402
from tessera.text import markdown_table  # noqa: E402

STEP = r"""
import resource, sys, torch
sys.path.insert(0, {bench!r})
from real_networks import pruned
import tessera
step, name, size, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = pruned(name)
x = torch.randn(1, 3, size, size)
if step == "torch":
    with torch.no_grad():
        for _ in range(20):
            m(x)
elif step == "compile":
    cm = tessera.compile(m, x, threads=1, network=True)
    cm.save(work + "/m.tsr")
    cm.export(work + "/lib")
    x.numpy().tofile(work + "/in.bin")
elif step == "tessera":
    cm = tessera.load(work + "/m.tsr", model=m, threads=1)
    for _ in range(20):
        cm(x)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_mb(step: str, name: str, size: int, work: str) -> tuple[float, float]:
    code = STEP.format(bench=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", code, step, name, str(size), work], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-800:])
    base, peak = (int(v) for v in out.stdout.split()[-2:])
    return base / 1024, peak / 1024  # kB -> MB


def _binary_peak_mb(work: str) -> float:
    """Peak RSS of the exported binary: read by a fresh Python process whose only child it is."""
    d = Path(work) / "lib"
    subprocess.run(["make", "-s", "-C", str(d)], check=True, capture_output=True)
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, str(d / "tessera_main"), str(Path(work) / "in.bin"),
                          str(Path(work) / "out.bin"), "20"], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(STEMS))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    info = machine()
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as work:
            base, torch_peak = _peak_mb("torch", name, args.size, work)
            _, compile_peak = _peak_mb("compile", name, args.size, work)
            _, tessera_peak = _peak_mb("tessera", name, args.size, work)
            binary = _binary_peak_mb(work)
        rows.append({"model": name, "python_torch_import_mb": base, "torch_dense_mb": torch_peak,
                     "tessera_compile_mb": compile_peak, "tessera_inference_mb": tessera_peak,
                     "exported_binary_mb": binary})
        print(json.dumps(rows[-1]), flush=True)
    save_json("memory", {"machine": info, "size": args.size, "rows": rows})
    body = [[r["model"], f"{r['python_torch_import_mb']:.0f}", f"{r['torch_dense_mb']:.0f}",
             f"{r['tessera_compile_mb']:.0f}", f"{r['tessera_inference_mb']:.0f}", f"{r['exported_binary_mb']:.1f}"]
            for r in rows]
    write_section("memory", f"""## Peak memory (issue 17)

{stamp(info)}. Peak RSS in MB of one fresh process per step, {args.size}x{args.size}, batch 1, 1 thread, the pruned
models of the real-networks section. "python + torch" is the process after importing torch and tessera, before
the model exists (every Python column includes it); "torch dense" builds the model and runs 20 inferences;
"tessera compile" traces, packs, builds, tunes (kernel cache warm or cold as it is), saves the artifact and exports
the C library; "tessera inference" loads the artifact (kernels from the cache) and runs 20 inferences; "exported
binary" is the standalone `tessera_main` of the export (no Python, no torch) running 20 inferences.

{markdown_table(["model", "python + torch", "torch dense", "tessera compile", "tessera inference",
                 "exported binary"], body)}
""")


if __name__ == "__main__":
    main()
