import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tessera
import tessera.runtime
from tessera.compiler.formats import pack_conv, unpack_conv
from tessera.compiler.kernels import params_to_dict
from tessera.compiler.target import host_target
from tessera.errors import CheckpointError, CompileError
from tessera.models import create_model, list_models
from tessera.pruning.sparsifier import prune_oneshot
from tessera.sparsity import PatternLibrary, connectivity_mask, pattern_connectivity_mask, pattern_mask
from tessera.sparsity.patterns import grouped_pattern_connectivity_mask

LIB = PatternLibrary.default(8)


def sparsify(w, kind, seed=0):
    if kind == "dense":
        return w
    if kind == "pattern":
        return w * pattern_mask(w, LIB)
    if kind == "pattern_connectivity":
        return w * pattern_connectivity_mask(w, LIB, 0.3)
    if kind == "pattern_group":  # filters in aligned groups share kernels and patterns
        return w * grouped_pattern_connectivity_mask(w, LIB, 0.3, 4 if w.shape[0] % 4 == 0 else 2)
    return w * connectivity_mask(w, 0.4)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@st.composite
def conv_cases(draw):
    k = draw(st.sampled_from([1, 3, 3, 3, 5]))
    kind = draw(st.sampled_from(["dense", "pattern", "pattern_connectivity", "connectivity", "pattern_group"]
                                if k == 3 else ["dense", "connectivity"]))
    cin = draw(st.integers(1, 512))
    cout = draw(st.integers(1, 512))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.sampled_from([0, 1, 2]))
    h = draw(st.integers(max(1, k - 2 * pad), 64))
    w = draw(st.integers(max(1, k - 2 * pad), 64))
    budget = 3_000_000  # keep each example's reference conv cheap
    while cin * cout * h * w * k * k // (stride * stride) > budget and max(cin, cout) > 1:
        cin, cout = max(1, cin // 2), max(1, cout // 2)
    batch = draw(st.integers(1, 4))
    bias = draw(st.booleans())
    return k, kind, cin, cout, stride, pad, h, w, batch, bias, draw(st.integers(0, 2**16))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(conv_cases(), st.booleans())
def test_sparse_conv_matches_torch(case, relu):
    k, kind, cin, cout, stride, pad, h, w, batch, bias, seed = case
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(sparsify(torch.randn(conv.weight.shape, generator=g), kind))
        if bias:
            conv.bias.copy_(torch.randn(cout, generator=g))
    model = nn.Sequential(conv, nn.ReLU()) if relu else nn.Sequential(conv)
    x = torch.randn(batch, cin, h, w, generator=g)
    cm = tessera.runtime.compile(model, x, threads=2, network=False, _force="sparse")
    assert cm.plans[0].decision.backend == "sparse"
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= 1e-5


@given(st.integers(1, 40), st.integers(1, 40),
       st.sampled_from(["pattern", "pattern_connectivity", "connectivity", "pattern_group"]), st.integers(0, 999))
def test_fkw_roundtrip(cout, cin, kind, seed):
    w = sparsify(torch.randn(cout, cin, 3, 3, generator=torch.Generator().manual_seed(seed)), kind)
    p = pack_conv(w)
    assert torch.equal(unpack_conv(p), w)
    assert sorted(p.reorder.tolist()) == list(range(cout))
    if kind == "pattern_group" and cout % 4 == 0 and cout > 4:
        assert p.group == 4
    b = p.bytes()
    # FKW - CSR = 4 * (K * cout - 3 * kernels) bytes with K = 8 patterns: FKW is smaller once a filter keeps
    # more than K/3 kernels (cin >= 16 at keep 0.3); below that the per-(filter, pattern) offsets dominate
    if kind == "pattern_connectivity" and cin >= 16:
        assert b["fkw"] < b["csr"] < b["dense"]


def pruned(name, cin):
    torch.manual_seed(0)
    m = create_model(name, in_channels=cin).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2)
    return prune_oneshot(m, [{"op": "Conv2d", "kernel": 3}], {"scheme": "pattern_connectivity", "num_patterns": 8,
                                                              "keep": 0.3})


@pytest.mark.parametrize("network", [False, True])
@pytest.mark.parametrize("name", [n for n in list_models() if n != "resnet56" and not n.startswith(("tv_", "timm_"))])
def test_zoo_models_compile_and_match(name, network):
    cin = 1 if name.startswith("vgg") else 3
    m = pruned(name, cin)
    x = torch.randn(2, cin, 32, 32)
    cm = tessera.runtime.compile(m, x, threads=2, network=network, _force="sparse")
    native = network  # every zoo model, mobilenetv2 (depthwise, ReLU6) too, runs as one native function
    assert (cm.network is not None) == native, cm.network_reason
    assert sum(p.decision.backend == "sparse" for p in cm.plans) >= 4
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
        assert rel_err(cm(x[:1]), m(x[:1])) <= 1e-5  # another batch size
    assert "pattern_connectivity" in cm.report()


def test_tuned_compile_and_fallbacks():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, padding=2, dilation=2)
            self.c = nn.Conv2d(16, 16, 3, padding=1, groups=4)
            self.pool = nn.AdaptiveMaxPool2d(2)  # not a conv: stays in torch

        def forward(self, x):
            return self.pool(torch.sigmoid(self.c(self.b(self.a(x)))))

    m = Net().eval()
    with torch.no_grad():
        for conv in (m.a, m.b, m.c):
            conv.weight.mul_(pattern_mask(conv.weight, LIB))
    x = torch.randn(1, 3, 12, 12)
    cm = tessera.compile(m, x, threads=1)
    reasons = {p.source: p.decision.reason for p in cm.plans}
    assert "dilation" in reasons["b"] and "groups" in reasons["c"]
    assert cm.plans[0].decision.torch_ms is not None  # measured, whichever won
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


def test_no_compiler_warns_and_runs_torch(monkeypatch):
    from tessera.compiler import compile as cmod

    monkeypatch.setattr(cmod, "find_compiler", lambda: None)
    m = pruned("vgg_tiny", 1)
    x = torch.randn(1, 1, 8, 8)
    with pytest.warns(UserWarning, match="no C compiler"):
        cm = tessera.compile(m, x)
    assert all(p.decision.backend == "dense" for p in cm.plans)
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-6


def test_artifact_roundtrip_and_corruption(tmp_path):
    m = pruned("resnet20", 3)
    x = torch.randn(1, 3, 16, 16)
    cm = tessera.runtime.compile(m, x, threads=1, _force="sparse")
    path = tmp_path / "m.tsr"
    cm.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same machine: no rebuild warning
        cm2 = tessera.load(path)
    assert [p.decision.backend for p in cm2.plans] == [p.decision.backend for p in cm.plans]
    with torch.no_grad():
        assert rel_err(cm2(x), m(x)) <= 1e-5
    data = path.read_bytes()
    (tmp_path / "trunc.tsr").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        tessera.load(tmp_path / "trunc.tsr")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.tsr").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        tessera.load(tmp_path / "flip.tsr")


def test_artifact_from_other_machine_rebuilds(tmp_path, monkeypatch):
    from tessera.runtime import compiled

    m = pruned("vgg_tiny", 1)
    x = torch.randn(1, 1, 8, 8)
    cm = tessera.compile(m, x, threads=1, tune=False)
    monkeypatch.setattr(compiled, "machine_fingerprint", lambda target=None: "other-machine")
    cm.save(tmp_path / "a.tsr")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="rebuilt and layers re-tuned"):
        cm2 = tessera.load(tmp_path / "a.tsr")
    with torch.no_grad():
        assert rel_err(cm2(x), m(x)) <= 1e-5


def test_bad_example_input():
    with pytest.raises(CompileError, match="float32 NCHW"):
        tessera.compile(create_model("vgg_tiny"), torch.zeros(1, 8, 8))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=15)
@given(conv_cases(), st.booleans())
def test_every_tuning_candidate_matches_torch(case, relu):
    """Every candidate the tuner may pick — per-pattern loops and channel-blocked tap lists — is exact."""
    from tessera.compiler.geometry import ConvGeometry
    from tessera.compiler.kernel import LayerLibrary
    from tessera.compiler.kernels import conv_candidates as candidates

    k, kind, cin, cout, stride, pad, h, w, batch, bias, seed = case
    g = torch.Generator().manual_seed(seed)
    weight = sparsify(torch.randn(cout, cin, k, k, generator=g), kind)
    b = torch.randn(cout, generator=g) if bias else None
    x = torch.randn(batch, cin, h, w, generator=g)
    res_shape = torch.nn.functional.conv2d(x, weight, None, stride, pad).shape
    res = torch.randn(res_shape, generator=g)
    packed = pack_conv(weight, b)
    geom = ConvGeometry(cin, cout, h, w, k, k, stride, pad, pad)
    cands = candidates(host_target().vector_width, packed.group, geom, list(packed.patterns))
    assert any(c.cblock for c in cands) and any(not c.cblock for c in cands)
    lib = LayerLibrary(packed, geom, cands, relu, True)
    ref = torch.nn.functional.conv2d(x, weight, b, stride, pad) + res
    ref = ref.relu() if relu else ref
    for i in range(len(cands)):
        assert rel_err(lib.kernel(i)(x, res, 2), ref) <= 1e-5, cands[i]


@pytest.mark.parametrize("name, kind", [("vgg6", "cblock"), ("resnet20", "cblock"), ("vgg6", "shift"),
                                        ("resnet20", "shift")])
def test_network_with_channel_blocked_or_shifted_layers_matches(name, kind):
    """The whole-network function renders channel-blocked and shifted layers too (decisions as a saved artifact
    gives); shifted layers on tight rows read their input buffers in place, written tight by their producers."""
    cin = 1 if name.startswith("vgg") else 3
    m = pruned(name, cin)
    x = torch.randn(2, cin, 32, 32)
    probe = tessera.runtime.compile(m, x, threads=2, network=False, _force="sparse")
    decisions = {}
    for p in probe.plans:
        if kind == "shift" and p.weight_shape[-1] == 1:  # 1x1 shortcuts left dense: the network's default kernel
            decisions[p.name] = {"backend": "dense", "reason": "test"}
        elif p.decision.backend == "sparse":
            lib = probe.graph.get_submodule(p.name).kernel.layer
            blocked = [i for i, c in enumerate(lib.candidates) if c.cblock and not c.shift]
            idx = max((i for i, c in enumerate(lib.candidates) if c.shift), default=blocked[-1]) \
                if kind == "shift" else blocked[-1]
            decisions[p.name] = {"backend": "sparse", "reason": "test", "index": idx,
                                 "params": params_to_dict(lib.candidates[idx])}
    cm = tessera.runtime.compile(m, x, threads=2, network=True, _decisions=decisions)
    assert cm.network is not None and len(decisions) >= 4
    assert (cm.network.tight_buffers > 0) == (kind == "shift")
    if kind == "shift" and name == "resnet20":  # every stride-1 3x3 conv reads in place (rows of 8 too: the
        # buffer's second copy); only the two stride-2 convs copy first, and each 1x1 stride-2 shortcut reads the
        # subsample its stride-2 neighbour copied
        assert cm.network.prep_copies == 2
    if name == "resnet20":  # each stride-2 conv runs into its 1x1 shortcut without a barrier (same input)
        assert cm.network.barriers_removed == 2
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5


@pytest.mark.parametrize("cin, cout, h, w, pad, kind", [
    (16, 24, 56, 56, 1, "pattern_connectivity"),  # 58 -> 64 columns: first tile of a row needs the halo
    (32, 8, 13, 29, 0, "pattern"),  # odd, non-square, no padding
    (5, 3, 32, 32, 1, "dense"),  # 9-tap kernels
    (3, 70, 9, 20, 2, "pattern_connectivity"),
    (24, 16, 7, 7, 1, "pattern_connectivity"),  # AVX-512: rows of 8, half a vector: two input copies
    (6, 5, 3, 3, 1, "dense"),  # AVX2: rows of 4, half a vector: two input copies
    (16, 8, 16, 16, 1, "pattern_connectivity"),  # tight rows of 16 (AVX-512: one vector; AVX2: two)
    (24, 16, 8, 8, 1, "pattern_connectivity"),  # tight rows of 8: half a vector (AVX-512), one vector (AVX2)
    (12, 9, 5, 8, 1, "dense"),  # tight, 9 taps: both edge masks on every row
    (8, 8, 6, 32, 1, "pattern"),  # tight rows of two or four vectors
    (4, 6, 4, 4, 1, "pattern_connectivity"),  # AVX2: tight rows of 4, half a vector
    (5, 7, 16, 16, 2, "pattern"),  # padding 2: not tight, rows rounded up
])
@pytest.mark.parametrize("vw", [8, 16])
def test_shifted_kernel_matches_torch(cin, cout, h, w, pad, kind, vw):
    """The dx-shifted variant (aligned rows, one accumulator set per kernel column) against torch."""
    from tessera.compiler.geometry import ConvGeometry
    from tessera.compiler.kernel import LayerLibrary
    from tessera.compiler.kernels.shifted import ShiftedParams

    g = torch.Generator().manual_seed(cin * cout + vw)
    weight = sparsify(torch.randn(cout, cin, 3, 3, generator=g), kind)
    b = torch.randn(cout, generator=g)
    x = torch.randn(2, cin, h, w, generator=g)
    ref = torch.nn.functional.conv2d(x, weight, b, 1, pad)
    res = torch.randn(ref.shape, generator=g)
    packed = pack_conv(weight, b)
    geom = ConvGeometry(cin, cout, h, w, 3, 3, 1, pad, pad)
    if vw > host_target().vector_width:
        pytest.skip("16-float vectors need AVX-512")
    # built whether or not the tuner would offer it; one channel per block, one block; 8 vectors a tile
    cands = (ShiftedParams(4, vw, 1), ShiftedParams(4, vw, cin), ShiftedParams(8, vw, cin))
    lib = LayerLibrary(packed, geom, cands, True, True)
    for i in range(len(cands)):
        assert rel_err(lib.kernel(i)(x, res, 2), (ref + res).relu()) <= 1e-5


@pytest.mark.parametrize("cin, cout, h, w, kind", [
    (16, 24, 32, 32, "pattern_connectivity"),  # phase rows of 16: one vector (AVX-512), two (AVX2)
    (24, 16, 16, 16, "pattern_connectivity"),  # phase rows of 8: half a vector (AVX-512), two input copies
    (8, 8, 16, 64, "dense"),  # 9 taps: every phase plane, both accumulator sets; non-square
    (5, 7, 8, 8, "pattern"),  # phase rows of 4: half a vector with AVX2; not tight with AVX-512
    (3, 4, 4, 32, "dense"),  # two output rows
    (6, 8, 16, 32, "middle column"),  # taps at dx = 1 only: the prep copies just the plane they read
    (6, 8, 16, 32, "outer columns"),  # dx = 0 and 2 only
])
@pytest.mark.parametrize("vw", [8, 16])
def test_stride2_shifted_kernel_matches_torch(cin, cout, h, w, kind, vw):
    """Stride 2, 3x3, padding 1 against torch: on tight phase planes (two accumulator sets: column j - 1 and j)
    where the phase rows allow, else on padded phase rows rounded up to whole vectors (column j and j + 1); the
    tuner offers it wherever the phase rows are tight. Other stride-2 kernels are refused."""
    from tessera.compiler.geometry import ConvGeometry, shift_applies, tight_rows
    from tessera.compiler.kernel import LayerLibrary
    from tessera.compiler.kernels.shifted import ShiftedParams

    if vw > host_target().vector_width:
        pytest.skip("16-float vectors need AVX-512")
    geom = ConvGeometry(cin, cout, h, w, 3, 3, 2, 1, 1)
    assert shift_applies(geom, 1, vw) or not tight_rows(geom, vw)
    with pytest.raises(ValueError, match="stride-2 3x3 convs only"):
        LayerLibrary(pack_conv(torch.ones(cout, cin, 5, 5), None), ConvGeometry(cin, cout, h, w, 5, 5, 2, 2, 2),
                     (ShiftedParams(4, vw, cin),), False, False)
    g = torch.Generator().manual_seed(cin * cout + vw)
    weight = torch.randn(cout, cin, 3, 3, generator=g)
    if kind.endswith("columns") or kind.endswith("column"):
        cols = torch.tensor([0.0, 1.0, 0.0]) if kind == "middle column" else torch.tensor([1.0, 0.0, 1.0])
        weight = weight * cols
    else:
        weight = sparsify(weight, kind)
    b = torch.randn(cout, generator=g)
    x = torch.randn(2, cin, h, w, generator=g)
    ref = torch.nn.functional.conv2d(x, weight, b, 2, 1)
    res = torch.randn(ref.shape, generator=g)
    packed = pack_conv(weight, b, group_sizes=())
    unit = max(1, geom.wo // vw) if tight_rows(geom, vw) else 1  # vectors of a whole phase row
    cands = (ShiftedParams(unit, vw, 1), ShiftedParams(unit, vw, cin), ShiftedParams(4 * unit, vw, cin))
    lib = LayerLibrary(packed, geom, cands, True, True)
    for i in range(len(cands)):
        assert rel_err(lib.kernel(i)(x, res, 2), (ref + res).relu()) <= 1e-5, cands[i]


def test_stride1_rows_share_one_zero_column_and_tiles_fit_them():
    """A 3x3 pad-1 conv on 7 columns runs on rows of 8 (the zero column between rows is both borders), so its 49
    outputs take 7 vectors and the fitted tile is exactly those 7 (rows of 9 needed 8 vectors, 15 wasted)."""
    from tessera.compiler.geometry import ConvGeometry, padded_pitch, padded_plane
    from tessera.compiler.kernels.channel_blocked import fitted_tile

    g = ConvGeometry(512, 512, 7, 7, 3, 3, 1, 1, 1)
    assert (g.wph, g.wide, g.plane) == (8, 56, 9 * 8) and g.plane == padded_plane(7, 7) and padded_pitch(7) == 8
    assert fitted_tile(g, 8) == 7
    assert ConvGeometry(3, 3, 7, 7, 3, 3, 2, 1, 1).wph == 5  # stride 2 keeps its phase planes
    x = torch.randn(1, 5, 7, 7)
    conv = nn.Conv2d(5, 6, 3, 1, 1).eval()
    with torch.no_grad():  # a tap past the row's end reads the next row's zero column: results stay exact
        conv.weight.mul_(pattern_mask(conv.weight, PatternLibrary.default(8)))
        cm = tessera.compile(conv, x, threads=1, tune=False)
        torch.testing.assert_close(cm(x), conv(x), rtol=1e-5, atol=1e-5)


def test_row_band_tiles_give_every_thread_rows():
    """Row-band parameters: a tile of at most 20 (AVX-512) / 14 (AVX2) vectors, at least one tile per thread,
    one channel block — so no filter of a tile runs on another thread."""
    from tessera.compiler.geometry import ConvGeometry
    from tessera.compiler.tune import row_band_params

    for hw, stride, vw, threads in [(32, 1, 16, 2), (8, 1, 16, 2), (16, 2, 8, 2), (56, 1, 8, 3), (7, 1, 16, 4)]:
        g = ConvGeometry(24, 40, hw, hw, 3, 3, stride, 1, 1)
        k = row_band_params(g, threads, vw)
        ntiles = -(-g.wide // (k.r * vw))
        assert k.r <= (20 if vw > 8 else 14) and k.cblock == g.cin and not k.shift
        assert ntiles >= min(threads, -(-g.wide // vw)), (hw, threads, k)


def test_network_in_row_bands_matches_and_survives_save(tmp_path):
    """The whole-network function with row-band parameters (its own, not the layers' decisions) matches torch,
    and an artifact keeps those parameters."""
    from types import SimpleNamespace

    from tessera.compiler.compile import _row_bands

    m = pruned("resnet20", 3)
    x = torch.randn(2, 3, 32, 32)
    probe = tessera.runtime.compile(m, x, threads=2, network=False, _force="sparse")
    decisions = {p.name: p.decision.to_json() for p in probe.plans}
    bands = _row_bands(SimpleNamespace(plans=probe.plans), 2, host_target())
    bands = {k: params_to_dict(v) for k, v in bands.items()}
    assert len(bands) >= 19
    cm = tessera.runtime.compile(m, x, threads=2, network=True, _decisions=decisions, _network_params=bands)
    assert cm.network is not None and cm.network_params == bands
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
    cm.save(tmp_path / "bands.tsr")
    cm2 = tessera.load(tmp_path / "bands.tsr")
    assert cm2.network is not None and cm2.network_params == bands
    with torch.no_grad():
        assert rel_err(cm2(x), m(x)) <= 1e-5


def test_tuning_flag_only_for_an_avx512_cpu_the_compiler_does_not_know():
    from tessera.compiler.target import pick_tune

    assert pick_tune("znver3", True) == ("-mtune=icelake-server",)  # gcc 12 on Zen 5
    assert pick_tune("znver4", True) == () and pick_tune("sapphirerapids", True) == ()
    assert pick_tune("znver3", False) == () and pick_tune(None, True) == ()


@pytest.mark.parametrize("oversubscribed", [False, True])
def test_network_threads_join_at_spin_barrier_or_openmp(oversubscribed):
    """With a core per thread the whole-network function joins its threads at its own spinning barrier; with
    more threads than cores at OpenMP's. Either way repeated calls give the same, correct output (a missing join
    would let a layer read rows its neighbour has not written yet)."""
    import os

    threads = (os.cpu_count() or 1) + 1 if oversubscribed else 2
    m = pruned("resnet20", 3)
    x = torch.randn(3, 3, 32, 32)
    cm = tessera.runtime.compile(m, x[:1], threads=threads, network=True, _force="sparse")
    assert cm.network is not None and cm.network.spin_barrier == (threads <= (os.cpu_count() or 1))
    with torch.no_grad():
        ref, first = m(x), cm(x)
        assert rel_err(first, ref) <= 1e-5
        for _ in range(30):
            assert torch.equal(cm(x), first)
