"""Trace a model with torch.fx, fold BatchNorm into convs, fuse activations and residual adds into conv epilogues.

Shape checks (``torch._assert``: timm's BatchNormAct) and eval no-ops (Identity, Dropout) are dropped first; BN
folds as a module or as ``F.batch_norm`` on the module's own buffers. Every Conv2d becomes a :class:`FusedConv`
(folded weight and bias, an activation spec and a ``residual`` flag) that runs in
torch until the compiler attaches a native kernel to it. The result is a layerwise representation the compiler
can report on and tune layer by layer, while everything that is not a conv keeps running in torch.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx._symbolic_trace import _orig_module_call  # Module.__call__ as it was before tracing
from torch.fx.passes.shape_prop import ShapeProp

from tessera.compiler.activations import NONE, activation_of, apply_torch
from tessera.errors import CompileError

# call forms fused or emitted as elementwise binary ops (residual adds, squeeze-excitation gates)
ADD_FUNCS = {operator.add, operator.iadd, torch.add}
MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_CHECKS = {torch._assert, *(f for f in (getattr(torch, "_check", None),) if f is not None)}


def _own_copy(t: torch.Tensor, shared: set[int]) -> torch.Tensor:
    t = t.detach()
    return t.clone() if t.data_ptr() in shared else t


class FusedConv(nn.Module):
    """conv (+ folded BN) (+ residual add) (+ ReLU); runs ``kernel`` when one is attached, else torch."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.padding_mode = conv.padding_mode
        # a copy only of the conv's own tensors (a folded BN made new ones): the model stays untouched
        own = {t.data_ptr() for t in (conv.weight, conv.bias) if t is not None}
        self.weight = nn.Parameter(_own_copy(weight, own), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(_own_copy(bias, own), requires_grad=False)
        self.act = NONE  # an activation spec (tessera.compiler.activations)
        self.residual = False
        self.folded_bn = False
        self.kernel = None  # a compiler.kernel.ConvKernel, set by the tuner
        self.packed = None  # its PackedConv, once packed
        self.threads = 1
        self.in_shape: tuple[int, ...] | None = None

    def torch_forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise CompileError("FusedConv only folds zero-padded convs")
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if res is not None:
            y = y + res
        return apply_torch(self.act, y)

    def _fits_kernel(self, x: torch.Tensor) -> bool:
        """The native kernel takes this input: its compiled shape, fp32 on the CPU, no gradient wanted."""
        return x.dtype == torch.float32 and x.device.type == "cpu" and \
            tuple(x.shape[1:]) == tuple(self.in_shape[1:]) and not (x.requires_grad and torch.is_grad_enabled())

    def forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        if self.kernel is not None and self._fits_kernel(x):
            return self.kernel(x, res, self.threads)
        return self.torch_forward(x, res)

    def extra_repr(self) -> str:
        flags = [n for n, v in (("bn", self.folded_bn), ("add", self.residual), (self.act, self.act != NONE)) if v]
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, fused={'+'.join(flags)}"


class FusedLinear(FusedConv):
    """linear (+ ReLU) as a 1x1 conv of a (batch, Cin) input: the block-sparse kernel serves both."""

    def __init__(self, lin: nn.Linear):
        conv = nn.Conv2d(lin.in_features, lin.out_features, 1, bias=False, device="meta")
        super().__init__(conv, lin.weight.detach()[:, :, None, None], lin.bias)
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def torch_forward(self, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        y = F.linear(x, self.weight[:, :, 0, 0], self.bias)
        if res is not None:
            y = y + res
        return apply_torch(self.act, y)


@dataclass(frozen=True)
class _BatchNorm:
    """The statistics of an eval-mode batch norm, however it was called."""

    mean: torch.Tensor
    var: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


def _fetch(gm: fx.GraphModule, a) -> torch.Tensor | None:
    if a is None:
        return None
    if not (isinstance(a, fx.Node) and a.op == "get_attr"):
        raise ValueError("not a stored tensor")
    obj = gm
    for part in a.target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


def batch_norm_of(node: fx.Node, gm: fx.GraphModule, modules: dict) -> _BatchNorm | None:
    """An eval-mode BatchNorm2d module, or ``F.batch_norm(x, mean, var, weight, bias, training=False, ...)`` on
    stored tensors (timm's BatchNormAct2d); None for anything else (it then runs in torch)."""
    if node.op == "call_module":
        bn = modules.get(node.target)
        if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None:
            return _BatchNorm(bn.running_mean.detach(), bn.running_var.detach(),
                              None if bn.weight is None else bn.weight.detach(),
                              None if bn.bias is None else bn.bias.detach(), bn.eps)
        return None
    if node.op != "call_function" or node.target is not F.batch_norm:
        return None
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    args = {**dict(zip(names, node.args, strict=False)), **node.kwargs}
    if args.get("training", False) is not False:
        return None
    try:
        mean, var = _fetch(gm, args.get("running_mean")), _fetch(gm, args.get("running_var"))
        weight, bias = _fetch(gm, args.get("weight")), _fetch(gm, args.get("bias"))
    except (ValueError, AttributeError):
        return None
    if mean is None or var is None:
        return None
    return _BatchNorm(mean, var, weight, bias, float(args.get("eps", 1e-5)))


def _fold_bn(w: torch.Tensor, b: torch.Tensor | None, bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    gamma = torch.ones_like(bn.mean) if bn.weight is None else bn.weight
    scale = gamma / torch.sqrt(bn.var + bn.eps)
    b0 = torch.zeros(w.shape[0]) if b is None else b.detach()
    beta = torch.zeros_like(bn.mean) if bn.bias is None else bn.bias
    return w.detach() * scale[:, None, None, None], (b0 - bn.mean) * scale + beta


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


class _ConcreteProxy(fx.Proxy):
    """A proxy that turns into the example's number where Python asks for one (int(), float(), an index)."""

    def _value(self):
        return self.tracer.values[self.node]

    def __int__(self):
        return int(self._value())

    def __float__(self):
        return float(self._value())

    def __index__(self):
        return int(self._value())

    def __len__(self):
        return len(self._value())


class ConcreteTracer(fx.Tracer):
    """fx tracing with the example's values carried alongside the proxies: where Python needs a real value —
    ``if x.shape[-2] < 7:``, ``for d in x.shape``, ``int(x.size(1))`` — it gets the example's, so the trace
    takes the branch the example takes (timm's VGG head checks its input size). The graph is specialised to the
    example's shapes, which the compiled code is anyway."""

    def __init__(self, example: torch.Tensor):
        super().__init__()
        self.example = example
        self.values: dict[fx.Node, object] = {}
        self.shadow: nn.Module | None = None  # a copy to evaluate leaf modules on: fx proxies the root's own
        # parameters whenever traced code reads them, and re-enters tracing through Module.__call__

    def trace(self, root, concrete_args=None):
        self.shadow = copy.deepcopy(root)
        return super().trace(root, concrete_args)

    def _concrete(self, a):
        return fx.node.map_aggregate(a, lambda v: self.values[v.node] if isinstance(v, fx.Proxy) else
                                     self.values[v] if isinstance(v, fx.Node) else v)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        a, kw = self._concrete(args), self._concrete(kwargs)
        with torch.no_grad():
            if kind == "placeholder":
                value = self.example
            elif kind == "get_attr":
                value = self.root
                for part in target.split("."):
                    value = getattr(value, part)
            elif kind == "call_module":
                value = _orig_module_call(self.shadow.get_submodule(target), *a, **kw)
            elif kind == "call_method":
                value = getattr(a[0], target)(*a[1:], **kw)
            elif kind == "call_function":
                value = target(*a, **kw)
            else:
                value = None
        self.values[proxy.node] = value
        return proxy

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.values[obj.node])

    def iter(self, obj: fx.Proxy):
        return iter(obj[i] for i in range(len(self.values[obj.node])))


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """Symbolically trace an eval-mode copy of ``model`` and record every node's output shape; a model with
    control flow on shapes is traced again with the example's values (:class:`ConcreteTracer`)."""
    model = copy.deepcopy(model).eval()
    if isinstance(model, nn.Conv2d):  # a bare layer traces to F.conv2d; as a submodule it stays a layer
        model = nn.Sequential(model)
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # fx raises many types for untraceable Python
        try:
            tracer = ConcreteTracer(example)
            gm = fx.GraphModule(model, tracer.trace(model), model.__class__.__name__)
            gm.meta["shape_specialised"] = True  # valid for the example's image size only
        except Exception as exc:
            raise CompileError(f"torch.fx cannot trace this model, even with the example's values "
                               f"({type(exc).__name__}: {exc}); make forward() free of data-dependent control "
                               "flow") from None
    _drop_checks_and_noops(gm)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    return gm


def _drop_checks_and_noops(gm: fx.GraphModule) -> None:
    """Shape asserts (they held for the traced shapes; the compiled code is fixed to them) and eval-mode no-ops
    leave the graph, so they neither block fusion nor count as torch-run nodes."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _CHECKS:
            graph.erase_node(node)
        elif node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity | nn.Dropout) \
                and len(node.args) == 1 and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.op == "call_function" and node.target is F.dropout and isinstance(node.args[0], fx.Node) and \
                node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True) is False:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def fuse(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace conv[-bn][-add][-act] and linear[-add][-act] chains by FusedConv / FusedLinear modules;
    returns the same (mutated) GraphModule."""
    modules = dict(gm.named_modules())
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d | nn.Linear):
            continue
        conv = modules[node.target]
        in_meta = node.args[0].meta.get("tensor_meta")
        tail = node
        folded = False
        if isinstance(conv, nn.Linear):
            if in_meta is None or len(in_meta.shape) != 2:
                continue  # only (batch, features) inputs: other shapes keep running as nn.Linear
            fused = FusedLinear(conv)
        else:
            w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
            user = _only_user(tail)
            bn = batch_norm_of(user, gm, modules) if user is not None and user.args[0] is tail else None
            if bn is not None:
                w, b = _fold_bn(w, b, bn)
                folded, tail = True, user
            fused = FusedConv(conv, w, b)
        fused.folded_bn = folded
        fused.in_shape = tuple(in_meta.shape) if in_meta is not None else None
        residual = None
        user = _only_user(tail)
        if user is not None and user.op == "call_function" and user.target in ADD_FUNCS and len(user.args) == 2 \
                and not user.kwargs:
            other = user.args[1] if user.args[0] is tail else user.args[0]
            om, tm = getattr(other, "meta", {}).get("tensor_meta"), tail.meta.get("tensor_meta")
            if isinstance(other, fx.Node) and om is not None and tm is not None and om.shape == tm.shape \
                    and other is not tail:
                residual, tail = other, user
                fused.residual = True
        user = _only_user(tail)
        act = activation_of(user, modules) if user is not None and user.args and user.args[0] is tail else None
        if act is not None:
            fused.act, tail = act, user
        name = node.target.replace(".", "_") + "_fused"
        gm.add_submodule(name, fused)
        with graph.inserting_after(tail):
            new = graph.call_module(name, (node.args[0], residual) if residual is not None else (node.args[0],))
        new.meta = dict(tail.meta)
        new.meta["source"] = node.target
        tail.replace_all_uses_with(new)
    graph.eliminate_dead_code()
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layerwise representation."""

    name: str
    module: FusedConv
    source: str


def conv_layers(gm: fx.GraphModule) -> list[LayerInfo]:
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), FusedConv):
            out.append(LayerInfo(node.target, gm.get_submodule(node.target), node.meta.get("source", node.target)))
    return out


def capture_inputs(run, modules: dict[str, nn.Module], example: torch.Tensor) -> dict[str, tuple]:
    """The arguments each of ``modules`` (name -> module) is called with when ``run(example)`` runs, cloned."""
    seen: dict[str, tuple] = {}
    hooks = [mod.register_forward_pre_hook(
        lambda _, args, name=name: seen.__setitem__(name, tuple(
            a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)))
        for name, mod in modules.items()]
    try:
        with torch.no_grad():
            run(example)
    finally:
        for h in hooks:
            h.remove()
    return seen
