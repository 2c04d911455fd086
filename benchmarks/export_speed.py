"""The exported C library against the in-process compiled model it came from (issue 15): same weights, same
input, the export built host-native (-O3) as a shared library and called through ctypes, interleaved with the
in-process model in one process; plus the export's own ``tessera_main`` timing, its parity with torch, and how long
the ResNet-50 export takes to build with plain ``cc -O2``. Usage:
``python benchmarks/export_speed.py [--threads 1] [--models a,b] [--size 224]``.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tessera.runtime  # noqa: E402
from common import interleaved, machine, save_json, stamp, write_section  # noqa: E402
from real_networks import STEMS, pruned  # noqa: E402
from tessera.compiler.compile import network_kernel_params  # noqa: E402
from tessera.compiler.export import build_export, export_network, run_export  # noqa: E402
from tessera.compiler.target import get_target  # noqa: E402
from tessera.text import markdown_table  # noqa: E402


def _ctypes_call(directory: Path, x: torch.Tensor, out_floats: int):
    lib = ctypes.CDLL(str(directory / "libtessera_model.so"))
    lib.tessera_run.restype = ctypes.c_int
    lib.tessera_run.argtypes = [ctypes.c_void_p] * 3
    y = torch.empty(out_floats)
    ws = torch.empty((int(open(directory / "model.h").read().split("TESSERA_WORKSPACE_BYTES ")[1].split()[0])
                      + 3) // 4)  # torch's allocations are 64-byte aligned
    args = (x.data_ptr(), y.data_ptr(), ws.data_ptr())
    assert lib.tessera_run(*args) == 0
    return (lambda keep=(ws, x): lib.tessera_run(*args)), y  # the workspace must outlive every call


def build_seconds(directory: Path, cmd_for) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd_for(directory), capture_output=True, text=True, shell=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-500:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1")
    ap.add_argument("--models", default=",".join(STEMS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    info = machine()
    host = get_target("host")
    rows, build = [], {}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for name in args.models.split(","):
            m = pruned(name)
            x = torch.randn(1, 3, args.size, args.size)
            cm = tessera.runtime.compile(m, x, threads=threads, network=True)
            params = network_kernel_params(cm.plans, cm.network_params)
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp) / "lib"
                ex = export_network(cm.graph, params, d, host, threads)
                command = build_export(d, host, goals=("all", "shared"))
                call, y_ctypes = _ctypes_call(d, x, int(torch.tensor(ex.output_shape).prod()))
                with torch.no_grad():
                    ref = m(x)
                    y_file, main_ms = run_export(command, x, ex.output_shape, repeats=50)
                    times = interleaved({"in-process": lambda cm=cm, x=x: cm(x), "export": call}, rounds=args.rounds)
                err = max(float((y - ref.reshape(y.shape)).norm() / ref.norm())
                          for y in (y_file[0], y_ctypes.reshape(ex.output_shape)))
                if name == "tv_resnet50" and threads == int(args.threads.split(",")[0]):
                    build["resnet50 host flags, make OPT=-O2 (model.o + weights.o + main)"] = build_seconds(
                        d, lambda p: f"make -C {p} clean >/dev/null && make -C {p} OPT=-O2 -j1 >/dev/null")
                    build["resnet50 plain cc -O2 -c model.c weights.c (no ISA flags, no OpenMP)"] = build_seconds(
                        d, lambda p: f"cd {p} && cc -O2 -std=gnu11 -c model.c weights.c")
            rows.append({"model": name, "threads": threads, "in_process_ms": times["in-process"],
                         "export_ms": times["export"], "export_main_ms": main_ms, "rel_err": err,
                         "parameters": ex.parameters, "weights_bytes": ex.weights_bytes,
                         "workspace_bytes": ex.workspace_bytes})
            print(rows[-1], flush=True)
    save_json("export_speed", {"machine": info, "size": args.size, "rows": rows, "build_seconds": build})
    body = [[r["model"], r["threads"], f"{r['in_process_ms']:.2f}", f"{r['export_ms']:.2f}",
             f"{r['export_main_ms']:.2f}", f"{r['export_ms'] / r['in_process_ms']:.3f}", f"{r['rel_err']:.1e}",
             f"{r['weights_bytes'] / 1e6:.2f} / {r['workspace_bytes'] / 1e6:.2f}"] for r in rows]
    builds = "\n".join(f"- {k}: **{v:.1f} s**" for k, v in build.items())
    write_section("export_speed", f"""## Exported C library vs the in-process model (issue 15)

{stamp(info)}. {args.size}x{args.size}, batch 1, fp32, ms; models pruned as in the real-networks section, compiled
and tuned here, exported for the host target ({host.name}, `{' '.join(host.cflags)}`), built `-O3` by the export's
own Makefile. "export (ctypes)" is the export's `libtessera_model.so` called through ctypes, interleaved with the
in-process model in one process (median of per-round medians); "tessera_main" is the standalone binary's own median
of 50 calls in its own process (file in, file out). "rel err" is the export's output vs torch.

{markdown_table(["model", "threads", "in-process", "export (ctypes)", "tessera_main", "export / in-process",
                 "rel err", "weights / workspace MB"], body)}

Build time on this machine (wall, 1 job):
{builds}
""")


if __name__ == "__main__":
    main()
