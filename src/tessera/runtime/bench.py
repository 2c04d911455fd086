"""Timing a compiled model against torch (and ONNX Runtime) as a user would: same input, interleaved rounds in one
process, medians — a drift of a noisy machine hits every contender alike."""

from __future__ import annotations

import io
import statistics
import time
import warnings

import torch
from torch import nn

from tessera.compiler.tune import warm_up


def onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    """The model as an ONNX file (opset 17, TorchScript exporter), for every runtime that reads one."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17)
    return buf.getvalue()


def ort_call(model: nn.Module, x: torch.Tensor, threads: int, onnx: bytes | None = None):
    """A call of ONNX Runtime (dense, all graph optimisations) on ``x``; ``onnx``: the model already exported
    (:func:`onnx_bytes`). None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx or onnx_bytes(model, x), so, providers=["CPUExecutionProvider"])
    name, xn = sess.get_inputs()[0].name, x.numpy()
    return lambda: sess.run(None, {name: xn})


def compare(model: nn.Module, compiled, x: torch.Tensor, threads: int, onnx: bool = True, rounds: int = 20,
            progress=None) -> dict[str, float]:
    """Milliseconds per call of torch, tessera (and ONNX Runtime) on ``x``: the median over ``rounds``
    interleaved rounds of 10 calls each, after warm-up. ``progress(done, total)`` is told after every round."""
    torch.set_num_threads(threads)
    model.eval()
    fns = {"torch": lambda: model(x), "tessera": lambda: compiled(x)}
    if onnx:
        call = ort_call(model, x, threads)
        if call is not None:
            fns["onnxruntime"] = call
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(5):
                fn()
        for i in range(rounds):
            for k, fn in fns.items():
                time.sleep(0.03)  # let the previous runtime's spinning threads go idle
                warm_up(fn, 0.01)  # then this one's threads, caches and the core's clock back up
                t0 = time.perf_counter()
                for _ in range(10):
                    fn()
                times[k].append((time.perf_counter() - t0) / 10)
            if progress:
                progress(i + 1, rounds)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}
