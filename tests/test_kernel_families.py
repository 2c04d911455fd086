"""The kernel-family registry: every family's candidates, on every target this machine runs, against torch (FKW
convs and unaligned blocks layer by layer, depthwise and grouped convs in the whole-network function); duplicates
refused; each parameter set belongs to exactly one family and survives its JSON form."""

import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tessera.compiler.block_format import pack_blocks
from tessera.compiler.block_kernel import BlockLibrary
from tessera.compiler.formats import pack_conv
from tessera.compiler.geometry import ConvGeometry, KernelParams, shift_copies
from tessera.compiler.graph import fuse, trace
from tessera.compiler.kernel import LayerLibrary
from tessera.compiler.kernels import (
    conv_candidates,
    family_of,
    get_family,
    list_families,
    params_from_dict,
    params_to_dict,
    register_family,
)
from tessera.compiler.kernels.shifted import ShiftedParams
from tessera.compiler.network import NetworkKernel
from tessera.compiler.network_emit import emit_network
from tessera.compiler.network_plan import SparseConv, WindowConv, plan_network
from tessera.compiler.target import TARGETS, host_target
from tessera.sparsity import PatternLibrary, pattern_connectivity_mask

TARGETS_HERE = [host_target()] + [t for t in TARGETS.values() if t.runs_here() and
                                  t.vector_width != host_target().vector_width]
LAYERS = [  # (cin, cout, h, w, stride, pad): shapes where each family has candidates on some width
    (16, 16, 16, 16, 1, 1), (8, 12, 7, 7, 1, 1), (16, 16, 16, 16, 2, 1), (6, 10, 9, 13, 1, 1), (16, 8, 32, 32, 2, 1),
    (8, 8, 28, 28, 2, 1), (5, 7, 13, 11, 2, 1),  # stride 2 on padded phase rows rounded up to whole vectors
]


FAMILIES = ["pattern_loops", "channel_blocked", "shifted", "unaligned_block", "depthwise", "grouped"]
FKW = ["pattern_loops", "channel_blocked", "shifted"]


def test_registry_lists_and_refuses_duplicates():
    assert list_families() == FAMILIES

    class Impostor:
        name = "shifted"

    with pytest.raises(ValueError, match="already registered"):
        register_family(Impostor())
    register_family(get_family("shifted"))  # the same family again (a second import) is not a duplicate

    class Borrower:  # a new family reusing another's parameter dataclass
        name, format, params = "borrower", "fkw", get_family("shifted").params

    with pytest.raises(ValueError, match="parameters of its own"):
        register_family(Borrower())
    assert "borrower" not in list_families()


def test_params_belong_to_one_family_and_survive_json():
    @dataclass(frozen=True)
    class Stray(KernelParams):
        family: ClassVar[str] = "shifted"  # claims a family it is not the dataclass of

    for name in FAMILIES:
        p = get_family(name).params(2, 16)
        assert family_of(p).name == name and params_from_dict(params_to_dict(p)) == p
    with pytest.raises(ValueError, match="no registered kernel family"):
        family_of(Stray(4, 8))
    # decisions in artifacts written before families had parameters of their own: read by their flags
    legacy = {(2, 8, 0, False): "pattern_loops", (4, 16, 3, False): "channel_blocked", (4, 8, 1, True): "shifted"}
    for (r, vw, cb, sh), name in legacy.items():
        p = params_from_dict({"r": r, "vw": vw, "cblock": cb, "shift": sh})
        assert family_of(p).name == name and (p.r, p.vw, p.cblock, p.shift) == (r, vw, cb, sh)
    for bad in ({"family": "z80", "r": 1}, {"family": "shifted", "r": 1, "tile": 3}, {"family": 3}):
        with pytest.raises(ValueError):
            params_from_dict(bad)


def test_registry_is_whole_whichever_module_imports_first():
    """A family module imported on its own (the tuner imports one) must not hide the others from the registry."""
    code = ("import tessera.compiler.tune, tessera.compiler.compile; from tessera.compiler.kernels import "
            "list_families, conv_candidates; print(list_families(), len(conv_candidates(16, 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("]")[0] + "]" == str(FAMILIES) and out.split()[-1] == "2"


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
@pytest.mark.parametrize("family", FKW)
def test_every_fkw_family_on_every_target_matches_torch(family, target):
    lib = PatternLibrary.default(6)
    vw = target.vector_width
    tried = 0
    for i, (cin, cout, h, w, s, pad) in enumerate(LAYERS):
        g = torch.Generator().manual_seed(i)
        weight = torch.randn(cout, cin, 3, 3, generator=g)
        weight = weight * pattern_connectivity_mask(weight, lib, 0.5)
        bias = torch.randn(cout, generator=g)
        packed = pack_conv(weight, bias)
        geom = ConvGeometry(cin, cout, h, w, 3, 3, s, pad, pad)
        cands = tuple(get_family(family).candidates(vw, packed.group, geom, list(packed.patterns),
                                                     target.registers))
        if not cands:
            continue
        assert all(family_of(c).name == family for c in cands)
        assert set(cands) <= set(conv_candidates(vw, packed.group, geom, list(packed.patterns), target.registers))
        layer = LayerLibrary(packed, geom, cands, "relu", True, target)
        x = torch.randn(2, cin, h, w, generator=g)
        ref = F.conv2d(x, weight, bias, s, pad)
        res = torch.randn(ref.shape, generator=g)
        want = (ref + res).relu()
        for k in range(len(cands)):
            got = layer.kernel(k)(x, res, 2)
            assert float((got - want).abs().max() / want.abs().max()) <= 1e-5, (cands[k], LAYERS[i])
            tried += 1
    assert tried > 0, f"{family} offered no candidate on {target.name}"


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
def test_block_family_on_every_target_matches_torch(target):
    """Each unaligned-block candidate on a 1x1 conv (strided too) and a Linear layer, layer by layer."""
    from tessera.sparsity.blocks import select_blocks

    family = get_family("unaligned_block")
    for i, (cin, cout, stride, linear) in enumerate([(24, 40, 1, False), (16, 36, 2, False), (32, 20, 1, True)]):
        g = torch.Generator().manual_seed(10 + i)
        w2 = torch.randn(cout, cin, generator=g)
        weight = (w2 * select_blocks(w2.square(), 4, round(0.3 * cout * cin / 4)).mask).reshape(cout, cin, 1, 1)
        bias = torch.randn(cout, generator=g)
        packed = pack_blocks(weight if not linear else weight.reshape(cout, cin), bias)
        cands = family.candidates(target.vector_width, packed.n)
        assert cands and all(family_of(c) is family for c in cands)
        lib = BlockLibrary(packed, target, "relu", False, stride, linear)
        x = torch.randn(3, cin, 9, 11, generator=g) if not linear else torch.randn(5, cin, generator=g)
        want = (F.conv2d(x, weight, bias, stride) if not linear else F.linear(x, weight.reshape(cout, cin), bias))
        for k in range(len(cands)):
            got = lib.kernel(k)(x, None, 2)
            assert float((got - want.relu()).abs().max() / want.abs().max()) <= 1e-5, cands[k]


class _Windows(nn.Module):
    """Depthwise 3x3 stride 1 and 5x5 stride 2, and a grouped 3x3 (4 groups) with ReLU6, between dense 1x1s."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.dw3 = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.dw5 = nn.Conv2d(16, 16, 5, 2, 2, groups=16)
        self.gr = nn.Conv2d(16, 24, 3, 1, 1, groups=4)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.a(x)
        return self.act(self.gr(self.act(self.dw5(self.act(self.dw3(x))))))


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
def test_window_families_on_every_target_match_torch(target):
    torch.manual_seed(0)
    m = _Windows().eval()
    x = torch.randn(2, 3, 19, 21)
    gm = fuse(trace(m, x[:1]))
    plan = plan_network(gm, {}, target, 2)
    used = {family_of(s.op.params).name for s in plan.steps if isinstance(s.op, WindowConv | SparseConv)}
    assert {"depthwise", "grouped"} <= used
    with torch.no_grad():
        got, want = NetworkKernel(plan, 2)(x), m(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


class _Strided(nn.Module):
    """A pattern-sparse 3x3 stride-2 conv ``b`` on a network buffer that a dense stride-1 conv ``c`` also reads:
    in place in the tight layout (no zero columns) where the width is whole vectors, else the padded one."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, 1, 1)
        self.b = nn.Conv2d(16, 24, 3, 2, 1)
        self.c = nn.Conv2d(16, 24, 3, 1, 1)
        with torch.no_grad():
            self.b.weight *= pattern_connectivity_mask(self.b.weight, PatternLibrary.default(6), 0.5)

    def forward(self, x):
        y = F.relu(self.a(x))
        return F.relu(self.b(y)) + F.max_pool2d(F.relu(self.c(y)), 2)


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
@pytest.mark.parametrize("hw", [(28, 28), (26, 22), (16, 16), (8, 8)])
def test_shifted_stride2_in_the_network_matches_torch(target, hw):
    """The shifted kernel at stride 2 on padded phase rows rounded up to whole vectors, its prep copying whole
    vectors (even-lane shuffles, the lanes outside the image masked to zero); and on tight phase rows."""
    torch.manual_seed(1)
    m = _Strided().eval()
    x = torch.randn(3, 3, *hw)
    gm = fuse(trace(m, x[:1]))
    vw = target.vector_width
    conv = next(n.target for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith("b"))
    plan = plan_network(gm, {conv: ShiftedParams(2, vw, 16)}, target, 2)
    conv = [s.op for s in plan.steps if isinstance(s.op, SparseConv) and s.op.geom.stride == 2]
    assert len(conv) == 1 and conv[0].params == ShiftedParams(2, vw, 16)
    assert conv[0].in_layout.tight == (hw[1] % vw == 0 or 2 * hw[1] == vw)
    if shift_copies(conv[0].geom, conv[0].params) == 1:  # phase rows of half a vector take two copies, scalar
        assert "__builtin_shuffle(ld(sr" in emit_network(plan)
    with torch.no_grad():
        got, want = NetworkKernel(plan, 2)(x), m(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


class _Inverted(nn.Module):
    """MobileNetV2/EfficientNet's inverted residual: a 1x1 expansion with ``act``, a depthwise conv (``k``,
    ``stride``) with ReLU6, a 1x1 projection; ``tap``: the expansion is also read by a second node, so it cannot
    run inside the depthwise conv."""

    def __init__(self, act: nn.Module, k: int, stride: int, tap: bool = False, width: int = 24):
        super().__init__()
        self.expand = nn.Conv2d(8, width, 1)
        self.dw = nn.Conv2d(width, width, k, stride, k // 2, groups=width)
        self.project = nn.Conv2d(width, 8, 1)
        self.gate = nn.Conv2d(width, 8, 1)
        self.act, self.tap = act, tap
        with torch.no_grad():  # a sparse expansion, as the deployment targets leave it
            self.expand.weight *= (torch.rand(self.expand.weight.shape) < 0.3).float()

    def forward(self, x):
        e = self.act(self.expand(x))
        y = self.project(F.relu6(self.dw(e)))
        return y * torch.sigmoid(self.gate(e.mean((2, 3), keepdim=True))) if self.tap else y


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
@pytest.mark.parametrize("act,k,stride,hw,width", [
    (nn.ReLU6(), 3, 1, (13, 11), 24), (nn.SiLU(), 3, 2, (16, 18), 24), (nn.Sigmoid(), 5, 2, (9, 12), 22),
    (nn.Hardswish(), 5, 1, (20, 7), 5)])
def test_pointwise_runs_inside_its_depthwise_reader_and_matches_torch(monkeypatch, target, act, k, stride, hw, width):
    """With the size rule lifted (FUSE_BYTES 0), the expansion runs inside the depthwise conv a group of channels
    at a time (the last group partial with 22 and 5 channels; the planes' zero columns stay zero under sigmoid,
    whose f(0) is not 0); read by a second node it runs alone."""
    import tessera.compiler.network_plan as network_plan
    from tessera.compiler.network_plan import PointwiseDepthwise

    monkeypatch.setattr(network_plan, "FUSE_BYTES", 0)
    for tap in (False, True):
        torch.manual_seed(2)
        m = _Inverted(act, k, stride, tap, width).eval()
        x = torch.randn(3, 8, *hw)
        gm = fuse(trace(m, x[:1]))
        plan = plan_network(gm, {}, target, 2)
        assert any(isinstance(s.op, PointwiseDepthwise) for s in plan.steps) != tap
        with torch.no_grad():
            got, want = NetworkKernel(plan, 2)(x), m(x)
        assert float((got - want).abs().max() / want.abs().max()) <= 1e-5, tap


class _Excite(nn.Module):
    """Squeeze-excitation's gate, then a block-sparse 1x1 conv (``dense``: a plain one); ``tap``: the gated
    tensor is also read by a second node."""

    def __init__(self, tap: bool = False, dense: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.proj, self.side = nn.Conv2d(16, 12, 1), nn.Conv2d(16, 12, 1)
        self.tap = tap
        if not dense:
            with torch.no_grad():  # 1x4 blocks down the output channels, about a third kept
                keep = (torch.rand(3, 16) < 0.35).float().repeat_interleave(4, 0)
                self.proj.weight *= keep[:, :, None, None]

    def forward(self, x):
        y = F.relu(self.conv(x))
        z = y * torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        out = self.proj(z)
        return out + self.side(z) if self.tap else out


@pytest.mark.parametrize("tap,dense", [(False, False), (True, False), (False, True)])
def test_gate_folds_into_the_block_conv_that_reads_it(tap, dense):
    """x * g read only by a block-sparse 1x1 conv: the conv scales its block values by g (ScaleBlocks) and the
    gate makes no pass over the image; read elsewhere too, or by a dense conv, the gate runs as a step. Against
    torch at 2 threads (the scaled values are written by both threads before either conv tile reads them)."""
    import tessera.runtime
    from tessera.compiler.network_plan import Gate, ScaleBlocks

    torch.manual_seed(3)
    m = _Excite(tap, dense).eval()
    x = torch.randn(3, 8, 12, 10)
    cm = tessera.runtime.compile(m, x[:1], threads=2, tune=False, network=True)
    ops = {type(s.op) for s in cm.network.plan.steps}
    assert (ScaleBlocks in ops, Gate in ops) == ((True, False) if not (tap or dense) else (False, True))
    with torch.no_grad():
        got, want = cm(x), m(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
