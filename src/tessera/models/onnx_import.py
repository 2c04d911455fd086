"""An ONNX file as a torch ``fx.GraphModule`` of ordinary modules (``nn.Conv2d``, ``nn.BatchNorm2d``,
``nn.Linear``, activations, pooling), so a model from any framework goes through tessera's compiler like a
PyTorch one: its zeros are kept, so its sparsity is read back from the weights as for a torch model.

Covers the operators CNN exports use (Conv, Gemm, MatMul, BatchNormalization, Relu, Clip, Sigmoid, HardSigmoid,
HardSwish, Tanh, LeakyRelu, Add, Mul, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and W, Flatten,
Reshape to (N, -1), Identity, Dropout); any other node is a one-line error naming it. Only float32 initializers
are read (no external data, nothing executed from the file).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import fx, nn

from tessera.errors import ConfigError


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(node, attrs: dict, name: str) -> tuple[int, int]:
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ConfigError(f"ONNX node {name} ({node.op_type}) uses auto_pad; export with explicit pads")
    if pads[:2] != pads[2:]:
        raise ConfigError(f"ONNX node {name} ({node.op_type}) has asymmetric pads {pads}; tessera needs symmetric")
    return int(pads[0]), int(pads[1])


def load_onnx(path: str | Path) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """The model in ``path`` as a GraphModule, and its input shape when the file fixes one (batch included)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("reading ONNX needs the onnx package: pip install onnx") from None
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # a protobuf decode error or a checker finding: not a valid ONNX file
        raise ConfigError(f"{path} is not a readable ONNX file ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:160]})") from None
    try:
        return _convert(proto, path)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeError, RuntimeError) as exc:
        # an inconsistent file the checker let through (a tensor whose data does not match its shape, ...)
        raise ConfigError(f"{path} is not a consistent ONNX model ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:160]})") from None


def _convert(proto, path: Path) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    from onnx import numpy_helper

    g = proto.graph
    consts: dict[str, torch.Tensor] = {}
    for t in g.initializer:
        consts[t.name] = torch.from_numpy(numpy_helper.to_array(t).copy())
    for node in g.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = torch.from_numpy(numpy_helper.to_array(_attrs(node)["value"]).copy())
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ConfigError(f"{path} has {len(inputs)} graph inputs; tessera compiles models with one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims) if dims and all(d.dim_value > 0 for d in dims[1:]) else None
    if shape is not None and shape[0] <= 0:
        shape = (1, *shape[1:])

    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {inputs[0].name: graph.placeholder("x")}
    count = 0

    def module(m: nn.Module, arg: fx.Node, kind: str) -> fx.Node:
        nonlocal count
        name = f"{kind}{count}"
        count += 1
        root.add_module(name, m)
        return graph.call_module(name, (arg,))

    def const(name: str) -> torch.Tensor:
        if name not in consts:
            raise ConfigError(f"ONNX tensor {name} is computed at run time where tessera needs a constant")
        return consts[name].float()

    for i, node in enumerate(g.node):
        op, a, name = node.op_type, _attrs(node), node.name or f"node{i}"
        ins = list(node.input)
        if op == "Constant":
            continue
        x = env.get(ins[0]) if ins else None
        if x is None:
            raise ConfigError(f"ONNX node {name} ({op}) reads {ins[0] if ins else 'nothing'}, not an activation")
        if op == "Conv":
            w = const(ins[1])
            b = const(ins[2]) if len(ins) > 2 and ins[2] else None
            cout, cin_g, kh, kw = w.shape
            groups = int(a.get("group", 1))
            conv = nn.Conv2d(cin_g * groups, cout, (kh, kw), tuple(a.get("strides", [1, 1])), _pads(node, a, name),
                             tuple(a.get("dilations", [1, 1])), groups, bias=b is not None)
            with torch.no_grad():
                conv.weight.copy_(w)
                if b is not None:
                    conv.bias.copy_(b)
            y = module(conv, x, "conv")
        elif op == "BatchNormalization":
            scale, bias, mean, var = (const(n) for n in ins[1:5])
            bn = nn.BatchNorm2d(scale.numel(), eps=float(a.get("epsilon", 1e-5)))
            with torch.no_grad():
                bn.weight.copy_(scale)
                bn.bias.copy_(bias)
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
            y = module(bn.eval(), x, "bn")
        elif op in ("Gemm", "MatMul"):
            w = const(ins[1])
            if op == "Gemm":
                if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
                    raise ConfigError(f"ONNX node {name}: Gemm with transA/alpha/beta is not supported")
                w = w if a.get("transB", 0) else w.t()
            else:
                w = w.t()
            b = const(ins[2]) if op == "Gemm" and len(ins) > 2 and ins[2] else None
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
            y = module(lin, x, "fc")
        elif op in _ACTS:
            y = module(_ACTS[op](a), x, "act")
        elif op == "Clip":
            lo = const(ins[1]).item() if len(ins) > 1 and ins[1] else float(a.get("min", float("-inf")))
            hi = const(ins[2]).item() if len(ins) > 2 and ins[2] else float(a.get("max", float("inf")))
            y = module(nn.ReLU6() if (lo, hi) == (0.0, 6.0) else nn.Hardtanh(lo, hi), x, "act")
        elif op in ("Add", "Mul"):
            other = env.get(ins[1])
            if other is None:
                raise ConfigError(f"ONNX node {name} ({op}) with a constant operand is not supported")
            y = graph.call_function(torch.add if op == "Add" else torch.mul, (x, other))
        elif op in ("MaxPool", "AveragePool"):
            k = tuple(a["kernel_shape"])
            s = tuple(a.get("strides", [1, 1]))
            p = _pads(node, a, name)
            ceil = bool(a.get("ceil_mode", 0))
            pool = nn.MaxPool2d(k, s, p, ceil_mode=ceil) if op == "MaxPool" else \
                nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))
            y = module(pool, x, "pool")
        elif op == "GlobalAveragePool":
            y = module(nn.AdaptiveAvgPool2d(1), x, "pool")
        elif op == "ReduceMean":
            axes = a.get("axes") or (const(ins[1]).long().tolist() if len(ins) > 1 else None)
            if sorted(int(v) % 4 for v in axes or []) != [2, 3]:
                raise ConfigError(f"ONNX node {name}: ReduceMean over axes {axes} (only H and W are supported)")
            y = graph.call_method("mean", (x, (2, 3)), {"keepdim": bool(a.get("keepdims", 1))})
        elif op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise ConfigError(f"ONNX node {name}: Flatten with axis {a.get('axis')} (only 1 is supported)")
            y = graph.call_function(torch.flatten, (x, 1))
        elif op == "Reshape":
            target = const(ins[1]).long().tolist()
            if len(target) != 2 or (target[1] != -1 and target[0] not in (0, -1)):
                raise ConfigError(f"ONNX node {name}: Reshape to {target} (only to (N, -1) is supported)")
            y = graph.call_function(torch.flatten, (x, 1))
        elif op in ("Identity", "Dropout"):
            y = x
        else:
            raise ConfigError(f"ONNX node {name} is a {op}, which tessera's importer does not read; export the "
                              "model from torch or open an issue with the file")
        env[node.output[0]] = y
    outs = [env[o.name] for o in g.output if o.name in env]
    if len(outs) != len(g.output):
        raise ConfigError(f"{path}: an output is not computed by the supported nodes")
    graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(root, graph, class_name="OnnxModel")
    gm.tessera_onnx = str(path.resolve())  # an artifact compiled from it rebuilds the model from this file
    return gm.eval(), shape


class _HardSigmoid(nn.Module):
    """ONNX's HardSigmoid with its own slope and offset (torch's is alpha 1/6, beta 0.5)."""

    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        return (self.alpha * x + self.beta).clamp(0, 1)


def _hardsigmoid(a: dict) -> nn.Module:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    return nn.Hardsigmoid() if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5 else _HardSigmoid(alpha, beta)


_ACTS = {
    "Relu": lambda a: nn.ReLU(), "Sigmoid": lambda a: nn.Sigmoid(), "Tanh": lambda a: nn.Tanh(),
    "HardSwish": lambda a: nn.Hardswish(), "HardSigmoid": _hardsigmoid,
    "LeakyRelu": lambda a: nn.LeakyReLU(float(a.get("alpha", 0.01))),
}


__all__ = ["load_onnx"]
