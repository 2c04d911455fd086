"""Parity suite: random layers of every kind the compiler runs natively — dense kxk, 3x3 pattern / pattern +
connectivity / connectivity, depthwise, grouped, block-sparse 1x1 and Linear — with every epilogue, BN folded or
not, a residual or not, compiled as one native network function and layer by layer, then called with inputs the
example did not show (batch 0..4, channels_last, a strided view): always torch's answer within 1e-5.

The default run draws 200 layers (the same ones every run); ``make test-slow`` (the ``slow`` marker) draws 2,000 more.
"""


import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tessera.runtime
from tessera.compiler.kernels import params_to_dict
from tessera.sparsity import PatternLibrary, connectivity_mask, pattern_connectivity_mask, pattern_mask
from tessera.sparsity.blocks import select_blocks

ACTS = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
        "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh}
LIB = PatternLibrary.default(8)
BUDGET = 2_000_000  # multiply-adds of one example: keeps torch's reference and our build cheap


class Layer(nn.Module):
    """conv (or Linear) -> BN? -> act, plus the input when ``residual`` (shapes permitting)."""

    def __init__(self, op: nn.Module, bn: bool, act: str, residual: bool):
        super().__init__()
        self.op = op
        width = op.out_channels if isinstance(op, nn.Conv2d) else op.out_features
        self.bn = (nn.BatchNorm2d(width) if isinstance(op, nn.Conv2d) else nn.BatchNorm1d(width)) if bn \
            else nn.Identity()
        self.act = ACTS[act]()
        self.residual = residual

    def forward(self, x):
        if isinstance(self.op, nn.Linear):
            x = torch.flatten(x, 1)
        y = self.act(self.bn(self.op(x)))
        return y + x if self.residual else y


def sparsify(w: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "pattern":
        return w * pattern_mask(w, LIB)
    if kind == "pattern_connectivity":
        return w * pattern_connectivity_mask(w, LIB, 0.3)
    if kind == "connectivity":
        return w * connectivity_mask(w, 0.4)
    if kind == "block" and w.shape[0] >= 4:  # 1x4 unaligned blocks (BED), 30% of the weights
        m = w.reshape(w.shape[0], -1)
        k = max(1, int(0.3 * m.numel() / 4))
        return w * select_blocks(m.square(), 4, k, "bed").mask.reshape(w.shape)
    return w


@st.composite
def layers(draw):
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))  # weights and inputs from this seed: the same in any test order
    kind = draw(st.sampled_from(["conv3", "conv3", "conv1", "convk", "depthwise", "grouped", "linear"]))
    stride = draw(st.sampled_from([1, 2]))
    act = draw(st.sampled_from(sorted(ACTS)))
    if kind == "linear":
        cin, h, w = draw(st.integers(1, 64)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
        op = nn.Linear(cin * h * w, draw(st.integers(1, 300)), bias=draw(st.booleans()))
        weights = draw(st.sampled_from(["dense", "block"]))
    else:
        k = {"conv3": 3, "conv1": 1, "depthwise": draw(st.sampled_from([3, 5])), "grouped": 3,
             "convk": draw(st.sampled_from([5, 7]))}[kind]
        pad = draw(st.integers(0, min(3, k)))
        h = draw(st.integers(max(1, k - 2 * pad), 64))
        w = draw(st.integers(max(1, k - 2 * pad), 64))
        if kind == "depthwise":
            cin = cout = groups = draw(st.integers(1, 160))
        elif kind == "grouped":
            groups = draw(st.sampled_from([2, 4, 8]))
            cin, cout = groups * draw(st.integers(1, 16)), groups * draw(st.integers(1, 16))
        else:
            groups, cin, cout = 1, draw(st.integers(1, 512)), draw(st.integers(1, 512))
        while cin * cout // groups * h * w * k * k // (stride * stride) > BUDGET and max(cin, cout) > groups:
            cin, cout = max(groups, cin // 2 // groups * groups), max(groups, cout // 2 // groups * groups)
            if kind == "depthwise":
                cin = cout = groups = max(1, cin)
        op = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=draw(st.booleans()))
        weights = {"conv3": draw(st.sampled_from(["dense", "pattern", "pattern_connectivity", "connectivity"])),
                   "conv1": draw(st.sampled_from(["dense", "block"])), "convk": "dense", "depthwise": "dense",
                   "grouped": "dense"}[kind]
    layer_in = (cin, h, w)
    with torch.no_grad():
        op.weight.copy_(sparsify(torch.randn(op.weight.shape), weights))
    out = op.out_features if isinstance(op, nn.Linear) else op.out_channels
    same = isinstance(op, nn.Conv2d) and out == cin and (h, w) == _out_hw(op, h, w)
    m = Layer(op, draw(st.booleans()), act, same and draw(st.booleans()))
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_(0, 0.1)
    return m.eval(), layer_in, f"{kind} {weights} {op} act={act} residual={m.residual}"


def _out_hw(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
    return (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1


def _magnitude(model: Layer, x: torch.Tensor) -> float:
    """max over outputs of sum |w| |x| (BN's scale included) over sqrt(K): a float32 sum of K products errs about
    sqrt(K) eps times their size, so an output that cancels to near zero is judged on its terms' size."""
    op = model.op
    with torch.no_grad():
        if isinstance(op, nn.Linear):
            m, k = nn.functional.linear(torch.flatten(x, 1).abs(), op.weight.abs()), op.in_features
        else:
            m = nn.functional.conv2d(x.abs(), op.weight.abs(), None, op.stride, op.padding, op.dilation, op.groups)
            k = op.weight[0].numel()
        if isinstance(model.bn, nn.BatchNorm1d | nn.BatchNorm2d):
            g = model.bn.weight.abs() / (model.bn.running_var + model.bn.eps).sqrt()
            m = m * g.view(1, -1, *([1] * (m.dim() - 2)))
    return float(m.max()) / k ** 0.5 if m.numel() else 0.0


def _inputs(draw_batch: int, fmt: str, shape: tuple[int, int, int]) -> torch.Tensor:
    x = torch.randn(draw_batch, *shape)
    if fmt == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if fmt == "strided":  # every other column of a wider tensor: not contiguous in any format
        wide = torch.randn(draw_batch, shape[0], shape[1], 2 * shape[2])
        return wide[..., ::2]
    return x


def _check(case, network: bool, batch: int, fmt: str, pick: int = 0) -> None:
    """``pick`` chooses the layer-by-layer kernel among all its tuning candidates (every family that applies),
    not only the untuned default the whole-network function takes."""
    model, shape, desc = case
    x = torch.randn(2, *shape)
    cm = tessera.runtime.compile(model, x, threads=2, tune=False, network=network, _force="sparse")
    if not network and cm.plans[0].decision.backend == "sparse":
        name = cm.plans[0].name
        cands = dict(cm.graph.named_modules())[name].kernel.layer.candidates
        i = pick % len(cands)
        decision = {"backend": "sparse", "reason": "parity suite", "index": i, "params": params_to_dict(cands[i])}
        cm = tessera.runtime.compile(model, x, threads=2, network=False, _decisions={name: decision})
        desc += f" candidate {cands[i]}"
    for b in (batch, 1):  # a batch the example did not show, then the example's own size
        xi = _inputs(b, fmt, shape)
        with torch.no_grad():
            want, got = model(xi), cm(xi)
            pre = model.bn(model.op(torch.flatten(xi, 1) if isinstance(model.op, nn.Linear) else xi))
        assert got.shape == want.shape, desc
        if want.numel():  # float error scales with the sums before the activation (tanh's output stays below 1)
            scale = max(float(want.abs().max()), float(pre.abs().max()), _magnitude(model, xi), 1e-6)
            err = float((got - want).abs().max()) / scale
            assert err <= 1e-5, f"{desc}: rel err {err:.1e} (batch {b}, {fmt}, network={network})"


def _suite(n: int, derandomize: bool):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=derandomize)


ARGS = (layers(), st.booleans(), st.integers(0, 4), st.sampled_from(["nchw", "channels_last", "strided"]),
        st.integers(0, 63))


@_suite(200, derandomize=True)  # the same layers on every CI run
@given(*ARGS)
def test_random_layers_match_torch(case, network, batch, fmt, pick):
    _check(case, network, batch, fmt, pick)


@pytest.mark.slow
@_suite(2000, derandomize=False)  # new layers every run
@given(*ARGS)
def test_random_layers_match_torch_slow(case, network, batch, fmt, pick):
    _check(case, network, batch, fmt, pick)
