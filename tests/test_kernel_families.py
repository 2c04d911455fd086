"""The kernel-family registry: every family's candidates, on every target this machine runs, against torch's conv;
duplicates refused; each parameter set owned by exactly one family."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tessera.compiler.formats import pack_conv
from tessera.compiler.geometry import ConvGeometry
from tessera.compiler.kernel import LayerLibrary
from tessera.compiler.kernels import conv_candidates, family_of, get_family, list_families, register_family
from tessera.compiler.target import TARGETS, host_target
from tessera.sparsity import PatternLibrary, pattern_connectivity_mask

TARGETS_HERE = [host_target()] + [t for t in TARGETS.values() if t.runs_here() and
                                  t.vector_width != host_target().vector_width]
LAYERS = [  # (cin, cout, h, w, stride, pad): shapes where each family has candidates on some width
    (16, 16, 16, 16, 1, 1), (8, 12, 7, 7, 1, 1), (16, 16, 16, 16, 2, 1), (6, 10, 9, 13, 1, 1), (16, 8, 32, 32, 2, 1),
]


def test_registry_lists_and_refuses_duplicates():
    assert list_families() == ["pattern_loops", "channel_blocked", "shifted"]

    class Impostor:
        name = "shifted"

    with pytest.raises(ValueError, match="already registered"):
        register_family(Impostor())
    register_family(get_family("shifted"))  # the same family again (a second import) is not a duplicate


def test_registry_is_whole_whichever_module_imports_first():
    """A family module imported on its own (the tuner imports one) must not hide the others from the registry."""
    code = ("import tessera.compiler.tune, tessera.compiler.compile; from tessera.compiler.kernels import "
            "list_families, conv_candidates; print(list_families(), len(conv_candidates(16, 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("]")[0] + "]" == "['pattern_loops', 'channel_blocked', 'shifted']" and out.split()[-1] == "2"


@pytest.mark.parametrize("target", TARGETS_HERE, ids=[t.name + ("-host" if t.native else "") for t in TARGETS_HERE])
@pytest.mark.parametrize("family", ["pattern_loops", "channel_blocked", "shifted"])
def test_every_family_on_every_target_matches_torch(family, target):
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
