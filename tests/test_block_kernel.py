"""Block-sparse format and kernel (unaligned block pruning): parity with torch, format round trip, detection."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tessera.runtime
from tessera.compiler.block_format import pack_blocks, unpack_blocks
from tessera.models import create_model
from tessera.pruning.sparsifier import prune_oneshot
from tessera.sparsity import analyse_conv
from tessera.sparsity.blocks import block_cover, select_blocks


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def block_sparse(cout, cin, n, keep, method, g):
    w = torch.randn(cout, cin, generator=g)
    if n > cout:
        return w
    k = min(max(1, round(keep * cout * cin / n)), (cout // n) * cin)
    return w * select_blocks(w.square(), n, k, method).mask


@st.composite
def block_cases(draw):
    n = draw(st.sampled_from([2, 4]))
    cout = draw(st.integers(n, 512))
    cin = draw(st.integers(1, 512))
    h, w = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    while cin * cout * h * w > 3_000_000 and max(cin, cout) > n:
        cin, cout = max(1, cin // 2), max(n, cout // 2)
    return (n, cout, cin, h, w, draw(st.sampled_from([1, 2])), draw(st.integers(1, 4)), draw(st.booleans()),
            draw(st.sampled_from(["aligned", "bed", "optimal"])), draw(st.floats(0.05, 0.6)),
            draw(st.integers(0, 2**16)))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(block_cases(), st.booleans())
def test_block_conv1x1_matches_torch(case, relu):
    n, cout, cin, h, w, stride, batch, bias, method, keep, seed = case
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 1, stride, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(block_sparse(cout, cin, n, keep, method, g)[:, :, None, None])
        if bias:
            conv.bias.copy_(torch.randn(cout, generator=g))
    model = nn.Sequential(conv, nn.ReLU()) if relu else nn.Sequential(conv)
    x = torch.randn(batch, cin, h, w, generator=g)
    cm = tessera.runtime.compile(model, x, threads=2, network=False, _force="sparse")
    plan = cm.plans[0]
    assert plan.decision.backend == "sparse"
    if float((conv.weight != 0).float().mean()) < 0.999:  # a full budget is just dense
        assert plan.kind == "block", "a selection's mask must read back as block sparsity"
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= 1e-5


@settings(deadline=None)
@given(st.integers(8, 300), st.integers(2, 300), st.integers(1, 9), st.booleans(), st.integers(0, 999))
def test_block_linear_matches_torch(cout, cin, batch, relu, seed):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(cin, cout)
    with torch.no_grad():
        lin.weight.copy_(block_sparse(cout, cin, 4, 0.2, "bed", g))
    model = nn.Sequential(nn.Flatten(), lin, nn.ReLU()) if relu else nn.Sequential(nn.Flatten(), lin)
    x = torch.randn(batch, cin, generator=g)
    cm = tessera.runtime.compile(model, x[:, :, None, None], threads=2, network=False, _force="sparse")
    assert [p.kind for p in cm.plans] == ["block"] and cm.plans[0].decision.backend == "sparse"
    with torch.no_grad():
        xi = x[:, :, None, None]
        assert rel_err(cm(xi), model(xi)) <= 1e-5


@given(st.integers(2, 40), st.integers(1, 30), st.sampled_from([2, 3, 4]), st.integers(0, 999))
def test_pack_roundtrip_and_rotation(cout, cin, n, seed):
    if n > cout:
        n = cout
    g = torch.Generator().manual_seed(seed)
    w = block_sparse(cout, cin, n, 0.3, "bed", g)
    lay = analyse_conv(w[:, :, None, None])
    if lay.kind != "block":
        return
    p = pack_blocks(w, None, lay)
    assert torch.equal(unpack_blocks(p), w)
    starts = torch.repeat_interleave(torch.arange(p.row_ptr.size - 1), torch.from_numpy(p.row_ptr).diff().long())
    for k in range(p.blocks):  # lane l holds the block's row congruent to l mod N
        for lane in range(p.n):
            row = int(starts[k]) + (lane - int(starts[k])) % p.n
            v = float(p.values[k, lane])  # 0 where a clamped block overlaps its neighbour
            assert v == 0.0 or v == float(w[row, int(p.cols[k])])


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 4), st.integers(0, 999))
def test_block_cover_is_minimal(m, cols, n, seed):
    """Greedy cover vs brute force over every set of window starts of one column."""
    if n > m:
        n = m
    nz = torch.rand(m, cols, generator=torch.Generator().manual_seed(seed)) < 0.35
    cover = block_cover(nz, n)
    covered = torch.zeros_like(nz)
    for c, r in cover.tolist():
        assert 0 <= r <= m - n
        covered[r : r + n, c] = True
    assert bool(covered[nz].all())
    for c in range(cols):
        rows = torch.nonzero(nz[:, c]).flatten().tolist()
        best, size = None, 0
        while best is None:  # fewest windows covering the column's non-zeros
            import itertools
            for starts in itertools.combinations(range(m - n + 1), size):
                if all(any(s <= r < s + n for s in starts) for r in rows):
                    best = size
                    break
            size += 1
        assert int((cover[:, 0] == c).sum()) == best


def test_detection_reads_aligned_and_unaligned_blocks():
    g = torch.Generator().manual_seed(0)
    al = analyse_conv(block_sparse(64, 32, 4, 0.2, "aligned", g)[:, :, None, None])
    assert (al.kind, al.block_n, al.block_aligned) == ("block", 4, True)
    un = analyse_conv(block_sparse(64, 32, 4, 0.2, "optimal", g)[:, :, None, None])
    assert (un.kind, un.block_n, un.block_aligned) == ("block", 4, False)
    assert un.blocks.shape[0] == round(0.2 * 64 * 32 / 4)
    rand = torch.randn(64, 32, 1, 1, generator=g) * (torch.rand(64, 32, 1, 1, generator=g) < 0.2)
    assert analyse_conv(rand).kind != "block", "scattered zeros are not block sparsity"


def test_block_pruned_mobilenet_compiles_and_matches():
    torch.manual_seed(0)
    m = create_model("mobilenetv2", in_channels=3).eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2)
    m = prune_oneshot(m, [{"op": "Conv2d", "kernel": 1}, {"op": "Linear"}],
                      {"scheme": "block", "n": 4, "keep": 0.2, "method": "bed"})
    x = torch.randn(2, 3, 32, 32)
    cm = tessera.runtime.compile(m, x, threads=2, _force="sparse")
    kinds = [p.kind for p in cm.plans if p.decision.backend == "sparse"]
    assert kinds.count("block") >= 30
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
        assert rel_err(cm(x[:1]), m(x[:1])) <= 1e-5
    assert "block" in cm.report()


@pytest.mark.parametrize("method", ["aligned", "bed"])
def test_block_layer_tunes_against_dense(method):
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(128, 128, 1)
    with torch.no_grad():
        conv.weight.copy_(block_sparse(128, 128, 4, 0.2, method, g)[:, :, None, None])
    x = torch.randn(1, 128, 14, 14)
    cm = tessera.runtime.compile(nn.Sequential(conv), x, threads=1, network=False)
    d = cm.plans[0].decision
    assert d.torch_ms is not None and d.sparse_ms is not None  # both measured; which wins is not asserted
    with torch.no_grad():
        assert rel_err(cm(x), conv(x)) <= 1e-5


@pytest.mark.parametrize("pad", [0, 1])
def test_block_pruned_3x3_conv_reads_as_block_and_runs_exactly(pad):
    """A k x k conv pruned in blocks of its Cout x (Cin*k*k) matrix is reported as block sparsity and runs through
    the general kernel (the block kernel is for 1x1 and linear layers only)."""
    from tessera.sparsity import make_scheme

    g = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(16, 32, 3, padding=pad)
    with torch.no_grad():
        conv.weight.mul_(make_scheme("block", n=4, keep=0.2).mask(conv.weight))
    assert analyse_conv(conv.weight).kind == "block"
    x = torch.randn(2, 16, 12, 12, generator=g)
    cm = tessera.runtime.compile(nn.Sequential(conv), x, threads=2, network=False, _force="sparse")
    assert cm.plans[0].kind == "block" and cm.plans[0].bytes and "fkw" in cm.plans[0].bytes
    with torch.no_grad():
        assert rel_err(cm(x), conv(x)) <= 1e-5
