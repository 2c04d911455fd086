"""ONNX files (any framework's model) into tessera: the importer's module gives the source model's answer, compiles
into one native function with its sparsity found again from the zeros, and unsupported files fail in one line."""

import pytest
import torch

import tessera
from tessera.cli import main
from tessera.errors import ConfigError
from tessera.models import create_model
from tessera.models.batchnorm import randomize_bn_stats
from tessera.onnx_export import export_onnx
from tessera.pruning.presets import prune_for_deployment

onnx = pytest.importorskip("onnx")
from tessera.models.onnx_import import load_onnx  # noqa: E402

ARCHS = [("resnet20", {}, None, 32), ("tv_mobilenet_v2", {"width": 0.35, "num_classes": 10}, r"features\.0\.0", 48),
         ("timm_efficientnet_b0", {"width": 0.25, "depth": 0.34, "num_classes": 10}, "conv_stem", 48),
         ("tv_resnet18", {"width": 16, "num_classes": 10}, "conv1", 48)]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name, args, stem, size", ARCHS, ids=[a[0] for a in ARCHS])
def test_imported_model_matches_and_compiles_whole(tmp_path, name, args, stem, size):
    torch.manual_seed(0)
    m = prune_for_deployment(randomize_bn_stats(create_model(name, **args)), stem)
    export_onnx(m, torch.randn(1, 3, size, size), tmp_path / "m.onnx")
    gm, shape = load_onnx(tmp_path / "m.onnx")
    assert shape == (1, 3, size, size)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = m(x)
        assert rel_err(gm(x), ref) <= 1e-5
    cm = tessera.compile(gm, x[:1], threads=1, tune=False, network=True)
    assert cm.network is not None, cm.network_reason
    assert sum(p.kind in ("pattern_connectivity", "block") for p in cm.plans) >= 10  # sparsity read from zeros
    with torch.no_grad():
        assert rel_err(cm(x), ref) <= 1e-5


def test_unsupported_and_broken_files(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["x"], ["y"], name="soft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(tmp_path / "soft.onnx"))
    with pytest.raises(ConfigError, match="node soft is a Softmax"):
        load_onnx(tmp_path / "soft.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01not a protobuf" * 10)
    with pytest.raises(ConfigError, match="not a readable ONNX file"):
        load_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_compile_cli_takes_onnx_and_the_artifact_reloads(tmp_path, capsys):
    torch.manual_seed(0)
    m = prune_for_deployment(randomize_bn_stats(create_model("resnet20")))
    export_onnx(m, torch.randn(1, 3, 32, 32), tmp_path / "r.onnx")
    art = tmp_path / "r.tsr"
    assert main(["compile", str(tmp_path / "r.onnx"), "--output", str(art), "--threads", "1", "--quiet"]) == 0
    assert "pattern_connectivity" in capsys.readouterr().out
    cm = tessera.load(art)  # rebuilt from the ONNX file the artifact names
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(cm(x), m(x)) <= 1e-5
