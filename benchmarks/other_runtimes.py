"""Time one ONNX file in DeepSparse or MNN. Runs inside that runtime's own venv (``make setup-deepsparse`` /
``make setup-mnn``): their pins clash with ours, so the benchmarks call this script in a subprocess and read one
JSON line back. Imports neither torch nor tessera.

Usage: ``python other_runtimes.py {deepsparse,mnn} MODEL.onnx INPUT.npy OUTPUT.npy --threads N --rounds R``.
MNN converts the file first with ``--detectSparseSpeedUp`` (its sparse kernels engage only then), through the
wheel's converter core ``_tools.mnnconvert`` (the ``mnnconvert`` wrapper tries to send usage telemetry);
``mnn-blocks`` also declares the sparse weights as 1x4 output-channel blocks (a ``--compressionParamsFile``).
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


def _block_params(onnx_path: str, path: str) -> bool:
    """MNN's compression pipeline file declaring every sparse conv/linear weight as 1x4 output-channel blocks
    (SIMD_OC, what mnncompress's pruner writes); False when onnx or mnncompress is missing."""
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # its _pb2 predates protobuf 4
    try:
        import onnx
        from mnncompress.common import MNN_compression_pb2 as pb
        from onnx import numpy_helper
    except ImportError:
        return False
    pipe = pb.Pipeline()
    pipe.version = "0.0.0"
    algo = pipe.algo.add()
    algo.type = pb.CompressionAlgo.CompressionType.PRUNE
    algo.prune_params.type = pb.PruneParams.SIMD_OC
    params = algo.prune_params.simd_oc_pruner_params
    for t in onnx.load(onnx_path).graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim in (2, 4) and (a == 0).mean() > 0.3:
            params.weight_tensor_names.append(t.name)
            params.prune_ratios.append(float((a == 0).mean()))
            params.oc_blocks.append(4)
    with open(path, "wb") as f:
        f.write(pipe.SerializeToString())
    return True


def _mnn(onnx_path: str, threads: int, blocks: bool = False):
    import _tools
    import MNN

    d = tempfile.mkdtemp(prefix="tessera-mnn-")
    out = os.path.join(d, "model.mnn")
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", onnx_path, "--MNNModel", out, "--bizCode", "tessera",
            "--detectSparseSpeedUp"]
    if blocks:
        if not _block_params(onnx_path, os.path.join(d, "blocks.bin")):
            raise SystemExit("mnn-blocks needs onnx and mnncompress in the MNN venv")
        argv += ["--compressionParamsFile", os.path.join(d, "blocks.bin")]
    _tools.mnnconvert(argv)
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
    ap.add_argument("runtime", choices=["deepsparse", "mnn", "mnn-blocks"])
    ap.add_argument("onnx")
    ap.add_argument("input")
    ap.add_argument("reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=5)
    args = ap.parse_args()
    x = np.ascontiguousarray(np.load(args.input), np.float32)
    ref = np.load(args.reference)
    if args.runtime == "deepsparse":
        run = _deepsparse(args.onnx, args.threads)
    else:
        run = _mnn(args.onnx, args.threads, blocks=args.runtime == "mnn-blocks")
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
