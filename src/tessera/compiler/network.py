"""The whole-network function, built and loaded: plan (:mod:`~tessera.compiler.network_plan`) -> emit
(:mod:`~tessera.compiler.network_emit`) -> build (the toolchain's cache) -> run (ctypes, below).

Per-layer kernels pay Python, allocation and an OpenMP fork/join per layer — on small CIFAR-size models that
overhead is as large as the sparse compute itself, and between layers torch's and our thread pools fight for the
cores. The network function is one native call per batch with one parallel region.
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch import fx

from tessera.compiler.geometry import KernelParams
from tessera.compiler.network_emit import emit_network
from tessera.compiler.network_plan import NetworkPlan, Unsupported, plan_network
from tessera.compiler.target import Target
from tessera.compiler.toolchain import compile_cached, load_library

_P = ctypes.c_void_p


class NetworkKernel:
    """A graph (the whole model, or one native segment of it) as one native call; buffers are per image, so any
    batch size runs. Takes and returns as many tensors as the graph has inputs and outputs."""

    def __init__(self, plan: NetworkPlan, threads: int, source: str | None = None):
        self.plan, self.target, self.threads = plan, plan.target, threads
        self.source = source if source is not None else emit_network(plan)
        self.barriers_removed = len(plan.barrier_free)
        self.path = compile_cached(self.source, plan.target, parallel=True)
        self.fn = load_library(str(self.path)).net_forward
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int, _P, _P, _P, _P, _P, ctypes.c_int]
        self.out_shapes = [tuple(s) for s in plan.out_shapes]
        self.in_floats = plan.in_floats
        self.single = len(plan.in_floats) == 1 and len(self.out_shapes) == 1
        self.tight_buffers, self.prep_copies, self.spin_barrier = plan.tight_buffers, plan.prep_copies, plan.spin
        self._bufs = [torch.zeros(b.floats) for b in plan.buffers]  # zero borders, never written non-zero
        self._scratch = [torch.zeros(n) for n in plan.scratch]
        self._P = (_P * max(1, len(plan.params)))(*[t.data_ptr() for t in plan.params])
        self._B = (_P * max(1, len(self._bufs)))(*[t.data_ptr() for t in self._bufs])
        self._S = (_P * max(1, len(self._scratch)))(*[t.data_ptr() if t.numel() else 0 for t in self._scratch])
        self._X = (_P * len(plan.in_floats))()
        self._Y = (_P * len(self.out_shapes))()
        self._lock = threading.Lock()  # buffers are shared: one call at a time

    def __call__(self, *xs: torch.Tensor):
        if self.single:  # the whole model: one tensor in, one out (microseconds count at batch 1)
            x = xs[0].contiguous()
            y = torch.empty(x.shape[0], *self.out_shapes[0])
            if x.shape[0]:
                with self._lock:
                    self._X[0], self._Y[0] = x.data_ptr(), y.data_ptr()
                    self.fn(x.shape[0], self._X, self._Y, self._B, self._S, self._P, self.threads)
            return y
        xs = [x.contiguous() for x in xs]  # named: the copies must live until the call returns
        n = xs[0].shape[0]
        ys = [torch.empty(n, *s) for s in self.out_shapes]
        if n:
            with self._lock:
                for k, x in enumerate(xs):
                    self._X[k] = x.data_ptr()
                for k, y in enumerate(ys):
                    self._Y[k] = y.data_ptr()
                self.fn(n, self._X, self._Y, self._B, self._S, self._P, self.threads)
        return ys[0] if len(ys) == 1 else tuple(ys)


def build_network(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target,
                  threads: int) -> tuple[NetworkKernel | None, str]:
    """The network kernel, or None and the reason the graph has to run layer by layer."""
    try:
        return NetworkKernel(plan_network(gm, params_for, target, threads), threads), \
            "whole network in one native call"
    except Unsupported as exc:
        return None, f"layer-by-layer: {exc} is not supported natively"
