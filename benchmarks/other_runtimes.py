"""Time one ONNX file in DeepSparse or MNN. Runs inside that runtime's own venv (``make setup-deepsparse`` /
``make setup-mnn``): their pins clash with ours, so the benchmarks call this script in a subprocess and read one
JSON line back. Imports neither torch nor tessera.

Usage: ``python other_runtimes.py {deepsparse,mnn} MODEL.onnx INPUT.npy OUTPUT.npy --threads N --rounds R``.
MNN converts the file first with ``--detectSparseSpeedUp`` (its sparse kernels engage only then), through the
wheel's converter core ``_tools.mnnconvert`` (the ``mnnconvert`` wrapper tries to send usage telemetry).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np


def _deepsparse(onnx_path: str, threads: int):
    import deepsparse

    engine = deepsparse.compile_model(onnx_path, batch_size=1, num_cores=threads)
    return lambda x: engine([x])[0]


def _mnn(onnx_path: str, threads: int):
    import _tools
    import MNN

    out = os.path.join(tempfile.mkdtemp(prefix="tessera-mnn-"), "model.mnn")
    _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", onnx_path, "--MNNModel", out,
                       "--bizCode", "tessera", "--detectSparseSpeedUp"])
    if not os.path.exists(out):
        raise SystemExit("MNN conversion failed")
    net = MNN.Interpreter(out)
    session = net.createSession({"numThread": threads})
    inp = net.getSessionInput(session)

    def run(x):
        inp.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
        net.runSession(session)
        o = net.getSessionOutput(session)
        shape = o.getShape()
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
        o.copyToHostTensor(host)
        return np.array(host.getData(), np.float32).reshape(shape)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runtime", choices=["deepsparse", "mnn"])
    ap.add_argument("onnx")
    ap.add_argument("input")
    ap.add_argument("reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=5)
    args = ap.parse_args()
    x = np.ascontiguousarray(np.load(args.input), np.float32)
    ref = np.load(args.reference)
    run = (_deepsparse if args.runtime == "deepsparse" else _mnn)(args.onnx, args.threads)
    y = run(x)
    err = float(np.linalg.norm(y.reshape(ref.shape) - ref) / np.linalg.norm(ref))
    for _ in range(5):
        run(x)
    medians = []
    for _ in range(args.rounds):
        ts = []
        for _ in range(args.per_round):
            t = time.perf_counter()
            run(x)
            ts.append(time.perf_counter() - t)
        medians.append(statistics.median(ts) * 1e3)
    print(json.dumps({"runtime": args.runtime, "ms": statistics.median(medians), "rel_err": err}))


if __name__ == "__main__":
    main()
