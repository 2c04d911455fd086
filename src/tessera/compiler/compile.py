"""The compiler driver: model -> traced, fused graph -> per-layer packing, codegen, build, tuning.

Returns the rewritten GraphModule and a layerwise plan; ``tessera.runtime`` wraps them into a CompiledModel.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import fx

from tessera.compiler.block_format import pack_blocks
from tessera.compiler.block_kernel import BlockLibrary
from tessera.compiler.formats import pack_conv
from tessera.compiler.geometry import ConvGeometry, KernelParams
from tessera.compiler.graph import FusedConv, FusedLinear, capture_inputs, conv_layers, fuse, trace
from tessera.compiler.kernel import LayerLibrary
from tessera.compiler.kernels import conv_candidates, params_from_dict, params_to_dict
from tessera.compiler.network import NetworkKernel, build_network
from tessera.compiler.partition import partition
from tessera.compiler.target import Target, runnable_target
from tessera.compiler.toolchain import cache_dir, find_compiler
from tessera.compiler.tune import Decision, cached_decision, median_ms, row_band_params, tune_layer
from tessera.errors import CompileError
from tessera.io import atomic_write_bytes
from tessera.sparsity import analyse_conv


@dataclass
class LayerPlan:
    """One row of the layerwise representation."""

    name: str
    source: str
    weight_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    stride: tuple[int, int]
    padding: tuple[int, int]
    kind: str
    density: float
    patterns: int
    kernels_kept: int
    kernels_total: int
    fused: str
    decision: Decision
    bytes: dict | None = None


def _block_kernel_fits(m: FusedConv, kind: str) -> bool:
    """Block-sparse weights run on the block kernel when it handles the layer: linear or unpadded 1x1 conv;
    other block-sparse convs go through the general FKW path."""
    return kind == "block" and tuple(m.weight.shape[2:]) == (1, 1) and \
        (isinstance(m, FusedLinear) or tuple(m.padding) == (0, 0))


def _unsupported(m: FusedConv, kind: str) -> str | None:
    if isinstance(m, FusedLinear) and kind != "block":
        return "linear layers run in torch unless block-sparse"
    if m.groups != 1:
        return f"groups={m.groups} (sparse kernel handles groups=1)"
    if tuple(m.dilation) != (1, 1):
        return f"dilation={tuple(m.dilation)} (sparse kernel handles dilation 1)"
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return f"padding={m.padding!r} mode={m.padding_mode} (sparse kernel handles numeric zero padding)"
    if m.stride[0] != m.stride[1]:
        return f"stride={tuple(m.stride)} (sparse kernel handles equal strides)"
    if m.in_shape is None:
        return "input shape unknown (layer not reached by the example input)"
    return None


def compile_graph(model: torch.nn.Module, example: torch.Tensor, threads: int | None = None, tune: bool = True,
                  force: str | None = None, decisions: dict[str, dict] | None = None,
                  network: bool | None = None, log=None, network_params: dict[str, dict] | None = None,
                  target: str | Target | None = None) -> Compiled:
    """Trace, fuse, pack, build and tune.

    ``force`` = "sparse"/"dense" skips measurement (tests, debugging); ``decisions`` (layer name -> saved
    Decision dict, from an artifact) are reused instead of measuring again. ``network``: True/False forces the
    whole-network native function on or off; None measures it against the layer-by-layer graph.
    ``network_params`` (layer name -> KernelParams dict, from an artifact) are the whole-network function's
    kernel parameters when they differ from the per-layer decisions.
    """
    if not isinstance(example, torch.Tensor) or example.dtype != torch.float32 or example.dim() != 4:
        raise CompileError("example_inputs must be one float32 NCHW tensor, e.g. torch.randn(1, 3, 32, 32)")
    threads = int(threads or torch.get_num_threads())
    gm = fuse(trace(model, example))
    layers = conv_layers(gm)
    have_cc = find_compiler() is not None
    if not have_cc:
        warnings.warn("tessera: no C compiler found (install gcc or set CC); every layer runs in torch", stacklevel=2)
    target = runnable_target(target)
    vw = target.vector_width
    libs: dict[str, LayerLibrary | BlockLibrary] = {}
    plans: dict[str, LayerPlan] = {}
    for lay in layers:
        m = lay.module
        m.threads = threads
        lo = analyse_conv(m.weight)
        why = _unsupported(m, lo.kind)
        plan = LayerPlan(
            lay.name, lay.source, tuple(m.weight.shape), tuple(m.in_shape or ()), tuple(m.stride),
            tuple(m.padding) if not isinstance(m.padding, str) else (0, 0), lo.kind, lo.density,
            len(lo.library) if lo.library is not None else 0, lo.kernels_kept, lo.kernels_total,
            "+".join(n for n, v in (("conv", True), ("bn", m.folded_bn), ("add", m.residual),
                                    (m.act, m.act != "none")) if v),
            Decision("dense", "dense weights"),
        )
        plans[lay.name] = plan
        if why:
            plan.decision = Decision("dense", f"fallback: {why}")
            continue
        saved_sparse = (decisions or {}).get(lay.name, {}).get("backend") == "sparse"
        if lo.kind == "dense" and force != "sparse" and not saved_sparse:
            continue
        if not have_cc:
            plan.decision = Decision("dense", "fallback: no C compiler")
            continue
        if _block_kernel_fits(m, lo.kind):
            blocks = pack_blocks(m.weight, m.bias, lo)
            m.blocks = blocks  # reused by the whole-network renderer
            plan.bytes = blocks.bytes()
            libs[lay.name] = BlockLibrary(blocks, target, m.act, m.residual, m.stride[0],
                                          isinstance(m, FusedLinear))
            continue
        packed = pack_conv(m.weight, m.bias, lo)
        m.packed = packed  # reused by the whole-network renderer
        plan.bytes = packed.bytes()
        c, _, h, w = m.in_shape
        geom = ConvGeometry(packed.cin, packed.cout, h, w, packed.kh, packed.kw, m.stride[0], m.padding[0],
                            m.padding[1])
        libs[lay.name] = LayerLibrary(packed, geom, conv_candidates(vw, packed.group, geom, list(packed.patterns),
                                                                      target.registers),
                                      m.act, m.residual, target)
    build_all(list(libs.values()))
    decisions = decisions or {}
    measured = {lay.name: cached_decision(libs[lay.name], threads, example.shape[0]) for lay in layers
                if lay.name in libs and lay.name not in decisions and tune and not force}
    need = [lay for lay in layers if lay.name in measured and measured[lay.name] is None]  # inputs for these only
    inputs = capture_inputs(gm, {lay.name: lay.module for lay in need}, example) if need and tune and not force \
        else {}
    for lay in layers:
        if lay.name not in libs:
            continue
        lib, m = libs[lay.name], lay.module
        if force == "sparse" or (force is None and not tune):
            mid = len(lib.candidates) // 2
            d = Decision("sparse", "forced" if force else "untuned default", mid, params_to_dict(lib.candidates[mid]))
        elif force == "dense":
            d = Decision("dense", "forced")
        elif lay.name in decisions:
            d = Decision(**decisions[lay.name])
        elif measured.get(lay.name) is not None:
            d = measured[lay.name]
        else:
            args = inputs[lay.name]
            d = tune_layer(lib, m.torch_forward, args[0], args[1] if len(args) > 1 else None, threads)
        plans[lay.name].decision = d
        m.kernel = lib.kernel(d.index) if d.backend == "sparse" else None
        if log:
            log(f"{lay.source}: {d.backend} ({d.reason})")
    why_not = "no C compiler" if not have_cc else "whole-network mode not requested"
    out = Compiled(gm, [plans[lay.name] for lay in layers], None, f"layer-by-layer: {why_not}", target=target)
    if have_cc and network is not False and force != "dense":
        _attach_network(out, example, threads, target, network, log, network_params)
    return out


def build_all(libs: list) -> None:
    """Build every library on all cores: each distinct source once (layers of one shape share their C, and two
    workers compiling the same file both miss the cache), the largest first so the last to finish is short."""
    distinct: dict[str, object] = {}
    for lib in libs:
        distinct.setdefault(lib.source, lib)
    order = sorted(distinct.values(), key=lambda lib: -len(lib.source))
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:  # the compiler runs outside the GIL
        list(pool.map(lambda lib: lib.build(), order))
    for lib in libs:
        lib.path = distinct[lib.source].path  # the same source: the same shared object


@dataclass
class Compiled:
    graph: fx.GraphModule
    plans: list[LayerPlan]
    network: NetworkKernel | None
    network_reason: str
    network_params: dict[str, dict] | None = None  # the network's own kernel parameters, when not the layers'
    torch_nodes: dict[str, str] | None = None  # node -> why it runs in torch (None: all native or not surveyed)
    segmented: fx.GraphModule | None = None  # the graph as native segments and torch islands, when chosen
    target: Target | None = None  # what the kernels were built for

    def node_table(self) -> list[tuple[str, str, str]]:
        """Every node of the fused graph: (name, what it is, where it runs and why)."""
        rows = []
        layer = {p.name: p for p in self.plans}
        for node in self.graph.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            what = node.meta.get("source", node.target) if node.op == "call_module" else \
                getattr(node.target, "__name__", str(node.target))
            if self.network is not None:
                where = "native (whole network)"
            elif self.segmented is not None:
                where = f"torch: {self.torch_nodes[node.name]}" if node.name in self.torch_nodes else \
                    "native (segment)"
            elif node.name in layer:
                d = layer[node.name].decision
                where = f"{'native' if d.backend == 'sparse' else 'torch'} (layer by layer): {d.reason}"
            else:
                why = (self.torch_nodes or {}).get(node.name, self.network_reason)
                where = f"torch: {why}"
            rows.append((node.name, str(what), where))
        return rows

    @property
    def runner(self) -> fx.GraphModule:
        """What runs the model when the whole-network function does not: the segments, or layer by layer."""
        return self.graph if self.segmented is None else self.segmented


def _row_bands(out: Compiled, threads: int, target: Target) -> dict[str, KernelParams]:
    """Every conv of the network split across threads by rows (see :func:`row_band_params`)."""
    params = {}
    for p in out.plans:
        if len(p.weight_shape) == 4 and len(p.in_shape) == 4 and p.stride[0] == p.stride[1]:
            co, ci, kh, kw = p.weight_shape
            geom = ConvGeometry(ci, co, p.in_shape[2], p.in_shape[3], kh, kw, p.stride[0], *p.padding)
            params[p.name] = row_band_params(geom, threads, target.vector_width, target.registers)
    return params


def _params(d: dict) -> KernelParams:
    try:
        return params_from_dict(d)
    except ValueError as exc:
        raise CompileError(f"{exc}; compile the model again") from None


def network_kernel_params(plans: list[LayerPlan], network_params: dict[str, dict] | None = None
                          ) -> dict[str, KernelParams]:
    """The kernel parameters a whole-network function is built with: its own when it chose other ones
    (``Compiled.network_params``), else each sparse layer's tuned decision."""
    if network_params:
        return {k: _params(v) for k, v in network_params.items()}
    return {p.name: _params(p.decision.params) for p in plans
            if p.decision.backend == "sparse" and p.decision.params}


def _attach_network(out: Compiled, example: torch.Tensor, threads: int, target: Target, forced: bool | None, log,
                    saved: dict[str, dict] | None = None) -> None:
    """Run the graph as one native function when that measures faster. Two sets of kernel parameters compete
    at more than one thread: each layer's own tuned choice, and row bands (threads keep to their rows across
    layers, which per-layer tuning cannot see)."""
    params_for = network_kernel_params(out.plans)
    if saved is not None:
        variants = {"saved parameters": {k: _params(v) for k, v in saved.items()}}
    else:
        variants = {"per-layer tiles": params_for}
        if threads > 1 and forced is None:
            variants["row bands"] = {**params_for, **_row_bands(out, threads, target)}
    built: dict[str, NetworkKernel] = {}
    for label, params in variants.items():
        net, _ = build_network(out.graph, params, target, threads)
        if net is not None:
            built[label] = net
        elif not built:  # the first variant failing means the graph itself is unsupported
            break
    if not built:
        _attach_segments(out, example, threads, target, forced, log, params_for)
        return
    best, reason = next(iter(built)), "whole network in one native call"
    if forced is None:
        key = cache_dir() / ("netv2-" + hashlib.sha256("".join(n.source for n in built.values()).encode())
                             .hexdigest()[:32] + f"-t{threads}-b{example.shape[0]}.json")
        try:
            times = json.loads(key.read_text())
            if not isinstance(times, dict) or set(times) != {"layer-by-layer", *built}:
                raise ValueError("stale timing record")
        except (OSError, ValueError):
            with torch.no_grad():
                times = {"layer-by-layer": median_ms(lambda: out.graph(example), 20)}
                for label, net in built.items():
                    times[label] = median_ms(lambda net=net: net(example), 20)
            atomic_write_bytes(key, json.dumps(times).encode())
        fastest = min(times, key=times.get)
        others = ", ".join(f"{times[k]:.3f} ms {k}" for k in times if k != fastest)
        if fastest == "layer-by-layer":
            best, reason = None, f"layer-by-layer: measured faster ({times[fastest]:.3f} ms vs {others} native)"
        else:
            best, reason = fastest, f"whole network in one native call, {fastest} ({times[fastest]:.3f} ms vs {others})"
    out.network = built[best] if best else None
    out.network_params = None if best in (None, "per-layer tiles") else \
        {k: params_to_dict(v) for k, v in variants[best].items()}
    out.network_reason = reason
    if log:
        log(reason)


def _attach_segments(out: Compiled, example: torch.Tensor, threads: int, target: Target, forced: bool | None, log,
                     params_for: dict[str, KernelParams]) -> None:
    """Native segments around the nodes that must run in torch, when that measures faster than layer by layer."""
    parts = partition(out.graph, example, params_for, target, threads, log)
    out.torch_nodes = parts.torch_nodes
    torch_list = "; ".join(f"{k} ({v})" for k, v in parts.torch_nodes.items())
    if parts.graph is None:
        out.network_reason = f"layer-by-layer: no native segment; in torch: {torch_list}"
        return
    with torch.no_grad():
        ref = out.graph(example)
        if rel_err(parts.graph(example), ref) > 1e-4:
            raise CompileError("native segments disagree with torch on the example input; please report this model")
        times = {"layer-by-layer": median_ms(lambda: out.graph(example), 20),
                 "segments": median_ms(lambda: parts.graph(example), 20)} if forced is None else {"segments": 0.0}
    if min(times, key=times.get) == "segments":
        out.segmented = parts.graph
        lead = f"{len(parts.segments)} native segments" + \
            (f" ({times['segments']:.3f} ms vs {times['layer-by-layer']:.3f} ms layer by layer)" if forced is None
             else "")
    else:
        lead = f"layer-by-layer: measured faster ({times['layer-by-layer']:.3f} ms vs {times['segments']:.3f} ms " \
               "in native segments)"
    out.network_reason = f"{lead}; in torch: {torch_list}"
    if log:
        log(out.network_reason)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a if isinstance(a, torch.Tensor) else torch.cat([t.reshape(-1) for t in a])
    b = b if isinstance(b, torch.Tensor) else torch.cat([t.reshape(-1) for t in b])
    return float((a - b).norm() / b.norm().clamp_min(1e-30))
