"""torchvision/timm-style networks compile whole and give torch's answer for every input a torch module takes."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

import tessera.runtime
from tessera.compiler.network_plan import plan_network
from tessera.compiler.target import host_target
from tessera.errors import InputError
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.pruning.presets import prune_for_deployment
from tessera.pruning.sparsifier import Sparsifier
from tessera.sparsity import analyse_conv


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


ARCHS = [("tv_resnet18", {"width": 16}, "conv1"), ("tv_resnet50", {"width": 8}, "conv1"),
         ("tv_mobilenet_v2", {"width": 0.35}, r"features\.0\.0"),
         ("timm_efficientnet_b0", {"width": 0.25, "depth": 0.34}, "conv_stem")]


@pytest.fixture(scope="module", params=ARCHS, ids=[a[0] for a in ARCHS])
def compiled_arch(request):
    name, args, stem = request.param
    torch.manual_seed(0)
    m = prune_for_deployment(randomize_bn_stats(create_model(name, num_classes=10, **args)), stem)
    cm = tessera.runtime.compile(m, torch.randn(1, 3, 48, 48), threads=2, tune=False, network=True)
    return m, cm


def test_architecture_runs_as_one_native_function(compiled_arch):
    m, cm = compiled_arch
    assert cm.network is not None, cm.network_reason
    assert cm.torch_nodes() == {}
    assert any(p.decision.backend == "sparse" for p in cm.plans)


class _Recycles(nn.Module):
    """q = c1(p) is p's last read; r = c2(s) then lands in p's memory: c1 must keep its barrier."""

    def __init__(self):
        super().__init__()
        self.cs, self.c0, self.c1, self.c2 = (nn.Conv2d(8, 8, 1) for _ in range(4))

    def forward(self, x):
        s = self.cs(x)
        p = self.c0(x)
        q = self.c1(p)
        r = self.c2(s)
        return q * r  # not fused into c1 (an add would be its residual)


def test_no_barrier_dropped_before_a_write_into_recycled_memory():
    m = _Recycles().eval()
    x = torch.randn(2, 8, 20, 20)
    cm = tessera.runtime.compile(m, x[:1], threads=2, _force="sparse", network=True)
    r = plan_network(cm.graph, {}, host_target(), 2)
    writes = [w for _, _, w in r.statements]
    assert len(set().union(*writes)) < len(writes)  # some value went into recycled memory
    for i, (node, reads, w) in enumerate(r.statements[:-1]):
        if node in r.barrier_free:
            _, next_reads, next_writes = r.statements[i + 1]
            assert not next_writes & (reads | w) and not w & next_reads
    with torch.no_grad():
        for _ in range(20):
            assert rel_err(cm(x), m(x)) <= 1e-5


def test_activations_share_buffers_and_stay_exact_at_two_threads(compiled_arch):
    """Values whose readers are done hand their memory to later values of the same layout (fewer buffers than
    activations), and no thread writes a recycled buffer while another still reads it (repeated calls)."""
    m, cm = compiled_arch
    k = cm.network
    values = sum(1 for n in cm.graph.graph.nodes if n.op not in ("output", "get_attr"))
    assert len(k._bufs) < 0.8 * values
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m(x)
        for _ in range(30):
            assert rel_err(cm(x), ref) <= 1e-5
    # a conv may skip its barrier only if the next statement neither reads its output nor writes (into recycled
    # memory) a buffer the conv still reads: the rule, checked on the rendered plan (a race is too rare to catch)
    r = plan_network(cm.graph, {}, host_target(), 2)
    for i, (node, reads, writes) in enumerate(r.statements[:-1]):
        if node in r.barrier_free:
            _, next_reads, next_writes = r.statements[i + 1]
            assert not next_writes & (reads | writes) and not writes & next_reads


@pytest.mark.parametrize("form", ["nchw", "channels_last", "strided", "batch0", "batch1", "batch3"])
def test_architecture_matches_torch_for_every_input_form(compiled_arch, form):
    m, cm = compiled_arch
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, 48, 48, generator=g)
    if form == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif form == "strided":
        x = torch.randn(3, 3, 48, 96, generator=g)[..., ::2]
    elif form == "batch0":
        x = x[:0]
    elif form == "batch1":
        x = x[:1]
    with torch.no_grad():
        ref, y = m(x), cm(x)
    assert y.shape == ref.shape
    if ref.numel():
        assert rel_err(y, ref) <= 1e-5


def test_depthwise_targets_need_groups():
    m = create_model("tv_mobilenet_v2", num_classes=10, width=0.35)
    s = Sparsifier(targets=[{"op": "Conv2d", "kernel": 3}], defaults={"scheme": "pattern_connectivity"})
    names = {t.name for t in s.select(m)}
    assert "features.0.0" in names and not any(t.module.groups > 1 for t in s.targets)
    s = Sparsifier(targets=[{"op": "Conv2d", "kernel": 3, "groups": "any"}], defaults={"scheme": "pattern"})
    assert any(t.module.groups > 1 for t in s.select(m))


ACTS = [nn.ReLU(), nn.ReLU6(), nn.SiLU(), nn.Hardswish(), nn.Sigmoid(), nn.GELU(), nn.GELU(approximate="tanh"),
        nn.LeakyReLU(0.1), nn.Hardtanh(-0.5, 2.0), nn.Tanh(), nn.Hardsigmoid(), nn.Identity()]


@pytest.mark.parametrize("act", ACTS, ids=lambda a: repr(a))
@pytest.mark.parametrize("network", [False, True])
def test_every_epilogue_activation_matches_torch(act, network):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    with torch.no_grad():  # a pattern-sparse weight, so the per-layer path runs a generated kernel too
        conv.weight.mul_(torch.tensor([[0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float32))
        conv.weight.mul_(4)  # pre-activations over several units: every branch of every activation
    m = nn.Sequential(conv, nn.BatchNorm2d(16), act, nn.Conv2d(16, 4, 1), act).eval()
    randomize_bn_stats(m)
    x = torch.randn(2, 8, 12, 12)
    cm = tessera.runtime.compile(m, x[:1], threads=2, _force="sparse", network=network)
    if network:
        assert cm.network is not None, cm.network_reason
    assert cm.plans[0].decision.backend == "sparse"
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


@pytest.mark.parametrize("act", [nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.GELU(), nn.GELU(approximate="tanh")],
                         ids=lambda a: repr(a))
def test_vector_activations_are_accurate_everywhere(act):
    """Elementwise over [-30, 30] (the vector polynomials, not a norm that hides the tails): within 4e-7 of the
    input's scale, max(1, |x|) — float32 rounding of x itself (sigmoid and tanh are a rational fit with an absolute
    error below 4e-7: SiLU(-30) is -3.6e-6, not -2.8e-12, as in ONNX Runtime's fast logistic)."""
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    m = nn.Sequential(conv, act).eval()
    x = torch.linspace(-30, 30, 64 * 96).reshape(1, 1, 64, 96)
    cm = tessera.runtime.compile(m, x, threads=1, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    with torch.no_grad():
        got, want = cm(x), act(x.double()).float()
    assert float(((got - want).abs() / x.abs().clamp_min(1.0)).max()) <= 4e-7


@pytest.mark.parametrize("cin", [3, 16, 17, 40, 47, 70])
def test_dense_linear_and_se_matvecs_match_torch(cin):
    """The network function's dense matrix-vector products (a Linear head, squeeze-excitation's 1x1s on pooled
    vectors) for input widths around the vector width: whole pairs of vectors, one more vector, a scalar tail."""
    torch.manual_seed(cin)
    m = nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, 9, 1),
                      nn.SiLU(), nn.Flatten(), nn.Linear(9, cin), nn.ReLU(), nn.Linear(cin, 5)).eval()
    x = torch.randn(3, 3, 10, 10)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


def test_unsupported_op_in_the_middle_keeps_native_segments():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
                nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = F.relu(self.c1(x))
            z = torch.flip(y, dims=[3])  # no native form
            z = self.c2(z) + y  # the residual crosses the torch island
            z = torch.cumsum(F.silu(self.c3(z)), dim=2)  # another one
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1))

    m = M().eval()
    x = torch.randn(2, 3, 10, 10)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is None
    assert set(cm.torch_nodes()) == {"flip", "cumsum"}, cm.torch_nodes()
    assert "native segments" in cm.network_reason and "flip" in cm.network_reason and "cumsum" in cm.network_reason
    rows = {name: where for name, _, where in cm.node_table}
    assert rows["c2_fused"].startswith("native") and rows["fc_fused"].startswith("native")
    report = cm.report()
    assert "flip" in report and "cumsum" in report
    with torch.no_grad():
        for xi in (x, x[:0], torch.randn(4, 3, 10, 10).to(memory_format=torch.channels_last)):
            ref = m(xi)
            assert cm(xi).shape == ref.shape
            if ref.numel():
                assert rel_err(cm(xi), ref) <= 1e-5


def test_bad_inputs_get_one_line_errors():
    m = create_model("vgg_tiny", width=4).eval()
    cm = tessera.runtime.compile(m, torch.randn(1, 1, 8, 8), tune=False)
    with pytest.raises(InputError, match="float32"):
        cm(torch.randn(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(InputError, match="unsqueeze"):
        cm(torch.randn(1, 8, 8))
    with pytest.raises(InputError, match="Tensor"):
        cm([1, 2, 3])


@settings(deadline=None, max_examples=30)
@given(st.integers(1, 12), st.integers(1, 3), st.integers(3, 13), st.integers(3, 13), st.sampled_from([1, 3, 5]),
       st.sampled_from([1, 2]), st.integers(0, 2), st.booleans(), st.integers(0, 2), st.integers(0, 99))
def test_grouped_and_depthwise_convs_match_torch(cpg, mult, h, w, k, stride, pad, bias, batch, seed):
    """Depthwise (mult = 1 channel per group... in and out) and grouped convs in the network function."""
    g = torch.Generator().manual_seed(seed)
    groups = 1 + seed % 4
    cin, cout = cpg * groups, cpg * groups * mult
    pad = min(pad, k // 2)
    if (h + 2 * pad - k) < 0 or (w + 2 * pad - k) < 0:
        return
    conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    m = nn.Sequential(conv, nn.ReLU6(), nn.Conv2d(cout, cout, k, 1, k // 2, groups=cout)).eval()
    x = torch.randn(max(batch, 1), cin, h, w, generator=g)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


class _DepthwiseResidual(nn.Module):
    def __init__(self, c, k, stride, pad, act):
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, stride, pad, groups=c)
        self.act, self.residual = act, stride == 1 and 2 * pad == k - 1

    def forward(self, x):
        y = self.act(self.dw(x))
        return y + x if self.residual else y


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 80), st.sampled_from([3, 5, 7]), st.sampled_from([1, 2]),
       st.integers(0, 3), st.sampled_from([nn.ReLU6(), nn.SiLU(), nn.Identity()]), st.integers(0, 99))
def test_wide_depthwise_rows_match_torch(c, h, w, k, stride, pad, act, seed):
    """Rows wide enough for the vector path (chunks of up to 4 vectors, stride-2 shuffles, clipped borders),
    with a residual when the shape allows one."""
    g = torch.Generator().manual_seed(seed)
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    m = _DepthwiseResidual(c, k, stride, pad, act).eval()
    with torch.no_grad():
        m.dw.weight.copy_(torch.randn(m.dw.weight.shape, generator=g))
    x = torch.randn(2, c, h, w, generator=g)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


class _PointwiseBlock(nn.Module):
    """3x3 conv (the padded layout the 1x1 then reads in place) -> block-sparse 1x1 (+ residual) -> act."""

    def __init__(self, c, cout, act, residual, stride=1):
        super().__init__()
        self.c3, self.c1, self.act = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, cout, 1, stride), act
        self.residual = residual and c == cout and stride == 1

    def forward(self, x):
        y = self.c3(x)
        z = self.c1(y)
        return self.act(z + y if self.residual else z)


@settings(deadline=None, max_examples=10)
@given(st.integers(4, 40), st.integers(4, 40), st.integers(1, 30), st.integers(1, 40), st.sampled_from([2, 4, 8]),
       st.sampled_from([nn.ReLU6(), nn.SiLU(), nn.Identity()]), st.booleans(), st.sampled_from([1, 2]),
       st.integers(0, 99))
@example(32, 48, 20, 19, 4, nn.ReLU6(), False, 1, 1)
@example(32, 32, 15, 30, 4, nn.SiLU(), True, 1, 2)
@example(32, 64, 33, 31, 4, nn.ReLU6(), False, 2, 3)
def test_block_sparse_pointwise_in_place_matches_torch(c, cout, h, w, n, act, residual, stride, seed):
    """Block-sparse 1x1 convs run by the block kernel over the network's padded planes (pad columns and the
    rows after the last stay zero: the lane mask) and a block-sparse Linear head read block by block."""
    torch.manual_seed(seed)
    n = min(n, c, cout)
    m = nn.Sequential(_PointwiseBlock(c, cout, act, residual, stride), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(cout, 4 * n + 1)).eval()
    s = Sparsifier(targets=[{"op": "Conv2d", "kernel": 1, "scheme": "block", "n": n, "keep": 0.3},
                            {"op": "Linear", "scheme": "block", "n": n, "keep": 0.3}])
    s.prepare(m)
    s.step()
    m = s.squash_mask().eval()
    x = torch.randn(2, 3, h, w)
    cm = tessera.runtime.compile(m, x[:1], threads=2, _force="sparse", network=True)
    assert cm.network is not None, cm.network_reason
    # the block kernel, not the FKW loops (planes smaller than a tile keep those)
    if h * w >= 256 * stride ** 2 and analyse_conv(m[0].c1.weight).kind == "block":
        assert "_tile_" in cm.network.source
    with torch.no_grad():
        for _ in range(3):
            assert rel_err(cm(x), m(x)) <= 1e-5


@settings(deadline=None, max_examples=40)
@given(st.sampled_from(["max", "avg"]), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.booleans(),
       st.booleans(), st.integers(4, 15), st.integers(4, 70), st.integers(0, 99))
@example("max", 3, 2, 1, False, False, 9, 70, 0)  # the ResNet stem's pool: vector chunks in the middle of rows
@example("max", 2, 1, 0, False, False, 5, 40, 1)
def test_pooling_matches_torch(kind, k, stride, pad, ceil_mode, include_pad, h, w, seed):
    pad = min(pad, k // 2)
    pool = nn.MaxPool2d(k, stride, pad, ceil_mode=ceil_mode) if kind == "max" else \
        nn.AvgPool2d(k, stride, pad, ceil_mode=ceil_mode, count_include_pad=include_pad)
    # a negative bias: the pooled values are mostly below 0, so a zero border taken into a max would show
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool, nn.Conv2d(4, 4, 1)).eval()
    with torch.no_grad():
        m[0].bias.fill_(-3.0)
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
        if kind == "max":  # NaN propagates through the window as torch's max does
            xn = x.clone()
            xn[0, :, h // 2, w // 2] = float("nan")
            got, want = cm(xn), m(xn)
            assert torch.equal(got.isnan(), want.isnan())
            assert rel_err(got.nan_to_num(), want.nan_to_num()) <= 1e-5


def test_two_threads_see_rows_the_other_thread_wrote():
    """conv -> maxpool -> 1x1 conv: the 1x1 conv's prep copies rows the other thread's pool wrote. With restrict
    buffer arguments gcc hoisted those loads above the spinning barrier (stale rows in ~1 of 3 calls)."""
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2, 3, 0), nn.Conv2d(4, 4, 1)).eval()
    x = torch.randn(2, 3, 8, 7, generator=torch.Generator().manual_seed(7))
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    with torch.no_grad():
        for _ in range(100):
            assert rel_err(cm(x), m(x)) <= 1e-5


@pytest.mark.parametrize("size", [64, 224])
def test_vgg16_with_its_shape_checking_head_compiles_whole(size):
    """timm's VGG head branches on x.shape (fx cannot trace it): traced with the example's values, the branch
    the example takes (pool up to 7x7 below 224) becomes the graph, and the whole model runs natively."""
    torch.manual_seed(0)
    m = prune_for_deployment(create_model("timm_vgg16", num_classes=10, width=0.125), r"features\.0")
    x = torch.randn(2, 3, size, size)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    assert cm.network is not None and cm.torch_nodes() == {}, cm.network_reason
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


class _ShapeLoops(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        dims = [d for d in x.shape]  # iteration over a shape
        y = self.conv(x)
        if int(y.size(1)) > 4 and dims[-1] % 2 == 0:
            y = torch.relu(y)
        return y.flatten(1) * float(dims[1])


def test_concrete_tracer_answers_python_from_the_example():
    m = _ShapeLoops().eval()
    x = torch.randn(2, 3, 6, 8)
    cm = tessera.runtime.compile(m, x[:1], threads=1, _force="sparse")
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
        other = torch.randn(2, 3, 6, 7)  # an odd width takes the other branch: the source model answers
        with pytest.warns(UserWarning, match="runs the original model"):
            assert rel_err(cm(other), m(other)) <= 1e-6


def test_profile_names_every_native_node(compiled_arch):
    """compiled.profile(x): a row per node that emits code (in execution order) plus the output copy, each a
    non-negative time; the sum is positive. Timings themselves are not asserted."""
    m, cm = compiled_arch
    x = torch.randn(1, 3, 48, 48)
    rows = cm.profile(x, rounds=3)
    names = [n for n, _ in rows]
    graph_names = [n.name for n in cm.graph.graph.nodes]
    assert names[-1] == "output copy" and set(names[:-1]) <= set(graph_names)
    assert names[:-1] == sorted(names[:-1], key=graph_names.index)
    assert all(t >= 0 for _, t in rows) and sum(t for _, t in rows) > 0
    assert sum(1 for n in names if "fused" in n) >= 5


def test_profile_needs_the_native_function():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    cm = tessera.runtime.compile(m, torch.randn(1, 3, 8, 8), threads=1, network=False, _force="sparse")
    with pytest.raises(InputError, match="network=True"):
        cm.profile(torch.randn(1, 3, 8, 8))
