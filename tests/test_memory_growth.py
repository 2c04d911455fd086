"""No runtime path grows the process over 10,000 inferences: the whole-network function, layer by layer, native
segments around a torch island, the block kernels, and the exported C library through ctypes."""

import ctypes
import os
import subprocess

import pytest
import torch
from torch import nn

import tessera
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.pruning.presets import prune_for_deployment

CALLS = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(fn) -> int:
    for _ in range(500):  # allocator pools, caches and thread stacks settle first
        fn()
    before = rss_bytes()
    for _ in range(CALLS):
        fn()
    return rss_bytes() - before


class _Flip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.b(torch.flip(torch.relu(self.a(x)), dims=[3]))


def _small(name, **args):
    torch.manual_seed(0)
    return prune_for_deployment(randomize_bn_stats(create_model(name, **args))).eval()


@pytest.mark.parametrize("path", ["whole network", "layer by layer", "segments", "block kernels"])
def test_no_growth_in_process(path):
    if path == "segments":
        m, shape, kw = _Flip().eval(), (1, 3, 16, 16), {"network": True}
    elif path == "block kernels":
        m, shape, kw = _small("tv_mobilenet_v2", width=0.35, num_classes=10), (1, 3, 32, 32), {"network": False}
    else:
        m, shape, kw = _small("resnet20", width=8), (1, 3, 16, 16), {"network": path == "whole network"}
    x = torch.randn(shape)
    cm = tessera.compile(m, x, threads=1, tune=False, **kw)
    if path == "segments":
        assert cm.network is None and cm.torch_nodes()
    with torch.no_grad():
        grew = growth(lambda: cm(x))
    assert grew < 2 << 20, f"{path}: RSS grew {grew / 2**20:.1f} MB over {CALLS} calls"


def test_no_growth_in_the_exported_library(tmp_path):
    m = _small("resnet20", width=8)
    x = torch.randn(1, 3, 16, 16)
    cm = tessera.compile(m, x, threads=1, tune=False, network=True)
    info = cm.export(tmp_path / "lib", target="portable", threads=1)
    subprocess.run(["make", "-s", "-C", str(info.directory), "shared", "OPENMP=0"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(info.directory / "libtessera_model.so"))
    ws = torch.empty(info.workspace_bytes // 4 + 16)
    y = torch.empty(10)
    args = [ctypes.c_void_p(t.data_ptr()) for t in (x, y, ws)]
    assert lib.tessera_run(*args) == 0
    grew = growth(lambda: lib.tessera_run(*args))
    assert grew < 1 << 20, f"export: RSS grew {grew / 2**20:.1f} MB over {CALLS} calls"
    with torch.no_grad():
        assert float((y - m(x).reshape(-1)).norm() / m(x).norm()) <= 1e-5
