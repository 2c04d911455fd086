"""The generated C of every kernel family on small fixed layers, pinned: a refactor that changes what is emitted
fails here. Weights are built by arithmetic (no RNG), so the files are the same on every machine.

After an intended change, regenerate and review the diff: ``TESSERA_UPDATE_GOLDEN=1 pytest tests/test_golden_c.py``.
"""

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tessera.compiler.block_codegen import render_block_layer
from tessera.compiler.block_format import pack_blocks
from tessera.compiler.codegen import render_layer
from tessera.compiler.formats import pack_conv
from tessera.compiler.geometry import ConvGeometry
from tessera.compiler.graph import fuse, trace
from tessera.compiler.kernels.channel_blocked import ChannelBlockedParams
from tessera.compiler.kernels.pattern_loops import PatternLoopsParams
from tessera.compiler.kernels.shifted import ShiftedParams
from tessera.compiler.kernels.unaligned_block import BlockParams
from tessera.compiler.network_emit import emit_network
from tessera.compiler.network_plan import plan_network
from tessera.compiler.target import get_target

GOLDEN = Path(__file__).parent / "golden"
PATTERNS = [(0, 1, 4, 7), (1, 3, 4, 5), (3, 4, 5, 8), (1, 4, 5, 7)]  # taps of a 3x3 kernel, centre kept


def pattern_weight(cout: int, cin: int) -> torch.Tensor:
    """Kernel (o, i): pattern (o + 2i) mod 4, weights 1 + tap / 10; every third kernel removed."""
    w = torch.zeros(cout, cin, 3, 3)
    for o in range(cout):
        for i in range(cin):
            if (o + i) % 3 == 0:
                continue
            for t in PATTERNS[(o + 2 * i) % 4]:
                w[o, i, t // 3, t % 3] = 1 + t / 10
    return w


def block_weight(cout: int, cin: int, n: int = 4) -> torch.Tensor:
    """Column i keeps one block of ``n`` rows starting at row (3i) mod (cout - n + 1): unaligned starts."""
    w = torch.zeros(cout, cin, 1, 1)
    for i in range(cin):
        r = (3 * i) % (cout - n + 1)
        w[r:r + n, i, 0, 0] = torch.arange(1, n + 1, dtype=torch.float32) / (i + 1)
    return w


def _check(name: str, source: str) -> None:
    path = GOLDEN / f"{name}.c"
    if os.environ.get("TESSERA_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source)
    assert path.exists(), f"no golden file {path}; run with TESSERA_UPDATE_GOLDEN=1 to write it"
    assert source == path.read_text(), f"generated C of {name} changed; if intended, regenerate with " \
                                       "TESSERA_UPDATE_GOLDEN=1 and review the diff"


GEOM = ConvGeometry(4, 8, 8, 8, 3, 3, 1, 1, 1)
FAMILIES = {
    "pattern_loops": PatternLoopsParams(2, 8),  # per-pattern FKW loops
    "channel_blocked": ChannelBlockedParams(2, 8, 2),  # tap lists over blocks of 2 input channels
    "shifted": ShiftedParams(4, 8, 1),  # dx-shifted accumulators on aligned rows
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_conv_family_c_is_pinned(family):
    w = pattern_weight(GEOM.cout, GEOM.cin)
    packed = pack_conv(w, torch.arange(GEOM.cout, dtype=torch.float32))
    _check(f"conv_{family}", render_layer(packed, GEOM, (FAMILIES[family],), "relu", True))


def test_block_family_c_is_pinned():
    packed = pack_blocks(block_weight(16, 8), torch.ones(16))
    tiles, own = render_block_layer(packed, (BlockParams(2, 8),), "relu6", False)
    _check("block_unaligned_tiles", tiles)  # shared by every layer of this block size, alignment and epilogue
    _check("block_unaligned", own)


class _Tiny(nn.Module):
    """Every native node kind in a few layers: stem, padded maxpool, depthwise, SE gate, 1x1, residual, head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        y = nn.functional.silu(self.dw(x))
        g = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        y = self.pw(y * g) + x
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("target", ["portable", "x86-avx512"])
def test_network_c_is_pinned(target):
    """The whole-network function (depthwise, pooling, SE, block-free 1x1, residual, linear) per vector width;
    rendering needs no compiler, so every target's C is checked on any machine."""
    torch.manual_seed(0)
    m = _Tiny().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
    gm = fuse(trace(m, torch.zeros(1, 3, 12, 12)))
    _check(f"network_{target}", emit_network(plan_network(gm, {}, get_target(target), 1, spin=True)))


class _Windows(nn.Module):
    """The window families: depthwise 5x5 stride 2 (masked border chunks, even-lane shuffles) and grouped 3x3."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 5, 2, 2, groups=4)
        self.gr = nn.Conv2d(4, 6, 3, 1, 1, groups=2)

    def forward(self, x):
        return self.gr(nn.functional.relu6(self.dw(x)))


def test_window_family_c_is_pinned():
    m = _Windows().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
    gm = fuse(trace(m, torch.zeros(1, 4, 21, 21)))
    _check("network_windows", emit_network(plan_network(gm, {}, get_target("x86-avx512"), 1, spin=True)))
