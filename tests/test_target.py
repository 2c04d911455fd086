"""Targets: detected for the host, named by the user, forced on any machine that runs them, and part of every
cache key."""

import pytest
import torch

import tessera
from tessera.compiler.target import TARGETS, _cpu_flags, _machine, get_target, host_target, runnable_target
from tessera.compiler.toolchain import cache_key, find_compiler, flags
from tessera.errors import CompileError
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.pruning.presets import prune_for_deployment


def test_host_target_follows_the_cpu():
    t = host_target()
    cpu = _cpu_flags()
    if _machine() == "x86_64":
        assert t.vector_width == (16 if "avx512f" in cpu else 8 if {"avx2", "fma"} <= cpu else 4)
    assert t.native and t.runs_here()
    assert get_target("host") == t and get_target(None) == t


def test_named_targets_and_errors(monkeypatch):
    assert get_target("aarch64-neon").vector_width == 4
    assert "-march=haswell" in get_target("x86-avx2").cflags  # not -march=native: no AVX-512 encodings
    monkeypatch.setenv("TESSERA_TARGET", "portable")
    assert get_target() == TARGETS["portable"]
    with pytest.raises(CompileError, match="unknown target 'sparc'; use one of: host, aarch64-neon"):
        get_target("sparc")
    if _machine() != "aarch64":
        with pytest.raises(CompileError, match="tessera export --target aarch64-neon"):
            runnable_target("aarch64-neon")


def test_targets_key_the_cache():
    cc = find_compiler() or "cc"
    keys = {cache_key("int f(void) { return 1; }", cc, t) for t in (*TARGETS.values(), host_target())}
    assert len(keys) == len(TARGETS) + 1
    assert "-fopenmp" in flags(cc, TARGETS["portable"])


def _small_resnet():
    torch.manual_seed(0)
    return prune_for_deployment(randomize_bn_stats(create_model("tv_resnet18", width=8, num_classes=10)), "conv1")


FORCED = ["portable"] + (["x86-avx2"] if _machine() == "x86_64" and {"avx2", "fma"} <= _cpu_flags() else [])


@pytest.mark.parametrize("name", FORCED)
def test_forced_target_runs_and_matches_torch(name):
    """A target other than the host's, built and run in this process: the whole network and the per-layer
    kernels on its vector width."""
    m = _small_resnet()
    x = torch.randn(2, 3, 40, 40)
    for network in (True, False):
        cm = tessera.compile(m, x[:1], threads=2, tune=False, network=network, target=name)
        assert cm.target == TARGETS[name]
        with torch.no_grad():
            ref = m(x)
            assert float((cm(x) - ref).norm() / ref.norm()) <= 1e-5
    vbytes = 4 * TARGETS[name].vector_width
    src = tessera.compile(m, x[:1], threads=1, tune=False, network=True, target=name).network.source
    assert f"vector_size({vbytes})" in src and f"vector_size({2 * vbytes})" not in src


def test_artifact_remembers_its_target(tmp_path):
    m = _small_resnet()
    x = torch.randn(1, 3, 32, 32)
    cm = tessera.compile(m, x, threads=1, tune=False, network=True, target="portable")
    m.tessera_external = None
    cm.save(tmp_path / "a.tsr")
    back = tessera.load(tmp_path / "a.tsr", model=_small_resnet())
    assert back.target == TARGETS["portable"]
