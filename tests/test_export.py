"""Exported C libraries: built three ways (host native, portable without OpenMP, aarch64 under qemu) from the same
files, each giving torch's answer on the same input file; the library's own contract (errors, alignment, the
workspace set up on first use, no half-written directory)."""

import json
import shutil
import subprocess

import pytest
import torch

import tessera.runtime
from tessera.compiler.export import build_export, cross_tools, run_export
from tessera.compiler.target import get_target, host_target
from tessera.errors import CompileError
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.pruning.presets import deployment_targets, prune_for_deployment
from tessera.pruning.sparsifier import Sparsifier


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _pruned(name, args, stem, size):
    torch.manual_seed(0)
    m = randomize_bn_stats(create_model(name, **args))
    if name == "vgg6":  # no 1x1 convs: patterns on the 3x3s, blocks on the classifier
        t = deployment_targets()
        s = Sparsifier(targets=[t[0], t[2]])
        s.prepare(m)
        s.step()
        m = s.squash_mask().eval()
    else:
        m = prune_for_deployment(m, stem)
    cm = tessera.runtime.compile(m, torch.randn(1, 3, size, size), threads=2, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    return m, cm


MODELS = [
    ("resnet20", {}, None, 32), ("vgg6", {"in_channels": 3}, None, 32), ("mobilenetv2", {}, None, 32),
    ("tv_resnet18", {"width": 16, "num_classes": 10}, "conv1", 48),
    ("tv_resnet50", {"width": 8, "num_classes": 10}, "conv1", 48),
    ("tv_mobilenet_v2", {"width": 0.35, "num_classes": 10}, r"features\.0\.0", 48),
    ("timm_efficientnet_b0", {"width": 0.25, "depth": 0.34, "num_classes": 10}, "conv_stem", 48),
]


def _tools_or_skip(target):
    try:
        return cross_tools(target)
    except CompileError as exc:
        print(f"skipped: {exc}")  # the reason, printed (pytest -rs shows it too)
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=MODELS, ids=[m[0] for m in MODELS])
def model(request):
    return _pruned(*request.param)


@pytest.mark.parametrize("way", ["host", "portable", "aarch64-neon"])
def test_export_matches_torch(model, way, tmp_path):
    m, cm = model
    target = host_target() if way == "host" else get_target(way)
    _tools_or_skip(target)
    info = cm.export(tmp_path / "lib", target=target)
    assert info.target == target
    cmd = build_export(info.directory, target, opt="-O2", openmp=way != "portable")
    x = torch.randn(3, *info.input_shape)  # a batch of three from one file
    y, _ = run_export(cmd, x, info.output_shape)
    with torch.no_grad():
        assert rel_err(y, m(x)) <= 1e-5
    manifest = json.loads((info.directory / "manifest.json").read_text())
    assert manifest["target"] == target.name and manifest["parameters"] == info.parameters


def test_block_sparse_mobilenet_exports_its_block_kernel(tmp_path):
    """The 1x1 convs of a block-pruned MobileNetV2 reach the export as the block kernel, not dense loops."""
    m, cm = _pruned("tv_mobilenet_v2", {"width": 0.35, "num_classes": 10}, r"features\.0\.0", 48)
    assert sum(p.kind == "block" for p in cm.plans) >= 10
    info = cm.export(tmp_path / "lib", target="portable")
    src = (info.directory / "model.c").read_text()
    planar = src.count("const int32_t *restrict cols, const int32_t *restrict rp")  # the block kernel's calls
    assert planar >= 5, planar
    assert info.parameters.startswith("family defaults for 4-float vectors")


def test_export_keeps_host_tuning_on_the_same_width(tmp_path):
    _, cm = _pruned("resnet20", {}, None, 32)
    info = cm.export(tmp_path / "lib")
    assert info.parameters == "host tuning" and info.target == cm.target


def test_cmake_build_and_library_contract(tmp_path):
    """CMake builds the same files out of tree; tessera_run checks its arguments and alignment, sets up a dirty
    workspace on first use, and runs again in the same workspace."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    m, cm = _pruned("resnet20", {}, None, 32)
    info = cm.export(tmp_path / "lib", target="portable")
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(info.directory), "-B", str(build), "-DTESSERA_OPENMP=OFF"],
                ["cmake", "--build", str(build), "-j2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-800:] + proc.stderr[-800:]
    x = torch.randn(2, *info.input_shape)
    y, ms = run_export([str(build / "tessera_main")], x, info.output_shape, repeats=3)
    with torch.no_grad():
        assert rel_err(y, m(x)) <= 1e-5
    assert ms is not None and ms > 0
    (tmp_path / "check.c").write_text(CONTRACT_C)
    lib = build / "libtessera_model.a"
    exe = tmp_path / "check"
    proc = subprocess.run(["cc", "-O1", f"-I{info.directory}", str(tmp_path / "check.c"), str(lib), "-lm", "-o",
                           str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["null", "1", "misaligned", "2", "dirty", "0", "again", "0", "same", "1"]


CONTRACT_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
int main(void) {
    float *in = calloc(TESSERA_INPUT_FLOATS, sizeof(float)), a[TESSERA_OUTPUT_FLOATS], b[TESSERA_OUTPUT_FLOATS];
    float ref[TESSERA_OUTPUT_FLOATS];
    unsigned char *ws = aligned_alloc(64, TESSERA_WORKSPACE_BYTES + 64);
    unsigned char *clean = aligned_alloc(64, TESSERA_WORKSPACE_BYTES);
    for (int i = 0; i < TESSERA_INPUT_FLOATS; i++) in[i] = (float)(i % 7) - 3.f;
    memset(clean, 0, TESSERA_WORKSPACE_BYTES);
    tessera_run(in, ref, clean);
    memset(ws, 0xFF, TESSERA_WORKSPACE_BYTES + 64);  /* NaNs: the workspace must be set up on first use */
    printf("null %d\n", tessera_run(NULL, a, ws));
    printf("misaligned %d\n", tessera_run(in, a, ws + 4));
    printf("dirty %d\n", tessera_run(in, a, ws));
    printf("again %d\n", tessera_run(in, b, ws));
    printf("same %d\n", memcmp(a, ref, sizeof a) == 0 && memcmp(b, ref, sizeof b) == 0);
    return 0;
}
"""


def test_export_refuses_and_leaves_nothing(tmp_path):
    _, cm = _pruned("resnet20", {}, None, 32)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CompileError, match="not an earlier tessera export"):
        cm.export(busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    first = cm.export(tmp_path / "lib", target="portable")
    again = cm.export(tmp_path / "lib", target="portable")  # an earlier export is replaced
    assert again.directory == first.directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "lib"]  # no temporary directory left
    with pytest.raises(CompileError, match="unknown target"):
        cm.export(tmp_path / "x", target="riscv")


def test_export_needs_the_whole_network(tmp_path):
    m = create_model("vgg_tiny", width=4).eval()
    cm = tessera.runtime.compile(m, torch.randn(1, 1, 8, 8), tune=False, network=False)
    with pytest.raises(CompileError, match="whole network in one native function"):
        cm.export(tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("way", ["portable", "aarch64-neon"])
def test_export_of_a_pointwise_inside_its_depthwise_matches_torch(monkeypatch, way, tmp_path):
    """The fused 1x1 + depthwise step (planes on each thread's stack) in an export: with its size rule lifted, every
    MobileNetV2 expansion runs fused, built without OpenMP and for aarch64 under qemu."""
    import tessera.compiler.network_plan as network_plan

    monkeypatch.setattr(network_plan, "FUSE_BYTES", 0)
    m, cm = _pruned("tv_mobilenet_v2", {"width": 0.35, "num_classes": 10}, r"features\.0\.0", 48)
    target = get_target(way)
    _tools_or_skip(target)
    info = cm.export(tmp_path / "lib", target=target)
    assert "float P_[" in (info.directory / "model.c").read_text()  # the threads' planes: the fused step is there
    cmd = build_export(info.directory, target, opt="-O2", openmp=way != "portable")
    x = torch.randn(3, *info.input_shape)
    y, _ = run_export(cmd, x, info.output_shape)
    with torch.no_grad():
        assert rel_err(y, m(x)) <= 1e-5
