"""Native segments: a graph with nodes the network function cannot emit still runs its other nodes natively.

One surveying walk of the network renderer names every node that must run in torch (and why); the graph is then
split (torch.fx ``split_module``) into runs of consecutive native nodes and torch islands, in the original node
order, so the partitions form a chain. Each native run becomes one :class:`~tessera.compiler.network.NetworkKernel`
with as many inputs and outputs as the run has edges to the rest; activations cross to torch only at those edges.
A run without a conv, linear or pooling layer is not worth a hand-over and stays in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.passes.split_module import split_module

from tessera.compiler.geometry import KernelParams
from tessera.compiler.graph import FusedConv, capture_inputs
from tessera.compiler.network import NetworkKernel
from tessera.compiler.network_plan import Unsupported, plan_network
from tessera.compiler.target import Target

_WORK = (FusedConv, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


class NativeSegment(nn.Module):
    """A native run of the graph: the network kernel for the compiled shapes, the torch submodule otherwise."""

    def __init__(self, kernel: NetworkKernel, fallback: fx.GraphModule, in_shapes: list[tuple[int, ...]]):
        super().__init__()
        self.kernel, self.fallback, self.in_shapes = kernel, fallback, in_shapes

    def forward(self, *args):
        if len(args) == len(self.in_shapes) and all(
                isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.is_cpu and tuple(a.shape[1:]) == s
                for a, s in zip(args, self.in_shapes, strict=True)):
            return self.kernel(*args)
        return self.fallback(*args)


@dataclass
class Partitioned:
    graph: fx.GraphModule | None  # the split graph (NativeSegment and torch submodules); None: nothing native
    segments: list[str]  # names of the native segment submodules
    torch_nodes: dict[str, str]  # node name -> why it runs in torch


def survey(gm: fx.GraphModule, params_for: dict[str, KernelParams], target: Target) -> dict[fx.Node, str]:
    """Every node the network function cannot emit, with the reason (one walk, no compiler call)."""
    return plan_network(gm, params_for, target, survey=True).torch_nodes


def _is_work(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _WORK)
    return node.op in ("call_function", "call_method") and "pool" in str(getattr(node.target, "__name__", ""))


def partition(gm: fx.GraphModule, example: torch.Tensor, params_for: dict[str, KernelParams],
              target: Target, threads: int, log=None) -> Partitioned:
    """The graph as native segments and torch islands (``graph`` None when no segment would be native)."""
    torch_nodes = {n.name: why for n, why in survey(gm, params_for, target).items()}
    for _ in range(len(gm.graph.nodes) + 1):  # each round moves at least one more node to torch
        split, native = _split(gm, torch_nodes)
        if not native:
            break
        inputs = capture_inputs(split, native, example)
        plans, moved = {}, False
        for name, sub in native.items():
            with torch.no_grad():
                ShapeProp(sub).propagate(*inputs[name])
            if not any(_is_work(sub, n) for n in sub.graph.nodes):
                for n in sub.graph.nodes:
                    if n.op not in ("placeholder", "output"):
                        torch_nodes[n.name] = "a native segment without a conv, linear or pooling layer " \
                                              "is not worth the hand-over"
                moved = True
                continue
            try:
                plans[name] = plan_network(sub, params_for, target, threads)
            except Unsupported as exc:
                bad = exc.node
                if bad is None or bad.op in ("placeholder", "output") or bad.name in torch_nodes:
                    bad = next(n for n in sub.graph.nodes if n.op not in ("placeholder", "output")
                               and n.name not in torch_nodes)
                torch_nodes[bad.name] = str(exc)
                moved = True
        if moved:
            continue
        names = []
        for name, r in plans.items():
            kernel = NetworkKernel(r, threads)
            shapes = [tuple(t.shape[1:]) for t in inputs[name]]
            setattr(split, name, NativeSegment(kernel, native[name], shapes))
            names.append(name)
        if log:
            log(f"{len(names)} native segments; in torch: {', '.join(torch_nodes) or 'nothing'}")
        return Partitioned(split, names, torch_nodes)
    return Partitioned(None, [], torch_nodes)


def _split(gm: fx.GraphModule, torch_nodes: dict[str, str]) -> tuple[fx.GraphModule, dict[str, fx.GraphModule]]:
    """Consecutive runs of native / torch nodes in graph order, each its own partition."""
    part: dict[str, int] = {}
    current, native_ids, kind = -1, set(), None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        k = node.name not in torch_nodes
        if node.op == "get_attr":
            k = False  # constants go with torch islands (split_module copies them where used)
        if k != kind:
            current, kind = current + 1, k
            if k:
                native_ids.add(current)
        part[node.name] = current
    split = split_module(gm, gm, lambda n: part[n.name], keep_original_order=True, keep_original_node_name=True)
    native = {f"submod_{i}": getattr(split, f"submod_{i}") for i in sorted(native_ids)
              if hasattr(split, f"submod_{i}")}
    return split, native
